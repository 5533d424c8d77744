"""Fine-tuning methods: one module per method, each with ``apply(model, cfg, total_steps) -> MethodHandle``.

The method config names its module (``method.impl``), so adding a method adds files, not branches.
"""
from __future__ import annotations

import importlib

import torch

from dora_bench.errors import UserError
from dora_bench.methods.base import MethodHandle

FP32_ADAPTER_METHODS = "lora, adalora, dora"  # their own weights stay fp32 on a bf16 base (PEFT's autocast_adapter_dtype)


def _module(cfg):
    impl = cfg.method.impl
    try:
        return importlib.import_module(f"dora_bench.methods.{impl}")
    except ModuleNotFoundError as err:
        if err.name != f"dora_bench.methods.{impl}":
            raise
        raise UserError(f"method.impl={impl!r} has no module dora_bench.methods.{impl}") from None


def check_method(model, cfg) -> None:
    """Refuse a method that cannot apply to this model (BitFit without biases, AdapterHub without the architecture)
    as soon as the model is loaded, before any data is tokenised; a method module may define `check(model, cfg)`."""
    check = getattr(_module(cfg), "check", None)
    if check is not None:
        check(model, cfg)


def apply_method(model, cfg, total_steps: int) -> MethodHandle:
    module = _module(cfg)
    handle = module.apply(model, cfg, total_steps)
    handle.task_head = cfg.task.head
    refuse_half_precision_training(handle, cfg)
    return handle


def refuse_half_precision_training(handle: MethodHandle, cfg) -> None:
    """AdamW on bf16/fp16 weights without fp32 master copies loses most small updates: a method that would train
    half-precision weights is refused, never run (the schema already refuses Full FT, BitFit and AdapterHub with
    model.dtype=bf16; this catches any other method whose weights come out in the base's precision)."""
    half = {}
    for name, parameter in handle.model.named_parameters():
        if parameter.requires_grad and parameter.dtype != torch.float32:
            half.setdefault(str(parameter.dtype).removeprefix("torch."), []).append(name)
    if half:
        dtype, names = next(iter(half.items()))
        raise UserError(f"method={cfg.method.name} would train {sum(map(len, half.values()))} {dtype} tensors "
                        f"(e.g. {names[0]}) without fp32 master weights, because model.dtype={cfg.model.dtype} loads "
                        f"the base weights in {dtype}; allowed: model.dtype=fp32 for this method (trainer.precision=bf16 "
                        f"still computes in bf16), or a method whose own weights stay fp32: {FP32_ADAPTER_METHODS}")
