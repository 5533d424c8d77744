"""The one small interface every fine-tuning method implements.

A method module exposes ``apply(model, cfg, total_steps) -> MethodHandle``. The engine only ever
talks to the handle: it never knows which method runs.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn

from dora_bench.heads import HEADS, head

# PEFT task types per task head (PEFT then keeps the head trainable via modules_to_save): dora_bench/heads.py.
PEFT_TASK_TYPES = {name: entry.peft_task_type for name, entry in HEADS.items()}


def is_head_parameter(name: str, task_head: str) -> bool:
    """Whether a parameter belongs to the task head (dora_bench/heads.py), which trains fully in every method."""
    return head(task_head).is_head_parameter(name)


def head_modules(model: nn.Module, task_head: str) -> list[str] | None:
    """The head modules present, by the names PEFT's modules_to_save matches (None: the model has none)."""
    wanted = head(task_head).head_modules
    names = {part for name, _ in model.named_parameters() for part in name.split(".") if part in wanted}
    return sorted(names) or None


def count_trainable(model: nn.Module, task_head: str, include_head: bool = True) -> int:
    return sum(
        p.numel()
        for n, p in model.named_parameters()
        if p.requires_grad and (include_head or not is_head_parameter(n, task_head))
    )


@dataclass
class MethodHandle:
    """What the engine needs from a method once it has been applied to a model."""

    model: nn.Module
    # Paper-convention count (task head excluded); callable because pruning methods change it.
    paper_trainable_params: Callable[[], int]
    extra_loss: Callable[[], torch.Tensor | None] = lambda: None
    after_optimizer_step: Callable[[int], None] = lambda step: None
    state_dict: Callable[[], dict[str, Any]] = dict
    load_state_dict: Callable[[dict[str, Any]], None] = lambda state: None
    summary: Callable[[], dict[str, Any]] = dict
    # What the method is doing now (budget, kept components, ...), added to every training log entry
    # and so seen by every tracker; called at logging steps only.
    signals: Callable[[], dict[str, float]] = dict
    # Optimizer step after which the architecture is final (pruning methods); epochs evaluated
    # before it are not eligible for the reported score.
    final_structure_step: int = 0
    export: Callable[[str], None] | None = None
    # False: an evaluation-only reference (method=none): the engine evaluates once and trains nothing.
    trains: bool = True
    extra: dict[str, Any] = field(default_factory=dict)
    task_head: str = ""  # set by methods.apply_method from task.head

    def trainable_params(self, include_head: bool = True) -> int:
        return count_trainable(self.model, self.task_head, include_head)
