"""Fine-tuning methods: one module per method, each with ``apply(model, cfg, total_steps) -> MethodHandle``.

The method config names its module (``method.impl``), so adding a method adds files, not branches.
"""
from __future__ import annotations

import importlib

from dora_bench.errors import UserError
from dora_bench.methods.base import MethodHandle


def apply_method(model, cfg, total_steps: int) -> MethodHandle:
    impl = cfg.method.impl
    try:
        module = importlib.import_module(f"dora_bench.methods.{impl}")
    except ModuleNotFoundError as err:
        if err.name != f"dora_bench.methods.{impl}":
            raise
        raise UserError(f"method.impl={impl!r} has no module dora_bench.methods.{impl}") from None
    return module.apply(model, cfg, total_steps)

