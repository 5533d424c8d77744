"""ROUGE of the lead-sentence baseline on XSum (first sentence of each document as its summary).

A sanity anchor for the metric code (Narayan et al., 2018 report LEAD at R1/R2/RL 16.30/1.60/11.95 on the
full test set, with ROUGE-1.5.5). Usage:

    python scripts/xsum_lead_baseline.py [PATH]    # default: $DORA_BENCH_DATA/xsum/test_1000.jsonl
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

from dora_bench.tasks.xsum import read_pairs, rouge_scores

DATA = os.environ.get("DORA_BENCH_DATA")
DEFAULT = Path(DATA) / "xsum" / "test_1000.jsonl" if DATA else None


def lead_sentence(document: str) -> str:
    """XSum documents hold one sentence a line: the first non-empty line."""
    return next(line.strip() for line in document.splitlines() if line.strip())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path", nargs="?", type=Path, default=DEFAULT, help="JSONL/CSV with document, summary "
                        "(default: $DORA_BENCH_DATA/xsum/test_1000.jsonl)")
    args = parser.parse_args()
    if args.path is None:
        parser.error("give PATH, or set DORA_BENCH_DATA to the folder holding xsum/test_1000.jsonl")
    pairs = read_pairs(args.path)
    leads = [lead_sentence(d) for d in pairs["document"]]
    print(f"{args.path}: {len(leads)} documents; lead sentence vs reference summary, F x100, per-example mean")
    for stemmer in (False, True):
        for l_variant in ("rougeL", "rougeLsum"):
            scores = rouge_scores(leads, pairs["summary"], use_stemmer=stemmer, l_variant=l_variant)
            print(f"  use_stemmer={stemmer!s:5} {l_variant:9}: " + "  ".join(f"{k} {v:.2f}" for k, v in scores.items()))


if __name__ == "__main__":
    main()
