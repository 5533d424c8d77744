"""`dora-bench-tables`: result files -> the paper's tables (markdown) and Figure 2, beside the paper's numbers.

Result files are the only input; nothing is re-run and nothing is filled in. A table is data (`Table`):
which task and value fill each column, how a result file picks its row, which section of
`paper.yaml` holds the reference numbers. One renderer draws every table.
"""
from __future__ import annotations

import argparse
import math
import re
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Any, Callable

import numpy as np
import yaml

from dora_bench.results import iter_results

Key = tuple  # a row key, e.g. ("lora", "small")

METHOD_LABELS = {"full_ft": "Full FT", "bitfit": "BitFit", "h_adapter": "H-Adapter", "p_adapter": "P-Adapter",
                 "lora": "LoRA", "adalora": "AdaLoRA", "dora": "DoRA"}
VARIANT_LABELS = {"with_dem": "with DEM", "without_dem": "without DEM"}
# Table metric name -> keys accepted in a result's metrics (SQuAD v1 writes exact_match, v2 exact).
METRIC_KEYS = {"em": ("exact_match", "exact"), "rougeL": ("rougeL", "rougeLsum")}
# Where a pruning method keeps its initial budget (DoRA: b(0); AdaLoRA: init_r); null means 1.5x final.
INITIAL_BUDGET_KEYS = ("initial_budget", "init_r")


class Unusable(ValueError):
    """A complete result file that lacks what a table needs; reported under the table, never fatal."""


@dataclass(frozen=True)
class Options:
    agg: str = "mean"      # across seeds: mean | median
    ddof: int = 0          # std: 0 = population (the convention), 1 = sample
    select: str = "best"   # per seed: best = the epoch the run selected | last = its last epoch


@dataclass(frozen=True)
class Run:
    path: Path
    data: dict[str, Any]

    @property
    def config(self) -> dict[str, Any]:
        return self.data.get("config") or {}

    @property
    def complete(self) -> bool:
        return self.data["status"] == "complete"


# ----- values read from one result file --------------------------------------------------------------
def _finite(value: Any, what: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise Unusable(f"{what} is {value!r}") from None
    if not math.isfinite(number):
        raise Unusable(f"{what} is {value}")
    return number


def _epoch_metrics(run: Run, opts: Options) -> dict[str, Any]:
    try:
        if opts.select == "last":
            return run.data["epochs"][-1]["metrics"]
        selected = run.data["selected"]
        return {**selected["metrics"], "score": selected["score"]}
    except (KeyError, IndexError, TypeError):
        raise Unusable(f"no {'epochs' if opts.select == 'last' else 'selected'} metrics") from None


def metric(name: str) -> Callable[[Run, Options], float]:
    def value(run: Run, opts: Options) -> float:
        metrics = _epoch_metrics(run, opts)
        for key in METRIC_KEYS.get(name, (name,)):
            if key in metrics:
                return _finite(metrics[key], f"metric {key}")
        raise Unusable(f"no {name!r} metric (has {', '.join(sorted(metrics))})")
    value.per_epoch = True  # --select applies (footnoted)
    return value


def minutes_per_epoch(run: Run, opts: Options) -> float:
    if (run.data.get("train") or {}).get("resumed_from"):
        raise Unusable("resumed run: its train_runtime_s covers only the part after the restart")
    runtime = _finite((run.data.get("timing") or {}).get("train_runtime_s"), "timing.train_runtime_s")
    epochs = len(run.data.get("epochs") or []) or (run.config.get("trainer") or {}).get("epochs")
    return runtime / _finite(epochs, "number of epochs") / 60


def peak_memory_mb(run: Run, opts: Options) -> float:
    return _finite((run.data.get("timing") or {}).get("peak_memory_mb"), "timing.peak_memory_mb")


# ----- which row a result file belongs to (from its resolved config) ---------------------------------
def method_option(run: Run, name: str) -> Any:
    return (run.config.get("method") or {}).get(name)


def final_rank(run: Run) -> int | None:
    return (run.config.get("budget") or {}).get("rank")


def initial_budget(run: Run) -> int | None:
    explicit = [v for v in (method_option(run, k) for k in INITIAL_BUDGET_KEYS) if v is not None]
    rank = final_rank(run)
    if explicit:
        return int(explicit[0])
    return math.ceil(1.5 * rank) if rank is not None else None


def dem_on(run: Run) -> bool:
    """DEM weight eta > 0; absent keys fall back to the task's Table-8 value, then to 'on' (the default)."""
    eta = method_option(run, "reg_coefficient")
    if eta is None:
        eta = (run.config.get("task") or {}).get("reg_coefficient")
    return eta is None or float(eta) > 0


def default_start(run: Run) -> bool:
    """Pruning methods start at 1.5x the final budget unless configured otherwise (Table 6 varies it)."""
    rank = final_rank(run)
    return rank is None or initial_budget(run) == math.ceil(1.5 * rank)


def paper_setting(run: Run) -> bool:
    """The main tables' configuration: DoRA/AdaLoRA with the default start; DoRA with DEM."""
    method = run.data["method"]
    return method not in ("dora", "adalora") or (default_start(run) and (method != "dora" or dem_on(run)))


def main_row(run: Run) -> Key | None:
    """Tables 2-4: untagged runs (experiments tag the variants they add) in the paper's setting."""
    if run.data.get("tag", "") or not paper_setting(run):
        return None
    return run.data["method"], run.data.get("budget")


def dem_row(run: Run) -> Key | None:
    if run.data["method"] != "dora" or not default_start(run):
        return None
    return "with_dem" if dem_on(run) else "without_dem", run.data.get("budget")


def initial_budget_row(run: Run) -> Key | None:
    if run.data["method"] != "dora" or not dem_on(run):
        return None
    return final_rank(run), initial_budget(run)


def efficiency_row(run: Run) -> Key | None:
    return (run.data["method"], run.data.get("budget")) if paper_setting(run) else None


# ----- the paper's numbers ---------------------------------------------------------------------------
@dataclass(frozen=True)
class PaperRow:
    values: dict[str, float]
    params: str | None = None


def load_paper() -> dict[str, Any]:
    return yaml.safe_load(files("dora_bench").joinpath("paper.yaml").read_text(encoding="utf-8"))


def _rows_by(key: Callable[[dict], Key]) -> Callable[[dict], dict[Key, PaperRow]]:
    def parse(section: dict) -> dict[Key, PaperRow]:
        return {key(row): PaperRow(dict(zip(section["columns"], row["scores"])), row.get("params"))
                for row in section["rows"]}
    return parse


def _efficiency_rows(section: dict) -> dict[Key, PaperRow]:
    return {(method,): PaperRow(dict(zip(section["columns"], values))) for method, values in section["rows"].items()}


# ----- tables as data ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Column:
    label: str
    task: str
    value: Callable[[Run, Options], float]
    paper: str | None = None        # column name in the paper.yaml section
    digits: int = 2
    ratio: bool = False             # shown relative to the LoRA row (Table 9)


@dataclass(frozen=True)
class Table:
    name: str
    title: str
    key_headers: tuple[str, ...]
    row_key: Callable[[Run], Key | None]
    columns: tuple[Column, ...]
    paper_section: str
    paper_rows: Callable[[dict], dict[Key, PaperRow]]
    paper_key: Callable[[Key], Key] = lambda key: key   # our row key -> the paper's row key
    avg: bool = False
    params: bool = False
    notes: tuple[str, ...] = ()

    @property
    def tasks(self) -> set[str]:
        return {c.task for c in self.columns}


GLUE = ("rte", "mrpc", "stsb", "cola", "sst2", "qnli", "qqp", "mnli")
MAIN_ROWS = "Rows: untagged runs in the paper's setting (DoRA with DEM; DoRA/AdaLoRA start at 1.5x the final budget)."
BY_METHOD_BUDGET = _rows_by(lambda r: (r["method"], r["budget"]))


def _scores(tasks: tuple[str, ...]) -> tuple[Column, ...]:
    """One column per task holding its headline metric ("score"), compared with the paper's column of that name."""
    return tuple(Column(task, task, metric("score"), paper=task) for task in tasks)


TABLES = (
    Table("table2", "Table 2: GLUE dev (paper: RoBERTa-base)", ("Method", "Budget"), main_row, _scores(GLUE),
          "table2_glue_roberta_base", BY_METHOD_BUDGET, avg=True, params=True,
          notes=(MAIN_ROWS, "Scores: MNLI mean of matched/mismatched accuracy, STS-B Pearson, CoLA Matthews, "
                 "others accuracy (x100). Avg: mean of the eight task cells, shown only when all are present.")),
    Table("table3", "Table 3: SQuAD dev EM/F1 (paper: RoBERTa-base)", ("Method", "Budget"), main_row,
          tuple(Column(f"{task} {m.upper()}", task, metric(m), paper=f"{task}_{m}")
                for task in ("squad_v1", "squad_v2") for m in ("em", "f1")),
          "table3_squad_roberta_base", BY_METHOD_BUDGET, params=True,
          notes=(MAIN_ROWS, "EM: metric exact_match (v1) or exact (v2, null threshold as configured); F1: f1.")),
    Table("table4", "Table 4: XSum dev ROUGE (paper: BART-base)", ("Method", "Budget"), main_row,
          tuple(Column(m, "xsum", metric(m), paper=m) for m in ("rouge1", "rouge2", "rougeL")),
          "table4_xsum_bart_base", BY_METHOD_BUDGET, params=True,
          notes=(MAIN_ROWS, "ROUGE F-measure x100; stemming and rougeL variant as in each run's config.task.rouge.")),
    Table("table5", "Table 5: DoRA with and without DEM (paper: large budget)", ("Variant", "Budget"), dem_row,
          _scores(("stsb", "cola", "sst2")), "table5_dem_ablation", _rows_by(lambda r: (r["variant"], "large")),
          notes=("Rows from each run's config: without DEM = DEM weight (reg_coefficient) 0; DoRA runs with the "
                 "default initial budget (1.5x final), any tag.",)),
    Table("table6", "Table 6: DoRA initial budget (paper: final budget 2)", ("Final budget", "Initial budget"),
          initial_budget_row, _scores(("mrpc", "stsb", "sst2")), "table6_initial_budget",
          _rows_by(lambda r: (2, r["initial_budget"])),
          notes=("Rows from each run's config: final budget = budget.rank, initial budget = initial_budget "
                 "(null = ceil(1.5 x final)); DoRA runs with DEM, any tag.",)),
    Table("table9", "Table 9: efficiency on QNLI (paper: RTX 3090)", ("Method", "Budget"), efficiency_row,
          (Column("min/epoch", "qnli", minutes_per_epoch, paper="minutes_per_epoch"),
           Column("min/epoch vs LoRA", "qnli", minutes_per_epoch, paper="minutes_per_epoch", ratio=True),
           Column("peak MiB", "qnli", peak_memory_mb, paper="gpu_memory_mib", digits=0),
           Column("peak MiB vs LoRA", "qnli", peak_memory_mb, paper="gpu_memory_mib", ratio=True)),
          "table9_efficiency", _efficiency_rows, paper_key=lambda key: key[:1],
          notes=("min/epoch: train_runtime_s / epochs trained (includes the per-epoch dev evaluation); resumed "
                 "runs are skipped. peak MiB: max GPU memory allocated, or max RSS of the process on CPU. "
                 "'vs LoRA': ratio of the cells to the LoRA row of the same budget (else of LoRA large). "
                 "Any tag (e.g. the 1-epoch runs of +experiment=table9).",)),
)


# ----- collecting and aggregating ------------------------------------------------------------------
@dataclass
class Cell:
    values: dict[int, float] = field(default_factory=dict)   # seed -> value
    failed: set[int] = field(default_factory=set)
    duplicates: list[Path] = field(default_factory=list)


@dataclass
class Section:
    """One model's part of a table: cells by (row key, column label)."""
    cells: dict[tuple[Key, str], Cell] = field(default_factory=lambda: defaultdict(Cell))
    params: dict[Key, list[int]] = field(default_factory=lambda: defaultdict(list))
    devices: set[str] = field(default_factory=set)
    problems: list[tuple[Path, str]] = field(default_factory=list)


def collect(table: Table, runs: list[Run], opts: Options) -> dict[str, Section]:
    """Runs are sorted by path, so when two files give the same seed the untagged one comes first and wins."""
    sections: dict[str, Section] = defaultdict(Section)
    for run in runs:
        key = table.row_key(run) if run.data["task"] in table.tasks else None
        if key is None:
            continue
        section = sections[run.data["model"]]
        seed = run.data["seed"]
        columns = [c for c in table.columns if c.task == run.data["task"]]
        try:
            values = {c.label: c.value(run, opts) for c in columns} if run.complete else {}
        except Unusable as err:
            section.problems.append((run.path, str(err)))
            continue
        section.devices.add(str((run.data.get("env") or {}).get("device", "?")))
        if run.complete and isinstance((run.data.get("params") or {}).get("trainable_paper"), int):
            section.params[key].append(run.data["params"]["trainable_paper"])
        for column in columns:
            cell = section.cells[key, column.label]
            if not run.complete:
                cell.failed.add(seed)
            elif seed in cell.values:
                cell.duplicates.append(run.path)
            else:
                cell.values[seed] = values[column.label]
    return sections


def aggregate(values: list[float], opts: Options) -> tuple[float, float | None, int] | None:
    if not values:
        return None
    array = np.asarray(values, dtype=float)
    center = float(np.median(array) if opts.agg == "median" else array.mean())
    std = float(array.std(ddof=opts.ddof)) if len(array) > opts.ddof else None
    return center, std, len(array)


# ----- rendering -----------------------------------------------------------------------------------
def fmt_params(count: float) -> str:
    return f"{count / 1e6:.2f}M" if count >= 1e4 else f"{count / 1e3:.1f}K"


def _label(value: Any) -> str:
    if value is None:
        return "—"
    return METHOD_LABELS.get(value, VARIANT_LABELS.get(value, str(value)))


def _sort_key(key: Key) -> tuple:
    return tuple((v is None, isinstance(v, str), v if v is not None else 0) for v in key)


def row_order(table: Table, keys: set[Key], paper: dict[Key, PaperRow]) -> list[Key]:
    """The paper's rows in its order (ours that map to each, else the paper's own key), then rows it lacks."""
    ordered: list[Key] = []
    for paper_key in paper:
        ours = sorted((k for k in keys if table.paper_key(k) == paper_key), key=_sort_key)
        ordered += ours or [paper_key]
    return ordered + sorted((k for k in keys if table.paper_key(k) not in paper), key=_sort_key)


def _cell_text(stats, failed: int, digits: int) -> str:
    if stats is None:
        return f"failed ({failed})" if failed else "—"
    center, std, n = stats
    spread = f" ± {std:.{digits}f}" if std is not None else ""
    return f"{center:.{digits}f}{spread} ({n}{f', {failed} failed' if failed else ''})"


def _paper_text(ours: float | None, ref: float | None, digits: int) -> str:
    if ref is None:
        return "—"
    return f"{ref:.{digits}f}" + (f" ({ours - ref:+.{digits}f})" if ours is not None else "")


def _lora_reference(key: Key, keys: list[Key]) -> Key | None:
    """Ratio denominators (Table 9): LoRA at this row's budget, else at the large one, else any LoRA row."""
    lora = [k for k in keys if k[0] == "lora"]
    for budget in (key[1] if len(key) > 1 else None, "large"):
        if ("lora", budget) in lora:
            return "lora", budget
    return lora[0] if lora else None


def _params_cells(counts: list[int], ref: PaperRow | None) -> list[str]:
    ours = "–".join(dict.fromkeys([fmt_params(min(counts)), fmt_params(max(counts))])) if counts else "—"
    return [ours, (ref.params if ref else None) or "—"]


def render_rows(table: Table, section: Section, paper: dict[Key, PaperRow], opts: Options) -> list[list[str]]:
    keys = row_order(table, {k for k, _ in section.cells} | set(section.params), paper)
    stats = {(k, c.label): aggregate(list(section.cells[k, c.label].values.values()), opts)
             for k in keys for c in table.columns if (k, c.label) in section.cells}

    def center(key: Key | None, column: Column) -> float | None:
        found = stats.get((key, column.label))
        return found[0] if found else None

    paper_lora = next((row for paper_key, row in paper.items() if paper_key[0] == "lora"), None)
    rows = []
    for key in keys:
        ref = paper.get(table.paper_key(key))
        row = [_label(v) for v in key] + [""] * (len(table.key_headers) - len(key))
        row += _params_cells(section.params.get(key, []), ref) if table.params else []
        for column in table.columns:
            ours, theirs = center(key, column), ref.values.get(column.paper) if ref else None
            if column.ratio:  # relative to LoRA, ours and the paper's alike
                base = center(_lora_reference(key, keys), column)
                ours = ours / base if ours is not None and base else None
                theirs = theirs / paper_lora.values[column.paper] if theirs is not None and paper_lora else None
                row += [f"{ours:.2f}" if ours is not None else "—", _paper_text(ours, theirs, 2)]
            else:
                cell = section.cells.get((key, column.label), Cell())
                row += [_cell_text(stats.get((key, column.label)), len(cell.failed - set(cell.values)), column.digits),
                        _paper_text(ours, theirs, column.digits)]
        if table.avg:  # of the task cells, only when every task has one
            parts = [center(key, c) for c in table.columns]
            ours = float(np.mean(parts)) if None not in parts else None
            paper_avg = ref.values.get("avg") if ref else None
            row += [f"{ours:.2f}" if ours is not None else "—", _paper_text(ours, paper_avg, 2)]
        rows.append(row)
    return rows


def markdown_table(headers: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def headers(table: Table) -> list[str]:
    out = list(table.key_headers) + (["Params", "Paper params"] if table.params else [])
    for column in table.columns:
        out += [column.label, "paper (Δ)"]
    return out + (["Avg", "paper (Δ)"] if table.avg else [])


def footnote(table: Table, opts: Options) -> str:
    rule = ("the epoch each run selected (best dev epoch; pruning methods: after pruning ended)"
            if opts.select == "best" else "the last evaluated epoch")
    per_epoch = any(getattr(c.value, "per_epoch", False) for c in table.columns)
    return (f"Cells: {opts.agg} ± std (ddof={opts.ddof}) over seeds (n seeds, 'k failed' = failed seeds, not in "
            f"the {opts.agg}){f'; per-seed value: {rule}' if per_epoch else ''}; — = no result. paper (Δ): the "
            f"paper's number (dora_bench/paper.yaml) and ours minus it."
            + (" Params: trainable parameters, paper convention (task head excluded), over the row's runs."
               if table.params else ""))


def _run_task(path: Path, root: Path) -> tuple[str | None, str | None]:
    """(model, task) from runs/<model>/<task>/...; None where the path is too short to tell."""
    parts = path.relative_to(Path(root) / "runs").parts
    return (parts[0] if len(parts) > 2 else None), (parts[1] if len(parts) > 3 else None)


def render_table(table: Table, runs: list[Run], skipped: list[tuple[Path, str]], paper_doc: dict, opts: Options,
                 root: Path) -> str:
    paper = table.paper_rows(paper_doc[table.paper_section])
    sections = collect(table, runs, opts)
    out = [f"# {table.title}", ""]
    for model in sorted(sections) or [None]:
        section = sections[model] if model else Section()
        out += [f"## model: {model}" if model else "## no results", "",
                markdown_table(headers(table), render_rows(table, section, paper, opts)), ""]
        duplicates = [p for cell in section.cells.values() for p in cell.duplicates]
        out += [f"- devices: {', '.join(sorted(section.devices))}"] if model else []
        out += [f"- ignored {len(duplicates)} file(s) repeating a seed already in their cell, e.g. {duplicates[0]}"
                ] if duplicates else []
        out += [f"- skipped {path}: {reason}" for path, reason in section.problems] + [""]
    out += ["Notes:", f"- {footnote(table, opts)}"] + [f"- {note}" for note in table.notes]
    unreadable = [(p, r) for p, r in skipped if _run_task(p, root)[1] in table.tasks | {None}]
    if unreadable:
        out += ["", "Skipped files (not read):"] + [f"- {path}: {reason}" for path, reason in unreadable]
    return "\n".join(out) + "\n"


# ----- Figure 2: kept components per matrix type and layer -------------------------------------------
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
        labels = sorted({label for label, _ in self.counts}, key=ROW_ORDER.index)
        layers = sorted({layer for _, layer in self.counts})
        grid = np.full((len(labels), len(layers)), np.nan)
        for (label, layer), values in self.counts.items():
            grid[labels.index(label), layers.index(layer)] = np.mean(values)
        return labels, layers, grid


def figure_panels(runs: list[Run]) -> tuple[dict[tuple, Panel], str]:
    """Panels keyed (model, method, task, final budget) from SST-2 runs, or from every task if none is SST-2."""
    usable = [r for r in runs if r.complete and r.data["method"] in ("dora", "adalora") and main_row(r)
              and isinstance((r.data.get("method_summary") or {}).get("rank_pattern"), dict)
              and r.data["method_summary"]["rank_pattern"]]
    sst2 = [r for r in usable if r.data["task"] == "sst2"]
    note = "SST-2 runs." if sst2 or not usable else (
        f"no SST-2 runs with rank patterns: fell back to {', '.join(sorted({r.data['task'] for r in usable}))}.")
    panels: dict[tuple, Panel] = defaultdict(Panel)
    for run in sst2 or usable:
        panel = panels[run.data["model"], run.data["method"], run.data["task"], final_rank(run)]
        panel.seeds.append(run.data["seed"])
        for name, value in run.data["method_summary"]["rank_pattern"].items():
            where = matrix_of(name)
            if where is None:
                panel.unknown.add(name)
            else:
                panel.counts[where].append(_kept(value))
    # DoRA first (the figure's subject), then AdaLoRA; within a method by model, task, budget.
    return dict(sorted(panels.items(), key=lambda kv: (kv[0][1] != "dora", _sort_key(kv[0])))), note


def _panel_title(key: tuple, panel: Panel) -> str:
    model, method, task, rank = key
    return f"{_label(method)}, final budget {rank}: {task}, {model}, seeds {sorted(panel.seeds)}"


def render_figure_md(panels: dict[tuple, Panel], note: str) -> str:
    out = ["# Figure 2: kept components per adapted matrix and layer", "",
           "Components kept after the final pruning (method_summary.rank_pattern), mean over seeds; rows: matrix "
           "type (Wf1/Wf2: FFN up/down projection; BART: enc/dec self-attention, cross attention), columns: "
           f"layer (1 = first). Untagged DoRA/AdaLoRA runs in the paper's setting; {note}", ""]
    for key, panel in panels.items():
        labels, layers, grid = panel.matrix()
        rows = [[label, *(f"{v:.1f}" for v in grid[i]), f"{np.nansum(grid[i]):.1f}"] for i, label in enumerate(labels)]
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
        ax.set_title(f"{_label(key[1])} b(T)={key[3]} ({key[2]}, {key[0]})", fontsize=9)
        if grid.size <= 300:  # numbers stay readable up to about a 12-layer encoder
            for (i, j), value in np.ndenumerate(grid):
                if not np.isnan(value):
                    ax.text(j, i, f"{value:.1f}", ha="center", va="center", fontsize=6)
        fig.colorbar(image, ax=ax, fraction=0.046)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ----- command line ----------------------------------------------------------------------------------
def load_runs(root: Path) -> tuple[list[Run], list[tuple[Path, str]]]:
    """Readable results with the fields every table needs; everything else is listed with its reason."""
    runs, skipped = [], []
    for path, data, problem in iter_results(root):
        if problem:
            skipped.append((path, problem.removeprefix(f"{path}: ")))
        elif data["status"] not in ("complete", "failed"):
            skipped.append((path, f"status {data['status']!r}"))
        elif missing := [k for k in ("task", "method", "model", "seed") if k not in data]:
            skipped.append((path, f"missing {', '.join(missing)}"))
        else:
            runs.append(Run(path, data))
    return runs, skipped


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="dora-bench-tables", description=__doc__.splitlines()[0])
    parser.add_argument("--results", default="results", help="results directory (holding runs/); default: results")
    parser.add_argument("--out", default=None, help="output directory; default: <results>/tables")
    parser.add_argument("--model", default=None, help="only this model (default: every model, one section each)")
    parser.add_argument("--agg", choices=("mean", "median"), default="mean", help="across seeds (default: mean)")
    parser.add_argument("--ddof", type=int, choices=(0, 1), default=0, help="std ddof (default 0, population)")
    parser.add_argument("--select", choices=("best", "last"), default="best",
                        help="per-seed value: the run's selected epoch (best) or its last epoch")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    root = Path(args.results)
    if not (root / "runs").is_dir():
        print(f"dora-bench-tables: error: no results under {root / 'runs'} (use --results DIR)", file=sys.stderr)
        return 2
    out = Path(args.out) if args.out else root / "tables"
    out.mkdir(parents=True, exist_ok=True)
    opts = Options(agg=args.agg, ddof=args.ddof, select=args.select)
    runs, skipped = load_runs(root)
    if args.model:
        runs = [r for r in runs if r.data["model"] == args.model]
        skipped = [(p, why) for p, why in skipped if _run_task(p, root)[0] in (args.model, None)]
    paper = load_paper()
    for table in TABLES:
        (out / f"{table.name}.md").write_text(render_table(table, runs, skipped, paper, opts, root), encoding="utf-8")
    panels, note = figure_panels(runs)
    (out / "figure2.md").write_text(render_figure_md(panels, note), encoding="utf-8")
    render_figure_png(panels, out / "figure2.png")
    print(f"[dora-bench-tables] {len(runs)} result file(s) read, {len(skipped)} skipped; wrote "
          f"{', '.join(t.name for t in TABLES)}, figure2 to {out}")
    for path, reason in skipped:
        print(f"[dora-bench-tables] skipped {path}: {reason}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
