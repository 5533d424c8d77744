"""Figure 2: kept components per adapted matrix type and layer (figure2.md with the numbers, figure2.png)."""
from __future__ import annotations

import argparse
import math
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dora_bench.tables.catalog.paper import main_row
from dora_bench.tables.cells import Cell
from dora_bench.tables.markdown import label, markdown_table
from dora_bench.tables.runs import Options, Run, Unusable, final_rank
from dora_bench.tables.summary import Study, sort_key
from dora_bench.tables.views import View

TYPES = ("Wq", "Wk", "Wv", "Wo", "Wf1", "Wf2")
ENCODER_MODULES = {"attention.self.query": "Wq", "attention.self.key": "Wk", "attention.self.value": "Wv",
                   "attention.output.dense": "Wo", "intermediate.dense": "Wf1", "output.dense": "Wf2"}
BART_MODULES = {"q_proj": "Wq", "k_proj": "Wk", "v_proj": "Wv", "out_proj": "Wo", "fc1": "Wf1", "fc2": "Wf2"}
# Anchored on `layer.N.` so that `output.dense` never matches `attention.output.dense` and heads never match.
ENCODER_RE = re.compile(r"\.layer\.(\d+)\.(" + "|".join(map(re.escape, ENCODER_MODULES)) + r")$")
BART_RE = re.compile(r"(encoder|decoder)\.layers\.(\d+)\.(?:(self_attn|encoder_attn)\.)?("
                     + "|".join(BART_MODULES) + r")$")
ROW_ORDER = [prefix + t for prefix in ("", "enc ", "dec ", "cross ") for t in TYPES]


def matrix_of(name: str) -> tuple[str, int] | None:
    """Module name -> (matrix label, layer index); BART: enc/dec self-attention and FFN, cross attention."""
    if match := ENCODER_RE.search(name):
        return ENCODER_MODULES[match[2]], int(match[1])
    if match := BART_RE.search(name):
        stack = "cross" if match[3] == "encoder_attn" else match[1][:3]
        return f"{stack} {BART_MODULES[match[4]]}", int(match[2])
    return None


def _kept(value: Any) -> float:
    """A rank-pattern entry: a kept count, or a boolean mask (PEFT's AdaLoRA layout)."""
    return float(sum(map(bool, value))) if isinstance(value, (list, tuple)) else float(value)


@dataclass
class Panel:
    seeds: list[int] = field(default_factory=list)
    counts: dict[tuple[str, int], list[float]] = field(default_factory=lambda: defaultdict(list))
    unknown: set[str] = field(default_factory=set)

    def matrix(self) -> tuple[list[str], list[int], np.ndarray]:
        labels = sorted({name for name, _ in self.counts}, key=ROW_ORDER.index)
        layers = sorted({layer for _, layer in self.counts})
        grid = np.full((len(labels), len(layers)), np.nan)
        for (name, layer), values in self.counts.items():
            grid[labels.index(name), layers.index(layer)] = np.mean(values)
        return labels, layers, grid


def figure_panels(runs: list[Run], opts: Options) -> tuple[dict[tuple, Panel], str]:
    """Panels keyed (model, section label, method, task, final budget) from SST-2 runs, or from every task if
    none is SST-2; of several configurations of a panel, the one the tables pick (the same Cell rule)."""
    usable = [r for r in runs if r.complete and r.result.method in ("dora", "adalora") and main_row(r)
              and isinstance(r.result.method_summary.get("rank_pattern"), dict)
              and r.result.method_summary["rank_pattern"]]
    sst2 = [r for r in usable if r.result.task == "sst2"]
    note = "SST-2 runs." if sst2 or not usable else (
        f"no SST-2 runs with rank patterns: fell back to {', '.join(sorted({r.result.task for r in usable}))}.")
    cells: dict[tuple, Cell] = defaultdict(Cell)
    for run in sst2 or usable:
        key = (run.result.model, run.section_label(opts), run.result.method, run.result.task, final_rank(run))
        try:
            cells[key].add(run, opts)
        except Unusable:
            continue   # the tables list it; a panel needs a score to pick its configuration
    panels: dict[tuple, Panel] = defaultdict(Panel)
    for key, cell in cells.items():
        for run in cell.chosen().runs if cell.chosen() else []:
            panel = panels[key]
            panel.seeds.append(run.result.seed)
            for name, value in run.result.method_summary["rank_pattern"].items():
                found = matrix_of(name)
                if found is None:
                    panel.unknown.add(name)
                else:
                    panel.counts[found].append(_kept(value))
    # DoRA first (the figure's subject), then AdaLoRA; within a method by model, task, budget.
    return dict(sorted(panels.items(), key=lambda kv: (kv[0][2] != "dora", sort_key(kv[0])))), note


def _panel_title(key: tuple, panel: Panel) -> str:
    model, section, method, task, rank = key
    return (f"{label(method)}, final budget {rank}: {task}, {model}, seeds {sorted(panel.seeds)}"
            + (f" ({section})" if section else ""))


def render_figure_md(panels: dict[tuple, Panel], note: str) -> str:
    out = ["# Figure 2: kept components per adapted matrix and layer", "",
           "Components kept after the final pruning (method_summary.rank_pattern), mean over seeds; rows: matrix "
           "type (Wf1/Wf2: FFN up/down projection; BART: enc/dec self-attention, cross attention), columns: "
           f"layer (1 = first). Untagged DoRA/AdaLoRA runs in the paper's setting; {note}", ""]
    for key, panel in panels.items():
        labels, layers, grid = panel.matrix()
        rows = [[name, *(f"{v:.1f}" for v in grid[i]), f"{np.nansum(grid[i]):.1f}"] for i, name in enumerate(labels)]
        columns = ["Matrix", *(str(layer + 1) for layer in layers), "total"]
        out += [f"## {_panel_title(key, panel)}", "", markdown_table(columns, rows), ""]
        if panel.unknown:
            out += [f"Not placed: {len(panel.unknown)} module name(s) not recognised, e.g. {min(panel.unknown)}.", ""]
    if not panels:
        out.append("No DoRA/AdaLoRA results with rank patterns.")
    return "\n".join(out) + "\n"


def render_figure_png(panels: dict[tuple, Panel], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only; no display on clusters or in CI
    import matplotlib.pyplot as plt

    n = max(len(panels), 1)
    cols = min(n, 4)
    rows = math.ceil(n / cols)
    height = max((len(p.matrix()[0]) for p in panels.values()), default=6)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, (0.35 * height + 1.6) * rows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.axis("off")
    if not panels:
        axes[0, 0].text(0.5, 0.5, "no DoRA/AdaLoRA rank patterns in the results", ha="center", va="center")
        axes[0, 0].axis("off")
    for ax, (key, panel) in zip(axes.flat, panels.items()):
        labels, layers, grid = panel.matrix()
        image = ax.imshow(grid, cmap="YlGnBu", aspect="auto", vmin=0)
        ax.set_yticks(range(len(labels)), labels)
        ax.set_xticks(range(len(layers)), [str(layer + 1) for layer in layers])
        ax.set_xlabel("layer")
        ax.set_title(f"{label(key[2])} b(T)={key[4]} ({key[3]}, {key[0]})", fontsize=9)
        if grid.size <= 300:  # numbers stay readable up to about a 12-layer encoder
            for (i, j), value in np.ndenumerate(grid):
                if not np.isnan(value):
                    ax.text(j, i, f"{value:.1f}", ha="center", va="center", fontsize=6)
        fig.colorbar(image, ax=ax, fraction=0.046)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write(study: Study, out: Path, args: argparse.Namespace) -> list[str]:
    if "md" not in args.formats:
        return []
    panels, note = figure_panels(study.runs, study.opts)
    (out / "figure2.md").write_text(render_figure_md(panels, note), encoding="utf-8")
    render_figure_png(panels, out / "figure2.png")
    return ["figure2.md", "figure2.png"]


VIEW = View("figure2", 20, write)
