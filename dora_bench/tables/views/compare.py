"""compare.md: every score cell against the reference method (`--compare`, default LoRA), the difference and its
95 % interval, paired by seed or Welch (the statistics and why: dora_bench/tables/compare.py)."""
from __future__ import annotations

import argparse
from pathlib import Path

from dora_bench.tables.compare import CONFIDENCE
from dora_bench.tables.markdown import VERDICT_MARKS, label, markdown_table, row_labels, section_title
from dora_bench.tables.summary import CellSummary, Study
from dora_bench.tables.views import View

WHY = ("Difference: this cell minus the reference, in the metric's points. Paired: the seeds both cells share, "
       "mean ± t(0.975, n-1) · sd / sqrt(n) of the per-seed differences (scipy.stats.ttest_rel); Welch: different "
       "seeds, scipy.stats.ttest_ind(equal_var=False). A t-interval and not a bootstrap: 3 seeds give a bootstrap 27 "
       "resamples and an interval far too narrow, whereas t(0.975, 2) = 4.30 (5 seeds: t(0.975, 4) = 2.78) keeps a few "
       "seeds as uncertain as they are. "
       "It assumes independent seeds and roughly normal differences; it is not corrected for the number of cells "
       "compared (1 in 20 excludes 0 by chance), and each cell's configuration was chosen on these same dev "
       "scores. Verdict: better / worse when the interval excludes 0 (lower is better for a lower-is-better metric).")


def interval_text(cell: CellSummary) -> list[str]:
    diff, digits = cell.difference, cell.column.digits
    if diff is None:
        return ["—"] * 4
    n = f"{diff.n[0]}" if diff.test == "paired" else f"{diff.n[0]} vs {diff.n[1]}"
    ci = f"[{diff.low:+.{digits}f}, {diff.high:+.{digits}f}]" if diff.low is not None else "— (n < 2)"
    verdict = cell.verdict
    return [f"{diff.test}, n={n}", f"{diff.mean:+.{digits}f}", ci,
            f"{VERDICT_MARKS[verdict]} {verdict}" if verdict else "not distinguishable"]


def render_compare(study: Study) -> str:
    reference = study.reference
    out = [f"# Differences to {label(reference)}", "",
           f"Every score cell against {label(reference)} at the row's budget (Full FT and BitFit, which have none, "
           f"and rows of a budget {label(reference)} lacks: {label(reference)} at the large budget, else the one "
           f"there is), {int(CONFIDENCE * 100)} % interval. {WHY}", ""]
    for table in study.tables:
        summaries = study.summaries(table)
        if not any(row.key[0] == reference for summary in summaries for row in summary.rows):
            continue   # rows that are not methods (Table 5's variants, Table 6's budgets): nothing to compare with
        for summary in summaries:
            rows = []
            for row in summary.rows:
                for cell in row.cells:
                    if not cell.column.is_score or cell.stats is None:
                        continue
                    if row.key[0] == reference:
                        against, rest = "(reference)", ["—"] * 4
                    elif cell.difference is None:
                        against, rest = f"no {label(reference)} cell", ["—"] * 4
                    else:
                        against, rest = " ".join(map(label, cell.difference.reference)), interval_text(cell)
                    rows.append([*row_labels(table, row.key), cell.column.label, f"{cell.stats[0]:.{cell.column.digits}f}",
                                 against, *rest])
            if rows:
                columns = [*table.key_headers, "column", "mean", "against", "test", "difference",
                           f"{int(CONFIDENCE * 100)} % interval", "verdict"]
                out += [f"## {table.title} — {section_title(summary.key)}", "", markdown_table(columns, rows), ""]
    if len(out) == 4:
        out += ["No score cells.", ""]
    return "\n".join(out) + "\n"


def write(study: Study, out: Path, args: argparse.Namespace) -> list[str]:
    if "md" not in args.formats or study.reference is None:
        return []
    text = render_compare(study)
    (out / "compare.md").write_text(text, encoding="utf-8")
    if args.compare is not None:   # asked for by name: shown, as --sweeps shows its list
        print(text)
    return ["compare.md"]


VIEW = View("compare", 30, write)
