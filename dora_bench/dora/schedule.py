"""When to prune and how many components to keep: the paper's cubic budget (Eq. 9) and the
event logic of the authors' released code.

Steps are optimizer steps t = 1..T; the controller consults a schedule after each of them.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

import torch

from .config import DoraConfig


def _exact_steps(fraction: float, total_steps: int) -> Fraction:
    """fraction·T in exact decimal arithmetic, so that 0.15·20 is 3 and not 3 ± 1 ulp."""
    return Fraction(str(fraction)) * total_steps


def budget_at(t: float, total_steps: int, initial: float, final: float, t_init: float, t_final: float) -> float:
    """Average kept components per matrix after step t; t_init, t_final are fractions of T."""
    t_i = _exact_steps(t_init, total_steps)
    end = total_steps - _exact_steps(t_final, total_steps)
    if t < t_i:
        return float(initial)
    if t >= end:
        return float(final)
    progress = float((Fraction(t) - t_i) / (end - t_i))
    # Eq. 9: b(T) + (b(0) − b(T))·(1 − (t − t_i)/(T − t_i − t_f))³.
    return final + (initial - final) * (1 - progress) ** 3


@dataclass(frozen=True)
class StepAction:
    """What the controller does after one optimizer step."""

    update_scores: bool
    prune: bool
    freeze: bool  # the mask of this pruning event becomes the final mask
    apply_final_mask: bool


class PaperSchedule:
    """Eq. 9 with integer steps: the middle phase holds the steps t with t_i ≤ t < T − t_f.

    Scores update after every step. Events fall on ceil(t_i) + kΔ inside the middle phase and on
    ``final_step`` = ceil(T − t_f), the first step of the final phase, which keeps int(M·b(T))
    components and freezes the mask; every later step re-applies it.
    """

    name = "paper"

    def __init__(self, config: DoraConfig, total_steps: int):
        self.config = config
        self.total_steps = total_steps
        self._end = total_steps - _exact_steps(config.t_final, total_steps)
        self.first_event = math.ceil(_exact_steps(config.t_init, total_steps))
        self.final_step = math.ceil(self._end)

    def budget(self, t: float) -> float:
        c = self.config
        return budget_at(t, self.total_steps, c.initial_budget, c.final_budget, c.t_init, c.t_final)

    def action(self, t: int) -> StepAction:
        periodic = self.first_event <= t < self.final_step and (t - self.first_event) % self.config.prune_interval == 0
        return StepAction(
            update_scores=True,
            prune=periodic or t == self.final_step,
            freeze=t == self.final_step,
            apply_final_mask=t > self.final_step,
        )

    def dem_active(self, t: int) -> bool:
        return t < self._end

    def keep_mask(self, t: int, scores: torch.Tensor) -> torch.Tensor:
        """Global top-int(M·b(t)) by smoothed score; ties go to the earlier module/component."""
        n_keep = int(scores.shape[0] * self.budget(t))
        order = torch.argsort(scores.flatten(), descending=True, stable=True)
        keep = torch.zeros(scores.numel(), dtype=torch.bool, device=scores.device)
        keep[order[:n_keep]] = True
        return keep.view_as(scores)


class AuthorsCodeSchedule:
    """Event logic of the released code, float arithmetic and truncation included.

    p = int(t − t_init·T), P = int((1 − t_init − t_final)·T). p > P: re-apply the final mask only.
    Otherwise update the scores; for p ≥ 0 with p % Δ == 0 or p == P prune the k = max(1, int(N·rate))
    lowest-scored of all N = M·r' components, ties at the threshold included; p == P freezes.
    """

    name = "authors_code"

    def __init__(self, config: DoraConfig, total_steps: int):
        self.config = config
        self.total_steps = total_steps
        self._offset = config.t_init * total_steps
        self.P = int((1 - config.t_init - config.t_final) * total_steps)
        if self.P < 1:
            raise ValueError(
                f"total_steps={total_steps} leaves no pruning phase for schedule='authors_code': "
                f"int((1 - t_init - t_final) * total_steps) must be >= 1"
            )
        self.final_step = self._last_step_before_final_phase()

    def phase(self, t: int) -> int:
        return int(t - self._offset)

    def _last_step_before_final_phase(self) -> int:
        t = max(1, math.floor(self.P + self._offset) - 2)
        while self.phase(t + 1) <= self.P:
            t += 1
        return t

    def _rate(self, p: int) -> float:
        r, b = self.config.initial_budget, self.config.final_budget
        return (r - b) / r * (p / self.P) ** 3

    def budget(self, t: float) -> float:
        p = min(max(self.phase(t), 0), self.P)
        return self.config.initial_budget * (1 - self._rate(p))

    def action(self, t: int) -> StepAction:
        p = self.phase(t)
        if p > self.P:
            return StepAction(update_scores=False, prune=False, freeze=False, apply_final_mask=True)
        prune = p >= 0 and (p % self.config.prune_interval == 0 or p == self.P)
        return StepAction(update_scores=True, prune=prune, freeze=prune and p == self.P, apply_final_mask=False)

    def dem_active(self, t: int) -> bool:
        return self.phase(t) <= self.P

    def keep_mask(self, t: int, scores: torch.Tensor) -> torch.Tensor:
        k = max(1, int(scores.numel() * self._rate(self.phase(t))))
        threshold = torch.kthvalue(scores.flatten(), k).values
        return scores > threshold


def make_schedule(config: DoraConfig, total_steps: int) -> PaperSchedule | AuthorsCodeSchedule:
    cls = PaperSchedule if config.schedule == "paper" else AuthorsCodeSchedule
    return cls(config, total_steps)
