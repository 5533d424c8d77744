"""cost.md and its PNGs: for each section and score column of a table with methods as rows (Tables 2-4), the score
against trainable parameters, peak memory and (where recorded) step time, one point per method and budget with
its std as error bars, and the Pareto front: the points no other point beats at lower or equal cost."""
from __future__ import annotations

import argparse
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dora_bench.results import ranking
from dora_bench.tables.markdown import fmt_params, markdown_table, row_labels, section_title, stats_text
from dora_bench.tables.runs import Key, comparable_peak_mb
from dora_bench.tables.spec import Table
from dora_bench.tables.summary import CellSummary, Study
from dora_bench.tables.views import View

# cost axis -> (label on the plot and in cost.md, what a run recorded, log scale)
AXES = {"params": ("trainable parameters (paper convention)", lambda run: run.result.params.trainable_paper
                   if run.result.params else None, True),
        "memory": ("peak memory (MiB)", lambda run: comparable_peak_mb(run), False),
        "step": ("median step time (s)", lambda run: run.result.timing.step_time_median_s, False)}


@dataclass
class Point:
    key: Key
    label: str
    score: float
    std: float
    cell: CellSummary
    costs: dict[str, float | None]


def mean_cost(cell: CellSummary, axis: str) -> float | None:
    """The mean over the chosen configuration's seeds of what they recorded; None when any seed lacks it."""
    read = AXES[axis][1]
    values = [read(run) for run in cell.config.runs] if cell.config else []
    numbers = [float(v) for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
    return float(np.mean(numbers)) if numbers and len(numbers) == len(values) else None


def pareto_front(points: list[Point], axis: str, lower_better: bool) -> list[Point]:
    """Cheapest first; a point is on the front when it scores better than every point at lower or equal cost."""
    costed = [p for p in points if p.costs[axis] is not None]
    front, best = [], -math.inf
    for point in sorted(costed, key=lambda p: (p.costs[axis], -ranking(p.score, lower_better))):
        if ranking(point.score, lower_better) > best:
            front.append(point)
            best = ranking(point.score, lower_better)
    return front


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_")


def points_of(table: Table, cells: list[CellSummary]) -> list[Point]:
    return [Point(c.key, " ".join(v for v in row_labels(table, c.key) if v and v != "—"), c.stats[0],
                  c.stats[1] or 0.0, c, {axis: mean_cost(c, axis) for axis in AXES})
            for c in cells if c.stats is not None]


def render_png(points: list[Point], title: str, lower_better: bool, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only; no display on clusters or in CI
    import matplotlib.pyplot as plt

    axes_shown = [axis for axis in AXES if any(p.costs[axis] is not None for p in points)]
    fig, axes = plt.subplots(1, len(axes_shown), figsize=(5 * len(axes_shown), 4.2), squeeze=False)
    for ax, axis in zip(axes[0], axes_shown):
        costed = [p for p in points if p.costs[axis] is not None]
        front = pareto_front(points, axis, lower_better)
        for point in costed:
            on_front = point in front
            ax.errorbar(point.costs[axis], point.score, yerr=point.std, fmt="o", capsize=3,
                        color="tab:red" if on_front else "tab:blue")
            ax.annotate(point.label, (point.costs[axis], point.score), textcoords="offset points", xytext=(4, 4),
                        fontsize=7)
        ax.plot([p.costs[axis] for p in front], [p.score for p in front], "--", color="tab:red", linewidth=1,
                label="Pareto front")
        if AXES[axis][2]:
            ax.set_xscale("log")
        ax.set_xlabel(AXES[axis][0])
        ax.set_ylabel("score" + (" (lower is better)" if lower_better else ""))
        ax.legend(fontsize=7, loc="best")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def render(study: Study, out: Path) -> tuple[str, list[str]]:
    lines = ["# Cost against score", "",
             "One point per method and budget: the mean score over seeds of the configuration the table shows, its std "
             "as the error bar, against the mean over its seeds of trainable parameters (paper convention), peak "
             "memory (GPU allocated, or the process's resident set on a CPU, reset before each run's training) and the "
             "median optimizer step time, where the results recorded them. Pareto front (red, ✓ below): no other point "
             "scores better at lower or equal cost. CPU results written before peaks were reset per run recorded the "
             "process's lifetime peak, which in a multirun includes the jobs before it: they are left off the memory "
             "axis.", ""]
    written = []
    for table in (t for t in study.tables if t.params):
        for number, summary in enumerate(study.summaries(table), 1):
            for column in (c for c in table.columns if c.is_score):
                cells = [cell for row in summary.rows for cell in row.cells if cell.column is column]
                points = points_of(table, cells)
                if not points:
                    continue
                lower_better = points[0].cell.lower_better
                title = f"{table.title} — {section_title(summary.key)} — {column.label}"
                name = f"cost-{table.name}-{number}-{slug(column.label)}.png"
                render_png(points, title, lower_better, out / name)
                written.append(name)
                fronts = {axis: pareto_front(points, axis, lower_better) for axis in AXES}
                rows = [[*row_labels(table, p.key), stats_text(p.cell.stats, p.cell.failed, column.digits),
                         fmt_params(p.costs["params"]) if p.costs["params"] is not None else "—",
                         f"{p.costs['memory']:.0f}" if p.costs["memory"] is not None else "—",
                         f"{p.costs['step']:.3f}" if p.costs["step"] is not None else "—",
                         ", ".join(axis for axis in AXES if p in fronts[axis]) or "—"] for p in points]
                lines += [f"## {title}", "", f"![{title}]({name})", "",
                          markdown_table([*table.key_headers, "score", "params", "peak MiB", "step s", "Pareto ✓"], rows),
                          ""]
    if not written:
        lines += ["No score cells in a table with methods as rows.", ""]
    return "\n".join(lines) + "\n", written


def write(study: Study, out: Path, args: argparse.Namespace) -> list[str]:
    if "md" not in args.formats:
        return []
    for old in out.glob("cost-*.png"):   # a section that is gone leaves no stale picture behind
        old.unlink()
    text, written = render(study, out)
    (out / "cost.md").write_text(text, encoding="utf-8")
    return ["cost.md", *written]


VIEW = View("cost", 40, write)
