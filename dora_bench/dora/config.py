"""Hyper-parameters of Dynamic Low-Rank Adaptation (DoRA, dynamic rank)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

SCHEDULES = ("paper", "authors_code")
# Dtype of A, B, c: fp32 whatever the base weights are (PEFT's autocast_adapter_dtype), or the base's own.
ADAPTER_DTYPES = ("fp32", "base")


def _fail(field: str, value: object, allowed: str) -> None:
    raise ValueError(f"DoraConfig.{field}={value!r} {allowed}")


@dataclass
class DoraConfig:
    """What DoRA adapts and how it prunes.

    ``target_modules``: a regex matched with ``re.fullmatch`` against module names, or a list of
    exact names / dotted name suffixes (as in PEFT). Budgets are average kept components per
    matrix: ``final_budget`` is b(T), ``initial_budget`` is b(0) = r' (default ceil(1.5·b(T))).
    ``t_init`` / ``t_final`` are fractions of the total optimizer steps; ``prune_interval`` is Δ
    in steps; ``reg_coefficient`` is η of the DEM loss (0 disables it). ``adapter_dtype``: A, B, c in
    fp32 (default, also on a bf16/fp16 base) or in the dtype of the base weight they adapt.
    """

    target_modules: str | Sequence[str]
    final_budget: float
    initial_budget: int | None = None
    lora_alpha: float = 8
    lora_dropout: float = 0.1
    beta: float = 0.9
    t_init: float = 0.15
    t_final: float = 0.5
    prune_interval: int = 10
    reg_coefficient: float = 0.1
    schedule: str = "paper"
    adapter_dtype: str = "fp32"

    def __post_init__(self) -> None:
        if not self.target_modules:
            _fail("target_modules", self.target_modules, "must be a regex or a non-empty list of names")
        if self.final_budget < 1:
            _fail("final_budget", self.final_budget, "must be >= 1 (kept components per matrix)")
        if self.initial_budget is None:
            self.initial_budget = math.ceil(1.5 * self.final_budget)
        if self.initial_budget != int(self.initial_budget) or self.initial_budget < 1:
            _fail("initial_budget", self.initial_budget, "must be an integer >= 1 (it is the rank r')")
        self.initial_budget = int(self.initial_budget)
        if self.initial_budget < self.final_budget:
            _fail("initial_budget", self.initial_budget, f"must be >= final_budget={self.final_budget!r}")
        if self.lora_alpha <= 0:
            _fail("lora_alpha", self.lora_alpha, "must be > 0")
        for name in ("lora_dropout", "beta", "t_init", "t_final"):
            value = getattr(self, name)
            if not 0 <= value < 1:
                _fail(name, value, "must lie in [0, 1)")
        if self.t_init + self.t_final >= 1:
            _fail("t_init + t_final", self.t_init + self.t_final,
                  f"(t_init={self.t_init!r}, t_final={self.t_final!r}) must be < 1 to leave a pruning phase")
        if self.prune_interval != int(self.prune_interval) or self.prune_interval <= 0:
            _fail("prune_interval", self.prune_interval, "must be a positive integer number of steps")
        self.prune_interval = int(self.prune_interval)
        if self.reg_coefficient < 0:
            _fail("reg_coefficient", self.reg_coefficient, "must be >= 0 (0 disables DEM)")
        if self.schedule not in SCHEDULES:
            _fail("schedule", self.schedule, f"must be one of {SCHEDULES}")
        if self.adapter_dtype not in ADAPTER_DTYPES:
            _fail("adapter_dtype", self.adapter_dtype, f"must be one of {ADAPTER_DTYPES}")
