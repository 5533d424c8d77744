"""Dynamic Low-Rank Adaptation (DoRA, dynamic rank): rank-1 components A_i B_i c_i, Frobenius-share
importance, cubic budget schedule and the DEM variance regulariser.

Not PEFT's weight-decomposed DoRA (``use_dora=True``).
"""
from .config import DoraConfig
from .controller import DoraController, apply_dora
from .export import export_peft_lora
from .importance import importance_scores
from .layer import DynamicRankLinear
from .regularizer import dem_penalty
from .schedule import budget_at

__all__ = [
    "DoraConfig",
    "DoraController",
    "DynamicRankLinear",
    "apply_dora",
    "budget_at",
    "dem_penalty",
    "export_peft_lora",
    "importance_scores",
]
