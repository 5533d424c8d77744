"""BitFit (Ben Zaken et al., 2022): train only bias terms (LayerNorm biases too) and the task head."""
from dora_bench.errors import UserError
from dora_bench.methods.base import MethodHandle, count_trainable, is_head_parameter


def check(model, cfg) -> None:
    """Llama-style models have no bias terms: BitFit would train the task head alone (or nothing), which is not BitFit."""
    head = cfg.task.head
    if not any(name.endswith(".bias") and not is_head_parameter(name, head) for name, _ in model.named_parameters()):
        raise UserError(f"method=bitfit trains bias terms, and model={cfg.model.name} "
                        f"({type(model.base_model).__name__}) has none outside its head; allowed: a model with biases "
                        "(e.g. the GPT-2, BERT, RoBERTa, BART and Qwen2 families) or another method")


def apply(model, cfg, total_steps: int) -> MethodHandle:
    check(model, cfg)
    head = cfg.task.head
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(name.endswith(".bias") or is_head_parameter(name, head))
    return MethodHandle(model=model, paper_trainable_params=lambda: count_trainable(model, head, include_head=False))
