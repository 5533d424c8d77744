"""Dimensional Equilibrium Modulator (Eq. 10)."""
from __future__ import annotations

from collections import defaultdict
from typing import Iterable

import torch

from .layer import DynamicRankLinear


def group_by_shape(layers: Iterable[DynamicRankLinear]) -> list[list[DynamicRankLinear]]:
    """Layers with equal A/B shapes, so each group costs a handful of batched ops."""
    groups: dict[tuple, list[DynamicRankLinear]] = defaultdict(list)
    for layer in layers:
        groups[(tuple(layer.A.shape), tuple(layer.B.shape))].append(layer)
    return list(groups.values())


def dem_penalty(layers: Iterable[DynamicRankLinear]) -> torch.Tensor:
    """Mean unbiased variance of the rows of A and columns of B (pruned components included), in fp32."""
    layers = list(layers)
    rank = layers[0].rank
    if any(layer.rank != rank for layer in layers):
        raise ValueError("dem_penalty needs layers of one rank r'")
    total = sum(
        torch.stack([layer.A for layer in group]).float().var(dim=-1).sum()
        + torch.stack([layer.B for layer in group]).float().var(dim=-2).sum()
        for group in group_by_shape(layers)
    )
    # Eq. 10: [Σ_matrices Σ_k (Var(a_k) + Var(b_k))] / (2·M·r').
    return total / (2 * len(layers) * rank)
