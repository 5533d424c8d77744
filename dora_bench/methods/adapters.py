"""Bottleneck adapters through AdapterHub (`adapters`): Houlsby (double_seq_bn) and Pfeiffer (seq_bn)."""
from __future__ import annotations

from importlib import metadata

import adapters
from adapters import DoubleSeqBnConfig, SeqBnConfig
from adapters.models import MODEL_MIXIN_MAPPING

from dora_bench.errors import UserError
from dora_bench.methods.base import MethodHandle, count_trainable, is_head_parameter

ADAPTER_CONFIGS = {"double_seq_bn": DoubleSeqBnConfig, "seq_bn": SeqBnConfig}
ADAPTER_NAME = "bench"


def supported(model) -> bool:
    """Whether AdapterHub has this architecture (its base model class has an adapter mixin). `adapters.init` also
    patches some architectures it does not list (Qwen2 in 1.3), with no guarantee where its layers sit: refused."""
    return type(model.base_model).__name__ in MODEL_MIXIN_MAPPING


def check(model, cfg) -> None:
    if not supported(model):
        families = sorted({name.removesuffix("Model") for name in MODEL_MIXIN_MAPPING if name.endswith("Model")})
        raise UserError(f"method={cfg.method.name} uses AdapterHub (adapters {metadata.version('adapters')}), which "
                        f"does not support model={cfg.model.name} ({type(model.base_model).__name__}); allowed: its "
                        f"supported families ({', '.join(families)}), or another method (lora, adalora, dora, full_ft)")


def apply(model, cfg, total_steps: int) -> MethodHandle:
    check(model, cfg)
    m, head = cfg.method, cfg.task.head
    hidden = model.config.hidden_size if hasattr(model.config, "hidden_size") else model.config.d_model
    # AdapterHub sizes the bottleneck as hidden / reduction_factor; the budget fixes the bottleneck.
    config = ADAPTER_CONFIGS[m.adapter_config](reduction_factor=hidden / m.bottleneck)
    adapters.init(model)
    model.add_adapter(ADAPTER_NAME, config=config, set_active=True)
    model.train_adapter(ADAPTER_NAME)  # freezes everything but the adapter...
    for name, parameter in model.named_parameters():
        if is_head_parameter(name, head):
            parameter.requires_grad_(True)  # ...so the task head is unfrozen again
    return MethodHandle(
        model=model,
        paper_trainable_params=lambda: count_trainable(model, head, include_head=False),
        export=lambda out_dir: model.save_adapter(out_dir, ADAPTER_NAME, use_safetensors=True),
    )
