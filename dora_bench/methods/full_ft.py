"""Full fine-tuning: every parameter trains; the paper counts the whole model."""
from dora_bench.methods.base import MethodHandle, count_trainable


def apply(model, cfg, total_steps: int) -> MethodHandle:
    for parameter in model.parameters():
        parameter.requires_grad_(True)
    return MethodHandle(model=model,
                        paper_trainable_params=lambda: count_trainable(model, cfg.task.head, include_head=True))
