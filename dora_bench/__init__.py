"""dora-bench: reproduce and re-run the benchmarks of Dynamic Low-Rank Adaptation (DoRA)."""

__version__ = "0.1.0"
