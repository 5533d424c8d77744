"""No fine-tuning: the base model evaluated once, as it is (a zero-shot reference row, e.g. an LLM on GSM8K).

Nothing trains; the engine skips training and writes a result whose one evaluation is at step 0.
"""
from dora_bench.methods.base import MethodHandle


def apply(model, cfg, total_steps: int) -> MethodHandle:
    model.requires_grad_(False)
    return MethodHandle(model=model, paper_trainable_params=lambda: 0, trains=False)
