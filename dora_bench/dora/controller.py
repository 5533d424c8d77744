"""Injection of DoRA layers and the global, budget-driven pruning of their components."""
from __future__ import annotations

import copy
import re
from collections import OrderedDict
from typing import Any

import torch
from torch import nn

from .config import DoraConfig
from .importance import ema_update_, importance_scores
from .layer import DynamicRankLinear, is_adaptable
from .regularizer import dem_penalty, group_by_shape
from .schedule import make_schedule


def _is_target(name: str, target_modules: str | list[str]) -> bool:
    if isinstance(target_modules, str):
        return re.fullmatch(target_modules, name) is not None
    return any(name == target or name.endswith("." + target) for target in target_modules)


def _embedding_modules(model: nn.Module) -> dict[str, str]:
    """Modules DoRA never adapts, by name, with the reason: the token embeddings and the output (vocabulary)
    projection, ``lm_head``, which on decoders is tied to the embeddings and is not a head that trains."""
    embeddings = {id(m) for m in model.modules() if isinstance(m, nn.Embedding)}
    embedding_weights = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    for getter in ("get_input_embeddings", "get_output_embeddings"):
        try:
            module = getattr(model, getter)()
        except (AttributeError, NotImplementedError):
            continue
        if isinstance(module, nn.Module):
            embeddings.add(id(module))
    found = {}
    for name, module in model.named_modules():
        if id(module) in embeddings:
            found[name] = "the model's input or output embeddings"
        elif id(getattr(module, "weight", None)) in embedding_weights:
            found[name] = "its weight is tied to the token embeddings"
    return found


def find_targets(model: nn.Module, target_modules: str | list[str]) -> list[str]:
    """Names of the ``nn.Linear`` / ``Conv1D`` modules DoRA adapts; refuses a pattern matching embeddings."""
    never = {name: why for name, why in _embedding_modules(model).items() if _is_target(name, target_modules)}
    if never:
        listed = ", ".join(f"{name} ({why})" for name, why in never.items())
        raise ValueError(f"DoraConfig.target_modules={target_modules!r} matches {listed}: DoRA never adapts "
                         "embeddings or lm_head; narrow the pattern to attention and MLP projections")
    adaptable = [name for name, module in model.named_modules() if is_adaptable(module)]
    targets = [name for name in adaptable if _is_target(name, target_modules)]
    if not targets:
        raise ValueError(
            f"DoraConfig.target_modules={target_modules!r} matched no nn.Linear or Conv1D module; "
            f"their names look like {adaptable[:5]}"
        )
    return targets


def apply_dora(model: nn.Module, config: DoraConfig, total_steps: int) -> "DoraController":
    """Freeze ``model`` and replace its targeted ``nn.Linear`` / ``Conv1D`` modules by ``DynamicRankLinear``.

    Every parameter that exists before injection is frozen; only A, B, c train (in fp32 unless
    ``config.adapter_dtype`` is "base"). Callers that train a task head (e.g. ``classifier``) re-enable its
    ``requires_grad`` afterwards. ``total_steps`` is T, the number of optimizer steps. Seed before calling:
    A and B are initialised here.

    Gradient checkpointing: the frozen embeddings' output does not require grad, so reentrant checkpointing
    (transformers' default) gives A, B, c no gradient (peft issue 1142). Enable it with
    ``model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})``
    (through the Trainer: ``gradient_checkpointing=True, gradient_checkpointing_kwargs={"use_reentrant": False}``),
    or call ``model.enable_input_require_grads()`` before reentrant checkpointing.
    """
    if int(total_steps) != total_steps or total_steps < 1:
        raise ValueError(f"total_steps={total_steps!r} must be a positive integer number of optimizer steps")
    targets = find_targets(model, config.target_modules)
    dtype = torch.float32 if config.adapter_dtype == "fp32" else None
    model.requires_grad_(False)
    layers: OrderedDict[str, DynamicRankLinear] = OrderedDict()
    for name in targets:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        layer = DynamicRankLinear(getattr(parent, child), config.initial_budget, config.lora_alpha,
                                  config.lora_dropout, dtype=dtype)
        setattr(parent, child, layer)
        layers[name] = layer
    return DoraController(layers, config, int(total_steps))


class DoraController:
    """Owns the smoothed scores and masks of all adapted matrices and prunes them globally.

    Call ``regularization()`` when building the loss of the next optimizer step and
    ``step(t)`` after optimizer step t (t = 1..T). The controller state (scores, masks, step,
    history) lives in ``state_dict()``; A, B and c live in the model's state dict.
    """

    def __init__(self, layers: OrderedDict[str, DynamicRankLinear], config: DoraConfig, total_steps: int):
        self.layers = layers
        self.config = config
        self.total_steps = total_steps
        self.schedule = make_schedule(config, total_steps)
        self.history: list[dict[str, Any]] = []
        self._step = 0
        shape = (len(layers), config.initial_budget)
        device = self._device()
        self._scores = torch.zeros(shape, device=device)
        self._mask = torch.ones(shape, dtype=torch.bool, device=device)
        self._final_mask: torch.Tensor | None = None
        position = {id(layer): i for i, layer in enumerate(layers.values())}
        self._groups = [
            (torch.tensor([position[id(layer)] for layer in group], device=device), group)
            for group in group_by_shape(layers.values())
        ]

    # ----- training hooks -------------------------------------------------------------------
    def regularization(self) -> torch.Tensor:
        """η·DEM for the loss of the coming step (last ``step`` + 1); 0 once DEM is off."""
        eta = self.config.reg_coefficient
        if eta == 0 or not self.schedule.dem_active(self._step + 1):
            return torch.zeros((), device=self._device())
        return eta * dem_penalty(self.layers.values())

    @torch.no_grad()
    def step(self, t: int) -> None:
        """Scores (Eq. 7–8), budget (Eq. 9) and pruning after optimizer step t."""
        self._follow_device()
        action = self.schedule.action(t)
        self._step = t
        if action.update_scores:
            ema_update_(self._scores, self._raw_scores(), self.config.beta)
        if action.apply_final_mask:
            if self._final_mask is None:
                raise RuntimeError(f"step({t}) is past final_step={self.final_step} but no final mask was stored; "
                                   "call step(t) after every optimizer step")
            self._write_mask(self._final_mask)
        if action.prune:
            self._prune(t, action.freeze)

    def _raw_scores(self) -> torch.Tensor:
        raw = torch.empty_like(self._scores)
        for index, group in self._groups:
            A = torch.stack([layer.A for layer in group]).float()
            B = torch.stack([layer.B for layer in group]).float()
            c = torch.stack([layer.c for layer in group]).float()
            raw[index] = importance_scores(A, B, c)
        return raw

    def _prune(self, t: int, freeze: bool) -> None:
        keep = self.schedule.keep_mask(t, self._scores)
        self._mask = keep
        if freeze:
            self._final_mask = keep
        self._write_mask(keep)
        self.history.append({"step": t, "budget": self.schedule.budget(t), "kept": int(keep.sum())})

    def _write_mask(self, keep: torch.Tensor) -> None:
        # Pruning is "set c_k to 0": A and B stay, so a pruned component may regrow until frozen.
        c = [layer.c for layer in self.layers.values()]
        torch._foreach_mul_(c, list(keep.to(c[0].dtype).unbind(0)))

    def _device(self) -> torch.device:
        return next(iter(self.layers.values())).c.device

    def _follow_device(self) -> None:
        """Move the controller state along when the model moved after ``apply_dora``."""
        device = self._device()
        if self._scores.device == device:
            return
        self._scores = self._scores.to(device)
        self._mask = self._mask.to(device)
        if self._final_mask is not None:
            self._final_mask = self._final_mask.to(device)
        self._groups = [(index.to(device), group) for index, group in self._groups]

    # ----- reporting ------------------------------------------------------------------------
    @property
    def final_step(self) -> int:
        """Optimizer step whose pruning event freezes the mask; later steps only re-apply it."""
        return self.schedule.final_step

    @property
    def current_step(self) -> int:
        return self._step

    def current_budget(self, t: float) -> float:
        return self.schedule.budget(t)

    @property
    def scores(self) -> dict[str, torch.Tensor]:
        return {name: self._scores[i].clone() for i, name in enumerate(self.layers)}

    def _kept(self) -> torch.Tensor:
        return self._final_mask if self._final_mask is not None else self._mask

    def rank_pattern(self) -> dict[str, int]:
        """Components kept by the latest pruning event (all r' before the first one)."""
        return dict(zip(self.layers, self._kept().sum(dim=1).tolist()))

    def trainable_parameter_count(self) -> int:
        """Paper convention: Σ over kept components of d_in + d_out (c not counted)."""
        return sum(kept * (layer.in_features + layer.out_features)
                   for kept, layer in zip(self.rank_pattern().values(), self.layers.values()))

    def initial_parameter_count(self) -> int:
        """Actual tensor sizes of A, B, c: Σ r'(d_in + d_out + 1)."""
        return sum(layer.A.numel() + layer.B.numel() + layer.c.numel() for layer in self.layers.values())

    # ----- checkpointing --------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "step": self._step,
            "scores": self._scores.clone(),
            "mask": self._mask.clone(),
            "final_mask": None if self._final_mask is None else self._final_mask.clone(),
            "history": copy.deepcopy(self.history),
            "layer_names": list(self.layers),
            "total_steps": self.total_steps,
            "schedule": self.config.schedule,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        expected = {"layer_names": list(self.layers), "total_steps": self.total_steps, "schedule": self.config.schedule}
        for key, value in expected.items():
            if state[key] != value:
                raise ValueError(f"DoRA controller state has {key}={state[key]!r}, this controller {value!r}")
        device = self._scores.device
        self._step = state["step"]
        self._scores = state["scores"].to(device=device, dtype=torch.float32, copy=True)  # updated in place
        self._mask = state["mask"].to(device)
        self._final_mask = None if state["final_mask"] is None else state["final_mask"].to(device)
        self.history = copy.deepcopy(state["history"])
