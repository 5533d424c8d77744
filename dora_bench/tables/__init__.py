"""`dora-bench-tables`: result files -> the paper's tables (markdown), Figure 2, differences, cost and exports.

Result files are the only input; nothing is re-run and nothing is filled in. The package's files are its jobs:

- runs.py      reading result files: a Run per file, the values a table takes, what a run recorded of its method
- paper.py     the paper's numbers (paper.yaml)
- spec.py      a table as data (Column, Table); catalog/ holds the tables, one file per family
- cells.py     collecting runs into cells, the sweep choice (metric direction included), aggregation over seeds
- edges.py     a chosen searched value at the edge of its grid (or of an Optuna space), and the next value out
- compare.py   differences to a reference method with their 95 % t-interval (paired by seed, else Welch)
- summary.py   what every cell shows, computed once for every view
- markdown.py  the markdown renderer and the notes
- views/       one file per output: tables_md, figure2, compare, cost, sweeps, export (csv/json)
- cli.py       the command line

Sweeps: configurations that differ only in a searched key (SEARCHED, the paper's Appendix E search) share a
cell, which shows the one with the best mean dev score over its seeds (footnoted); runs that differ in any other
key get a section of their own, titled by those values. `--sweeps` lists them all.
"""
from dora_bench.tables.catalog import TABLES
from dora_bench.tables.cli import main
from dora_bench.tables.runs import SEARCHED

__all__ = ["TABLES", "SEARCHED", "main"]
