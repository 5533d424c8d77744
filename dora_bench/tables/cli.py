"""The command line of `dora-bench-tables`: read the results once, then let every view write its files."""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from dora_bench.tables import views
from dora_bench.tables.markdown import run_task
from dora_bench.tables.paper import load_paper
from dora_bench.tables.runs import SEARCHED, Options, load_runs
from dora_bench.tables.summary import Study

DESCRIPTION = "Result files -> the paper's tables (markdown), Figure 2, differences, cost and exports."
FORMATS = ("md", "csv", "json")
DEFAULT_REFERENCE = "lora"


def _key_list(text: str) -> tuple[str, ...]:
    keys = tuple(k.strip() for k in text.split(",") if k.strip())
    for key in keys:
        if not re.fullmatch(r"[A-Za-z_][\w-]*(\.[A-Za-z_][\w-]*)*", key):
            raise argparse.ArgumentTypeError(f"{key!r} is not a dotted config key (e.g. trainer.learning_rate)")
    return keys


def _formats(text: str) -> tuple[str, ...]:
    chosen = tuple(f.strip() for f in text.split(",") if f.strip())
    for fmt in chosen:
        if fmt not in FORMATS:
            raise argparse.ArgumentTypeError(f"{fmt!r} is not a format; allowed: {', '.join(FORMATS)} (comma-separated)")
    if not chosen:
        raise argparse.ArgumentTypeError(f"no format given; allowed: {', '.join(FORMATS)} (comma-separated)")
    return chosen


def parser() -> argparse.ArgumentParser:
    out = argparse.ArgumentParser(prog="dora-bench-tables", description=DESCRIPTION)
    out.add_argument("--results", default="results", help="results directory (holding runs/); default: results")
    out.add_argument("--out", default=None, help="output directory; default: <results>/tables")
    out.add_argument("--model", default=None, help="only this model (default: every model, one section each)")
    out.add_argument("--agg", choices=("mean", "median"), default="mean", help="across seeds (default: mean)")
    out.add_argument("--ddof", type=int, choices=(0, 1), default=0, help="std ddof (default 0, population)")
    out.add_argument("--select", choices=("best", "last"), default="best",
                     help="per-seed value: the best dev epoch (pruning methods: after pruning ended) or the last")
    out.add_argument("--searched", type=_key_list, default=SEARCHED, metavar="KEY,KEY",
                     help="config keys a cell picks its best configuration over (other differing keys get "
                          f"sections of their own); default: {','.join(SEARCHED)}; '' for none")
    out.add_argument("--compare", default=None, metavar="METHOD",
                     help=f"the reference method of the differences (▲/▼ in the tables, compare.md, printed when "
                          f"given); default: {DEFAULT_REFERENCE}; 'none' for no comparison")
    out.add_argument("--format", dest="formats", type=_formats, default=("md",), metavar="FMT,FMT",
                     help="md (the tables, Figure 2, compare.md, cost.md and its PNGs), csv / json (every cell: "
                          "cells.csv, cells.json); default: md")
    for view in views.discover():
        if view.add_arguments:
            view.add_arguments(out)
    return out


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    root = Path(args.results)
    if not (root / "runs").is_dir():
        print(f"dora-bench-tables: error: no results under {root / 'runs'} (use --results DIR)", file=sys.stderr)
        return 2
    out = Path(args.out) if args.out else root / "tables"
    out.mkdir(parents=True, exist_ok=True)
    opts = Options(agg=args.agg, ddof=args.ddof, select=args.select, searched=args.searched)
    runs, skipped = load_runs(root)
    if args.model:
        runs = [r for r in runs if r.result.model == args.model]
        skipped = [(p, why) for p, why in skipped if run_task(p, root)[0] in (args.model, None)]
    for key in (k for k in opts.searched if opts.searched != SEARCHED and not any(k in r.values for r in runs)):
        print(f"[dora-bench-tables] warning: searched key {key} is in no result's config", file=sys.stderr)
    reference = None if args.compare == "none" else args.compare or DEFAULT_REFERENCE
    if reference and not any(r.result.method == reference for r in runs):
        methods = sorted({r.result.method for r in runs})
        if args.compare is not None:
            print(f"dora-bench-tables: error: --compare {reference}: no results of that method; the results hold: "
                  f"{', '.join(methods) or 'none'} (or 'none')", file=sys.stderr)
            return 2
    study = Study(runs, skipped, load_paper(), opts, root, reference)
    written = [name for view in views.discover() for name in view.write(study, out, args)]
    print(f"[dora-bench-tables] {len(runs)} result file(s) read, {len(skipped)} skipped; wrote "
          f"{', '.join(written) or 'nothing'} to {out}")
    for path, reason in skipped:
        print(f"[dora-bench-tables] skipped {path}: {reason}", file=sys.stderr)
    return 0
