"""BitFit (Ben Zaken et al., 2022): train only bias terms (LayerNorm biases too) and the task head."""
from dora_bench.methods.base import MethodHandle, count_trainable, is_head_parameter


def apply(model, cfg, total_steps: int) -> MethodHandle:
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(name.endswith(".bias") or is_head_parameter(name))
    return MethodHandle(model=model, paper_trainable_params=lambda: count_trainable(model, include_head=False))
