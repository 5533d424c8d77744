"""Component importance (Eq. 7) and its exponential moving average (Eq. 8)."""
from __future__ import annotations

import torch

EPS = 1e-8


def importance_scores(A: torch.Tensor, B: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """Share s_k = ‖ΔW_k‖_F / (‖ΔW‖_F + 1e-8) of each component, without materialising ΔW.

    Shapes ``A`` (..., r, d_in), ``B`` (..., d_out, r), ``c`` (..., r); leading dims batch matrices.
    """
    # Eq. 7: ‖c_k b_k a_kᵀ‖_F = |c_k|·‖a_k‖·‖b_k‖ and ‖B diag(c) A‖_F² = cᵀ((AAᵀ)⊙(BᵀB))c;
    # the squared norms ‖a_k‖²‖b_k‖² are the diagonal of that Hadamard product.
    gram = (A @ A.transpose(-1, -2)) * (B.transpose(-1, -2) @ B)
    component_norms = c.abs() * gram.diagonal(dim1=-2, dim2=-1).sqrt()
    total_sq = (gram @ c.unsqueeze(-1)).squeeze(-1).mul(c).sum(-1)
    # Rounding can push the quadratic form of a near-zero update slightly below 0.
    total_norm = total_sq.clamp_min(0).sqrt()
    return component_norms / (total_norm.unsqueeze(-1) + EPS)


def ema_update_(smoothed: torch.Tensor, scores: torch.Tensor, beta: float) -> torch.Tensor:
    # Eq. 8: s̄ ← β·s̄ + (1 − β)·s, in place, no bias correction.
    return smoothed.mul_(beta).add_(scores, alpha=1 - beta)
