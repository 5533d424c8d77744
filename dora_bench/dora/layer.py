"""A frozen linear layer (``nn.Linear`` or GPT-2's ``Conv1D``) plus r' rank-1 components (Eq. 6)."""
from __future__ import annotations

import sys

import torch
from torch import nn
from torch.nn import functional as F


def is_conv1d(layer: nn.Module) -> bool:
    """GPT-2's ``transformers.pytorch_utils.Conv1D`` (W stored d_in × d_out, y = x W + b).

    Looked up among the loaded modules: a model holding a Conv1D has imported it, and the dora package
    keeps needing torch only.
    """
    conv1d = getattr(sys.modules.get("transformers.pytorch_utils"), "Conv1D", None)
    return conv1d is not None and isinstance(layer, conv1d)


def is_adaptable(layer: nn.Module) -> bool:
    return isinstance(layer, nn.Linear) or is_conv1d(layer)


def in_out_features(layer: nn.Module) -> tuple[int, int]:
    """(d_in, d_out) of an adaptable layer: ``nn.Linear`` stores W as d_out × d_in, ``Conv1D`` as d_in × d_out."""
    if isinstance(layer, nn.Linear):
        return layer.in_features, layer.out_features
    if is_conv1d(layer):
        d_in, d_out = layer.weight.shape
        return d_in, d_out
    raise TypeError(f"DoRA adapts nn.Linear and transformers' Conv1D, not {type(layer).__name__}")


class DynamicRankLinear(nn.Module):
    """``y = W0 x + b + s · B diag(c) A dropout(x)`` with W0, b frozen.

    Row k of ``A`` (r'×d_in) is a_k, column k of ``B`` (d_out×r') is b_k, ``c`` (r') holds the
    component scalars that pruning sets to zero. s = lora_alpha / r' is fixed at the initial rank.
    The base layer is an ``nn.Linear`` or a GPT-2 ``Conv1D`` (``fan_in_fan_out``: W0 stored d_in × d_out);
    A and B have the same orientation for both, as PEFT's lora_A / lora_B do.

    ``dtype``: of A, B, c (None: the base weight's). Adapters kept fp32 on a bf16/fp16 base see the input
    cast to their dtype and give the output back in the base output's dtype, as PEFT's LoRA layers do.
    """

    def __init__(self, base_layer: nn.Module, rank: int, lora_alpha: float, lora_dropout: float,
                 dtype: torch.dtype | None = None):
        super().__init__()
        d_in, d_out = in_out_features(base_layer)
        self.base_layer = base_layer
        self.fan_in_fan_out = is_conv1d(base_layer)
        base_layer.weight.requires_grad_(False)
        if base_layer.bias is not None:
            base_layer.bias.requires_grad_(False)
        self.rank = rank
        self.scaling = lora_alpha / rank
        factory = {"device": base_layer.weight.device, "dtype": dtype or base_layer.weight.dtype}
        self.A = nn.Parameter(torch.empty(rank, d_in, **factory))
        self.B = nn.Parameter(torch.empty(d_out, rank, **factory))
        self.c = nn.Parameter(torch.zeros(rank, **factory))
        # a=0 gives the bound sqrt(6 / fan_in) of the spec; c = 0 makes ΔW = 0 at the start.
        nn.init.kaiming_uniform_(self.A, a=0)
        nn.init.kaiming_uniform_(self.B, a=0)
        self.dropout = nn.Dropout(lora_dropout) if lora_dropout > 0 else nn.Identity()

    @property
    def in_features(self) -> int:
        return self.A.shape[1]

    @property
    def out_features(self) -> int:
        return self.B.shape[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # Eq. 6
        result = self.base_layer(x)
        adapter_input = self.dropout(x.to(self.A.dtype))
        hidden = F.linear(adapter_input, self.A)
        # Scaling the r'-wide hidden instead of the d_out-wide output keeps the cost of a LoRA.
        update = F.linear(hidden * (self.c * self.scaling), self.B)
        # As PEFT's LoRA: add in the wider dtype, then return the base output's dtype.
        return (result + update).to(result.dtype)

    def extra_repr(self) -> str:
        kind = ", fan_in_fan_out=True" if self.fan_in_fan_out else ""
        return f"in_features={self.in_features}, out_features={self.out_features}, rank={self.rank}{kind}"
