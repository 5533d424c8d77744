"""Bottleneck adapters through AdapterHub (`adapters`): Houlsby (double_seq_bn) and Pfeiffer (seq_bn)."""
from __future__ import annotations

import adapters
from adapters import DoubleSeqBnConfig, SeqBnConfig

from dora_bench.methods.base import MethodHandle, count_trainable, is_head_parameter

ADAPTER_CONFIGS = {"double_seq_bn": DoubleSeqBnConfig, "seq_bn": SeqBnConfig}
ADAPTER_NAME = "bench"


def apply(model, cfg, total_steps: int) -> MethodHandle:
    m = cfg.method
    hidden = model.config.hidden_size if hasattr(model.config, "hidden_size") else model.config.d_model
    # AdapterHub sizes the bottleneck as hidden / reduction_factor; the budget fixes the bottleneck.
    config = ADAPTER_CONFIGS[m.adapter_config](reduction_factor=hidden / m.bottleneck)
    adapters.init(model)
    model.add_adapter(ADAPTER_NAME, config=config, set_active=True)
    model.train_adapter(ADAPTER_NAME)  # freezes everything but the adapter...
    for name, parameter in model.named_parameters():
        if is_head_parameter(name):
            parameter.requires_grad_(True)  # ...so the task head is unfrozen again
    return MethodHandle(
        model=model,
        paper_trainable_params=lambda: count_trainable(model, include_head=False),
        export=lambda out_dir: model.save_adapter(out_dir, ADAPTER_NAME, use_safetensors=True),
    )
