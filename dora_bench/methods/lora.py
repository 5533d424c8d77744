"""LoRA through PEFT on the model's adapted matrices (anchored regex); the task head trains fully."""
from peft import LoraConfig, get_peft_model

from dora_bench.methods.base import PEFT_TASK_TYPES, MethodHandle, count_trainable, head_modules


def apply(model, cfg, total_steps: int) -> MethodHandle:
    head = cfg.task.head
    config = LoraConfig(
        task_type=PEFT_TASK_TYPES[head], modules_to_save=head_modules(model, head),
        target_modules=cfg.model.adapted_modules,
        r=cfg.method.r,
        lora_alpha=cfg.method.lora_alpha,
        lora_dropout=cfg.method.lora_dropout,
    )
    # autocast_adapter_dtype (PEFT's default): the adapter weights are fp32 even on a bf16 base
    peft_model = get_peft_model(model, config, autocast_adapter_dtype=True)
    return MethodHandle(
        model=peft_model,
        paper_trainable_params=lambda: count_trainable(peft_model, head, include_head=False),
        export=peft_model.save_pretrained,
    )
