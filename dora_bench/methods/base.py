"""The one small interface every fine-tuning method implements.

A method module exposes ``apply(model, cfg, total_steps) -> MethodHandle``. The engine only ever
talks to the handle: it never knows which method runs.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn

# Task heads train fully in every method and are excluded from the paper's parameter counts. BERT keeps
# the dense+tanh of its sentence head in the encoder as `pooler`; RoBERTa's (the paper's model) has it in
# `classifier`. Both are head, so a BERT model (MiniLM) is tuned under the paper's protocol.
HEAD_NAME_PATTERNS = ("classifier", "qa_outputs", "score", "pooler")
# PEFT task types per task head (PEFT then keeps the head trainable via modules_to_save).
PEFT_TASK_TYPES = {"seq_cls": "SEQ_CLS", "qa": "QUESTION_ANS", "seq2seq": "SEQ_2_SEQ_LM"}


def is_head_parameter(name: str) -> bool:
    return any(part in HEAD_NAME_PATTERNS for part in name.split("."))


def head_modules(model: nn.Module) -> list[str] | None:
    """The head modules present, by the names PEFT's modules_to_save matches (None: the model has none)."""
    names = {part for name, _ in model.named_parameters() for part in name.split(".") if part in HEAD_NAME_PATTERNS}
    return sorted(names) or None


def count_trainable(model: nn.Module, include_head: bool = True) -> int:
    return sum(
        p.numel()
        for n, p in model.named_parameters()
        if p.requires_grad and (include_head or not is_head_parameter(n))
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
    extra: dict[str, Any] = field(default_factory=dict)

    def trainable_params(self, include_head: bool = True) -> int:
        return count_trainable(self.model, include_head)
