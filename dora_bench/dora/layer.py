"""A frozen linear layer plus r' rank-1 components (Eq. 6)."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class DynamicRankLinear(nn.Module):
    """``y = W0 x + b + s · B diag(c) A dropout(x)`` with W0, b frozen.

    Row k of ``A`` (r'×d_in) is a_k, column k of ``B`` (d_out×r') is b_k, ``c`` (r') holds the
    component scalars that pruning sets to zero. s = lora_alpha / r' is fixed at the initial rank.
    """

    def __init__(self, base_layer: nn.Linear, rank: int, lora_alpha: float, lora_dropout: float):
        super().__init__()
        self.base_layer = base_layer
        base_layer.weight.requires_grad_(False)
        if base_layer.bias is not None:
            base_layer.bias.requires_grad_(False)
        self.rank = rank
        self.scaling = lora_alpha / rank
        factory = {"device": base_layer.weight.device, "dtype": base_layer.weight.dtype}
        self.A = nn.Parameter(torch.empty(rank, base_layer.in_features, **factory))
        self.B = nn.Parameter(torch.empty(base_layer.out_features, rank, **factory))
        self.c = nn.Parameter(torch.zeros(rank, **factory))
        # a=0 gives the bound sqrt(6 / fan_in) of the spec; c = 0 makes ΔW = 0 at the start.
        nn.init.kaiming_uniform_(self.A, a=0)
        nn.init.kaiming_uniform_(self.B, a=0)
        self.dropout = nn.Dropout(lora_dropout) if lora_dropout > 0 else nn.Identity()

    @property
    def in_features(self) -> int:
        return self.base_layer.in_features

    @property
    def out_features(self) -> int:
        return self.base_layer.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # Eq. 6
        hidden = F.linear(self.dropout(x), self.A)
        # Scaling the r'-wide hidden instead of the d_out-wide output keeps the cost of a LoRA.
        return self.base_layer(x) + F.linear(hidden * (self.c * self.scaling), self.B)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, rank={self.rank}"
