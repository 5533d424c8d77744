"""Fine-tuning methods: one module per method, each with ``apply(model, cfg, total_steps) -> MethodHandle``.

The method config names its module (``method.impl``), so adding a method adds files, not branches.
"""
from __future__ import annotations

import importlib

from dora_bench.errors import UserError
from dora_bench.methods.base import MethodHandle


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
    return handle
