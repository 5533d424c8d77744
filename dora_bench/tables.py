"""`dora-bench-tables`: result files -> the paper's tables (markdown) and Figure 2, beside the paper's numbers.

Result files are the only input; nothing is re-run and nothing is filled in. A table is data (`Table`):
which task and value fill each column, how a result file picks its row, which section of
`paper.yaml` holds the reference numbers. One renderer draws every table.

Sweeps: configurations that differ only in a searched key (SEARCHED, the paper's Appendix E search)
share a cell, which shows the one with the best mean dev score over its seeds (footnoted); runs that
differ in any other key get a section of their own, titled by those values. `--sweeps` lists them all.
"""
from __future__ import annotations

import argparse
import functools
import math
import re
import sys
from collections import defaultdict
from dataclasses import dataclass, field, replace
from importlib.resources import files
from pathlib import Path
from typing import Any, Callable

import numpy as np
import yaml

from dora_bench.results import ABSENT, RunResult, fingerprint, iter_results, leaves, value_text, variant

Key = tuple  # a row key, e.g. ("lora", "small")

METHOD_LABELS = {"full_ft": "Full FT", "bitfit": "BitFit", "h_adapter": "H-Adapter", "p_adapter": "P-Adapter",
                 "lora": "LoRA", "adalora": "AdaLoRA", "dora": "DoRA"}
VARIANT_LABELS = {"with_dem": "with DEM", "without_dem": "without DEM"}
# Table metric name -> keys accepted in a result's metrics (SQuAD v1 writes exact_match, v2 exact).
METRIC_KEYS = {"em": ("exact_match", "exact"), "rougeL": ("rougeL", "rougeLsum")}
# Where a pruning method keeps its initial budget (DoRA: b(0); AdaLoRA: init_r); null means 1.5x final.
INITIAL_BUDGET_KEYS = ("initial_budget", "init_r")
# The paper "searched" these (Appendix E, values in Table 8): configurations differing only here share a
# cell and the best mean dev score picks one. `--searched` changes the list.
SEARCHED = ("trainer.learning_rate", "trainer.batch_size", "trainer.epochs", "method.reg_coefficient",
            "method.prune_interval", "method.delta_t")
# Keys the rows already account for (Table 6 rows are initial budgets, null counting as 1.5x final; the
# other tables take only the default start), so they never split a section or a cell; nor does the tag.
ROW_KEYS = ("tag", *(f"method.{k}" for k in INITIAL_BUDGET_KEYS))


def _section_item(key: str, value: Any) -> str:
    """`key=value` in a section title. The data digest differs per task by nature (each task reads its own
    files), so it says only that local files were read: the tasks of one local-data sweep share a section."""
    if key == "data.sha256":
        return "data=local files"
    return f"{key}={'<absent>' if value is ABSENT else value_text(value)}"


class Unusable(ValueError):
    """A complete result file that lacks what a table needs; reported under the table, never fatal."""


@dataclass(frozen=True)
class Options:
    agg: str = "mean"      # across seeds: mean | median
    ddof: int = 0          # std: 0 = population (the convention), 1 = sample
    select: str = "best"   # per seed: best dev epoch (pruning methods: after pruning ended) | last epoch
    searched: tuple[str, ...] = SEARCHED


@dataclass(frozen=True)
class Run:
    path: Path
    result: RunResult

    @functools.cached_property
    def values(self) -> dict[str, Any]:
        """The identity as dotted keys: `trainer.learning_rate`, `method.reg_coefficient`, ..."""
        return leaves(self.result.identity)

    def value(self, key: str) -> Any:
        """A config value of this run; None when its config has no such key."""
        return self.values.get(key)

    @property
    def complete(self) -> bool:
        return self.result.complete

    def section_label(self, opts: Options) -> str:
        """The values (other than searched and row keys) that differ from its defaults: `''` for a run in
        its defaults' configuration; `config <hash>` when those defaults cannot be composed here."""
        changed = variant(self.result.identity)
        if changed is None:
            return f"config {self.config_key()[:8]}"
        return ", ".join(_section_item(k, v) for k, v in sorted(changed.items())
                         if k not in opts.searched and k not in ROW_KEYS)

    def config_key(self) -> str:
        """Runs with one key are seeds of one configuration, as far as the tables can tell."""
        kept = {k: v for k, v in self.values.items() if k != "seed" and k not in ROW_KEYS}
        return fingerprint(kept)

    def searched(self, opts: Options) -> dict[str, Any]:
        return {k: self.values[k] for k in opts.searched if k in self.values}


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
        return run.result.select(opts.select).metrics
    except ValueError as err:
        raise Unusable(str(err)) from None


def dev_score(run: Run, opts: Options) -> float:
    """What picks a configuration in a cell: the run's headline dev score under the per-seed rule."""
    return _finite(_epoch_metrics(run, opts)["score"], "dev score")


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
    if run.result.train is not None and run.result.train.resumed_from:
        raise Unusable("resumed run: its train_runtime_s covers only the part after the restart")
    runtime = _finite(run.result.timing.train_runtime_s, "timing.train_runtime_s")
    epochs = len(run.result.epochs) or run.value("trainer.epochs")
    return runtime / _finite(epochs, "number of epochs") / 60


def peak_memory_mb(run: Run, opts: Options) -> float:
    return _finite(run.result.timing.peak_memory_mb, "timing.peak_memory_mb")


# ----- which row a result file belongs to (from its resolved config) ---------------------------------
def method_option(run: Run, name: str) -> Any:
    return run.value(f"method.{name}")


def final_rank(run: Run) -> int | None:
    return run.value("budget.rank")


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
        eta = run.value("task.reg_coefficient")
    return eta is None or float(eta) > 0


def default_start(run: Run) -> bool:
    """Pruning methods start at 1.5x the final budget unless configured otherwise (Table 6 varies it)."""
    rank = final_rank(run)
    return rank is None or initial_budget(run) == math.ceil(1.5 * rank)


def paper_setting(run: Run) -> bool:
    """The main tables' configuration: DoRA/AdaLoRA with the default start; DoRA with DEM."""
    method = run.result.method
    return method not in ("dora", "adalora") or (default_start(run) and (method != "dora" or dem_on(run)))


def main_row(run: Run) -> Key | None:
    """Tables 2-4: untagged runs (experiments tag the variants they add) in the paper's setting."""
    if run.result.tag or not paper_setting(run):
        return None
    return run.result.method, run.result.budget


def dem_row(run: Run) -> Key | None:
    if run.result.method != "dora" or not default_start(run):
        return None
    return "with_dem" if dem_on(run) else "without_dem", run.result.budget


def initial_budget_row(run: Run) -> Key | None:
    if run.result.method != "dora" or not dem_on(run):
        return None
    return final_rank(run), initial_budget(run)


def efficiency_row(run: Run) -> Key | None:
    return (run.result.method, run.result.budget) if paper_setting(run) else None


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
    searches: bool = True   # False: a measurement, not a dev score; no configuration is picked over another

    @property
    def tasks(self) -> set[str]:
        return {c.task for c in self.columns}

    def options(self, opts: Options) -> Options:
        return opts if self.searches else replace(opts, searched=())


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
                 "Any tag (e.g. the 1-epoch runs of +experiment=table9); runs of other epochs or learning rates get "
                 "sections of their own (an efficiency table picks no configuration by dev score).",),
          searches=False),
)


# ----- collecting, picking and aggregating ----------------------------------------------------------
@dataclass
class Config:
    """One configuration in one cell (row, task): dev score and column values of each of its seeds."""
    searched: dict[str, Any]
    folder: Path                                                # where its (first) result file is
    scores: dict[int, float] = field(default_factory=dict)      # seed -> dev score
    values: dict[str, dict[int, float]] = field(default_factory=lambda: defaultdict(dict))  # column -> seed -> value
    failed: set[int] = field(default_factory=set)
    duplicates: list[Path] = field(default_factory=list)
    params: list[int] = field(default_factory=list)
    runs: list[Run] = field(default_factory=list)

    def add(self, run: Run, score: float | None, values: dict[str, float]) -> None:
        seed = run.result.seed
        if not run.complete:
            self.failed.add(seed)
        elif seed in self.scores:
            self.duplicates.append(run.path)   # one configuration and seed twice (e.g. under two tags)
        else:
            self.scores[seed] = score
            for label, value in values.items():
                self.values[label][seed] = value
            if run.result.params is not None:
                self.params.append(run.result.params.trainable_paper)
            self.runs.append(run)

    @property
    def still_failed(self) -> set[int]:
        """Failed seeds that no complete run of this configuration replaced."""
        return self.failed - set(self.scores)

    def mean_score(self) -> float:
        return float(np.mean(list(self.scores.values()))) if self.scores else -math.inf


@dataclass
class Cell:
    """Every configuration of one (row, task) in a section; the table shows the chosen one."""
    configs: dict[str, Config] = field(default_factory=dict)

    def chosen(self) -> Config | None:
        """Best mean dev score over seeds (ties: more seeds, then the first by path); None: no seed completed."""
        scored = [c for c in self.configs.values() if c.scores]
        return max(scored, key=lambda c: (c.mean_score(), len(c.scores))) if scored else None

    def failed(self) -> set[int]:
        chosen = self.chosen()
        return chosen.still_failed if chosen else set().union(*(c.still_failed for c in self.configs.values()))


SectionKey = tuple  # (model, label of the values that differ from the defaults; '' for none)


@dataclass
class Section:
    """One model's part of a table, for one set of non-searched values: cells by (row key, task)."""
    cells: dict[tuple[Key, str], Cell] = field(default_factory=lambda: defaultdict(Cell))
    devices: set[str] = field(default_factory=set)
    problems: list[tuple[Path, str]] = field(default_factory=list)


def collect(table: Table, runs: list[Run], opts: Options) -> dict[SectionKey, Section]:
    """Runs are sorted by path, so when one configuration has a seed twice the untagged file comes first and wins."""
    sections: dict[SectionKey, Section] = defaultdict(Section)
    for run in runs:
        key = table.row_key(run) if run.result.task in table.tasks else None
        if key is None:
            continue
        section = sections[run.result.model, run.section_label(opts)]
        columns = [c for c in table.columns if c.task == run.result.task]
        try:
            score = dev_score(run, opts) if run.complete else None
            values = {c.label: c.value(run, opts) for c in columns} if run.complete else {}
        except Unusable as err:
            section.problems.append((run.path, str(err)))
            continue
        section.devices.add(str(run.result.env.get("device", "?")))
        configs = section.cells[key, run.result.task].configs
        configs.setdefault(run.config_key(), Config(run.searched(opts), run.path.parent)).add(run, score, values)
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
    keys = row_order(table, {k for k, _ in section.cells}, paper)
    chosen = {where: cell.chosen() for where, cell in section.cells.items()}
    stats = {(k, c.label): aggregate(list(chosen[k, c.task].values[c.label].values()), opts)
             for k in keys for c in table.columns if chosen.get((k, c.task))}

    def center(key: Key | None, column: Column) -> float | None:
        found = stats.get((key, column.label))
        return found[0] if found else None

    paper_lora = next((row for paper_key, row in paper.items() if paper_key[0] == "lora"), None)
    rows = []
    for key in keys:
        ref = paper.get(table.paper_key(key))
        row = [_label(v) for v in key] + [""] * (len(table.key_headers) - len(key))
        counts = [n for (k, _), config in chosen.items() if k == key and config for n in config.params]
        row += _params_cells(counts, ref) if table.params else []
        for column in table.columns:
            ours, theirs = center(key, column), ref.values.get(column.paper) if ref else None
            if column.ratio:  # relative to LoRA, ours and the paper's alike
                base = center(_lora_reference(key, keys), column)
                ours = ours / base if ours is not None and base else None
                theirs = theirs / paper_lora.values[column.paper] if theirs is not None and paper_lora else None
                row += [f"{ours:.2f}" if ours is not None else "—", _paper_text(ours, theirs, 2)]
            else:
                cell = section.cells.get((key, column.task), Cell())
                row += [_cell_text(stats.get((key, column.label)), len(cell.failed()), column.digits),
                        _paper_text(ours, theirs, column.digits)]
        if table.avg:  # of the task cells, only when every task has one
            parts = [center(key, c) for c in table.columns]
            ours = float(np.mean(parts)) if None not in parts else None
            paper_avg = ref.values.get("avg") if ref else None
            row += [f"{ours:.2f}" if ours is not None else "—", _paper_text(ours, paper_avg, 2)]
        rows.append(row)
    return rows


def _cells_in_order(section: Section) -> list[tuple[tuple[Key, str], Cell]]:
    return sorted(section.cells.items(), key=lambda item: (_sort_key(item[0][0]), item[0][1]))


def search_notes(section: Section, opts: Options) -> list[str]:
    """Under a section: which configuration each cell with several shows, and what it was chosen from."""
    notes = []
    for (key, task), cell in _cells_in_order(section):
        if len(cell.configs) < 2:
            continue
        where = f"{' '.join(_label(v) for v in key)} · {task}"
        best = cell.chosen()
        if best is None:
            notes.append(f"- {where}: none of its {len(cell.configs)} configurations completed a seed")
            continue
        differing = [k for k in opts.searched
                     if len({value_text(c.searched.get(k)) for c in cell.configs.values()}) > 1]
        chosen = ", ".join(f"{k}={value_text(best.searched.get(k))}" for k in differing)
        notes.append(f"- {where}: {chosen or 'one of identical searched values'}, best mean dev score "
                     f"{best.mean_score():.2f} (n={len(best.scores)}) of {len(cell.configs)} configurations")
    return notes


def markdown_table(headers: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def headers(table: Table) -> list[str]:
    out = list(table.key_headers) + (["Params", "Paper params"] if table.params else [])
    for column in table.columns:
        out += [column.label, "paper (Δ)"]
    return out + (["Avg", "paper (Δ)"] if table.avg else [])


def footnote(table: Table, opts: Options) -> str:
    rule = ("the best dev epoch (pruning methods: after pruning ended)"
            if opts.select == "best" else "the last evaluated epoch")
    per_epoch = any(getattr(c.value, "per_epoch", False) for c in table.columns)
    return (f"Cells: {opts.agg} ± std (ddof={opts.ddof}) over seeds (n seeds, 'k failed' = failed seeds, not in "
            f"the {opts.agg}){f'; per-seed value: {rule}' if per_epoch else ''}; — = no result. paper (Δ): the "
            f"paper's number (dora_bench/paper.yaml) and ours minus it."
            + (" Params: trainable parameters, paper convention (task head excluded), over the row's runs."
               if table.params else ""))


def sweep_footnote(opts: Options) -> str:
    searched = ", ".join(opts.searched) or "none"
    return (f"Sweeps: configurations that differ only in searched keys ({searched}) share a cell, which shows "
            f"the one with the best mean dev score over its seeds (chosen values listed under the section; "
            f"`dora-bench-tables --sweeps` lists every configuration). Runs that differ in any other key from "
            f"the defaults of their model, task, method and budget get a section of their own, titled by "
            f"those values.")


def _run_task(path: Path, root: Path) -> tuple[str | None, str | None]:
    """(model, task) from runs/<model>/<task>/...; None where the path is too short to tell."""
    parts = path.relative_to(Path(root) / "runs").parts
    return (parts[0] if len(parts) > 2 else None), (parts[1] if len(parts) > 3 else None)


def section_title(key: SectionKey) -> str:
    model, label = key
    return f"model: {model}" + (f" — {label}" if label else "")


def render_table(table: Table, runs: list[Run], skipped: list[tuple[Path, str]], paper_doc: dict, opts: Options,
                 root: Path) -> str:
    opts = table.options(opts)
    paper = table.paper_rows(paper_doc[table.paper_section])
    sections = collect(table, runs, opts)
    out = [f"# {table.title}", ""]
    for key in sorted(sections) or [None]:
        section = sections[key] if key else Section()
        out += [f"## {section_title(key)}" if key else "## no results", "",
                markdown_table(headers(table), render_rows(table, section, paper, opts)), ""]
        duplicates = [p for cell in section.cells.values() for c in cell.configs.values() for p in c.duplicates]
        out += [f"- devices: {', '.join(sorted(section.devices))}"] if key else []
        out += search_notes(section, opts)
        out += [f"- ignored {len(duplicates)} file(s) repeating a seed already in their cell, e.g. {duplicates[0]}"
                ] if duplicates else []
        out += [f"- skipped {path}: {reason}" for path, reason in section.problems] + [""]
    out += ["Notes:", f"- {footnote(table, opts)}", f"- {sweep_footnote(opts)}"] + [f"- {note}" for note in table.notes]
    unreadable = [(p, r) for p, r in skipped if _run_task(p, root)[1] in table.tasks | {None}]
    if unreadable:
        out += ["", "Skipped files (not read):"] + [f"- {path}: {reason}" for path, reason in unreadable]
    return "\n".join(out) + "\n"


def render_sweeps(runs: list[Run], opts: Options, root: Path) -> str:
    """Every configuration of every table cell: searched values, dev score over seeds, failures, folder."""
    out = ["# Sweeps: every configuration of each table cell", "",
           f"Dev score: the headline metric per seed ({opts.select} epoch rule), {opts.agg} ± std (ddof={opts.ddof}) "
           f"(n seeds). ✓ = the configuration the table shows (best mean dev score over seeds). Searched keys: "
           f"{', '.join(opts.searched) or 'none'}.", ""]
    for table in TABLES:
        sections = collect(table, runs, table.options(opts))
        for key in sorted(k for k, section in sections.items() if section.cells):
            section = sections[key]
            searched = [k for k in opts.searched
                        if any(k in c.searched for cell in section.cells.values() for c in cell.configs.values())]
            rows = []
            for (row_key, task), cell in _cells_in_order(section):
                best = cell.chosen()
                for config in sorted(cell.configs.values(), key=lambda c: -c.mean_score()):
                    stats = aggregate(list(config.scores.values()), opts)
                    labels = [_label(v) for v in row_key] + [""] * (len(table.key_headers) - len(row_key))
                    rows.append([*labels, task, "✓" if config is best else "",
                                 *(value_text(config.searched[k]) if k in config.searched else "—" for k in searched),
                                 _cell_text(stats, 0, 2), str(len(config.still_failed)),
                                 str(config.folder.relative_to(root)) if config.folder.is_relative_to(root)
                                 else str(config.folder)])
            columns = [*table.key_headers, "task", "shown", *searched,
                       "dev score", "failed", "folder"]
            out += [f"## {table.title} — {section_title(key)}", "", markdown_table(columns, rows), ""]
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


def figure_panels(runs: list[Run], opts: Options) -> tuple[dict[tuple, Panel], str]:
    """Panels keyed (model, section label, method, task, final budget) from SST-2 runs, or from every task if
    none is SST-2; of several configurations of a panel, the one with the best mean dev score (as in the tables)."""
    usable = [r for r in runs if r.complete and r.result.method in ("dora", "adalora") and main_row(r)
              and isinstance(r.result.method_summary.get("rank_pattern"), dict)
              and r.result.method_summary["rank_pattern"]]
    sst2 = [r for r in usable if r.result.task == "sst2"]
    note = "SST-2 runs." if sst2 or not usable else (
        f"no SST-2 runs with rank patterns: fell back to {', '.join(sorted({r.result.task for r in usable}))}.")
    cells: dict[tuple, Cell] = defaultdict(Cell)
    for run in sst2 or usable:
        try:
            score = dev_score(run, opts)
        except Unusable:
            continue   # the tables list it; a panel needs a score to pick its configuration
        key = (run.result.model, run.section_label(opts), run.result.method, run.result.task, final_rank(run))
        cells[key].configs.setdefault(run.config_key(), Config(run.searched(opts), run.path.parent)).add(run, score, {})
    panels: dict[tuple, Panel] = defaultdict(Panel)
    for key, cell in cells.items():
        for run in cell.chosen().runs:
            panel = panels[key]
            panel.seeds.append(run.result.seed)
            for name, value in run.result.method_summary["rank_pattern"].items():
                where = matrix_of(name)
                if where is None:
                    panel.unknown.add(name)
                else:
                    panel.counts[where].append(_kept(value))
    # DoRA first (the figure's subject), then AdaLoRA; within a method by model, task, budget.
    return dict(sorted(panels.items(), key=lambda kv: (kv[0][2] != "dora", _sort_key(kv[0])))), note


def _panel_title(key: tuple, panel: Panel) -> str:
    model, label, method, task, rank = key
    return (f"{_label(method)}, final budget {rank}: {task}, {model}, seeds {sorted(panel.seeds)}"
            + (f" ({label})" if label else ""))


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
        ax.set_title(f"{_label(key[2])} b(T)={key[4]} ({key[3]}, {key[0]})", fontsize=9)
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
    """Readable results (schema 1 migrated on read); everything else is listed with its reason."""
    runs, skipped = [], []
    for path, result, problem in iter_results(root):
        if problem:
            skipped.append((path, problem.removeprefix(f"{path}: ")))
        else:
            runs.append(Run(path, result))
    return runs, skipped


def _key_list(text: str) -> tuple[str, ...]:
    keys = tuple(k.strip() for k in text.split(",") if k.strip())
    for key in keys:
        if not re.fullmatch(r"[A-Za-z_][\w-]*(\.[A-Za-z_][\w-]*)*", key):
            raise argparse.ArgumentTypeError(f"{key!r} is not a dotted config key (e.g. trainer.learning_rate)")
    return keys


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="dora-bench-tables", description=__doc__.splitlines()[0])
    parser.add_argument("--results", default="results", help="results directory (holding runs/); default: results")
    parser.add_argument("--out", default=None, help="output directory; default: <results>/tables")
    parser.add_argument("--model", default=None, help="only this model (default: every model, one section each)")
    parser.add_argument("--agg", choices=("mean", "median"), default="mean", help="across seeds (default: mean)")
    parser.add_argument("--ddof", type=int, choices=(0, 1), default=0, help="std ddof (default 0, population)")
    parser.add_argument("--select", choices=("best", "last"), default="best",
                        help="per-seed value: the best dev epoch (pruning methods: after pruning ended) or the last")
    parser.add_argument("--searched", type=_key_list, default=SEARCHED, metavar="KEY,KEY",
                        help="config keys a cell picks its best configuration over (other differing keys get "
                             f"sections of their own); default: {','.join(SEARCHED)}; '' for none")
    parser.add_argument("--sweeps", action="store_true",
                        help="also list every configuration of each cell (mean ± std, n): sweeps.md, printed")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
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
        skipped = [(p, why) for p, why in skipped if _run_task(p, root)[0] in (args.model, None)]
    for key in (k for k in opts.searched if opts.searched != SEARCHED and not any(k in r.values for r in runs)):
        print(f"[dora-bench-tables] warning: searched key {key} is in no result's config", file=sys.stderr)
    paper = load_paper()
    for table in TABLES:
        (out / f"{table.name}.md").write_text(render_table(table, runs, skipped, paper, opts, root), encoding="utf-8")
    panels, note = figure_panels(runs, opts)
    (out / "figure2.md").write_text(render_figure_md(panels, note), encoding="utf-8")
    render_figure_png(panels, out / "figure2.png")
    written = [t.name for t in TABLES] + ["figure2"]
    if args.sweeps:
        sweeps = render_sweeps(runs, opts, root)
        (out / "sweeps.md").write_text(sweeps, encoding="utf-8")
        print(sweeps)
        written.append("sweeps")
    print(f"[dora-bench-tables] {len(runs)} result file(s) read, {len(skipped)} skipped; wrote "
          f"{', '.join(written)} to {out}")
    for path, reason in skipped:
        print(f"[dora-bench-tables] skipped {path}: {reason}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
