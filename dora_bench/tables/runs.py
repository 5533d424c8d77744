"""Reading result files for the tables: one `Run` per file, the values a table takes from it, and what the run
recorded about its method (initial budget, DEM weight) that decides its row."""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from dora_bench.dora.config import default_initial_budget
from dora_bench.results import ABSENT, RunResult, fingerprint, iter_results, leaves, value_text, variant

Key = tuple  # a row key, e.g. ("lora", "small")

# The paper "searched" these (Appendix E, values in Table 8): configurations differing only here share a
# cell and the best mean dev score picks one. `--searched` changes the list.
SEARCHED = ("trainer.learning_rate", "trainer.batch_size", "trainer.epochs", "method.reg_coefficient",
            "method.prune_interval", "method.delta_t")
# Where a pruning method's config holds its initial budget (DoRA: b(0); AdaLoRA: init_r); null: the default start.
INITIAL_BUDGET_KEYS = ("initial_budget", "init_r")
# Keys the rows already account for (Table 6 rows are initial budgets, the other tables take only the default
# start), so they never split a section or a cell; nor does the tag.
ROW_KEYS = ("tag", *(f"method.{k}" for k in INITIAL_BUDGET_KEYS))
# Table metric name -> keys accepted in a result's metrics (SQuAD v1 writes exact_match, v2 exact).
METRIC_KEYS = {"em": ("exact_match", "exact"), "rougeL": ("rougeL", "rougeLsum")}


class Unusable(ValueError):
    """A complete result file that lacks what a table needs; reported under the table, never fatal."""


@dataclass(frozen=True)
class Options:
    agg: str = "mean"      # across seeds: mean | median
    ddof: int = 0          # std: 0 = population (the convention), 1 = sample
    select: str = "best"   # per seed: best dev epoch (pruning methods: after pruning ended) | last epoch
    searched: tuple[str, ...] = SEARCHED


def _section_item(key: str, value: Any) -> str:
    """`key=value` in a section title. The data digest differs per task by nature (each task reads its own
    files), so it says only that local files were read: the tasks of one local-data sweep share a section."""
    if key == "data.sha256":
        return "data=local files"
    return f"{key}={'<absent>' if value is ABSENT else value_text(value)}"


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


def load_runs(root: Path) -> tuple[list[Run], list[tuple[Path, str]]]:
    """Readable results (schema 1 migrated on read); everything else is listed with its reason."""
    runs, skipped = [], []
    for path, result, problem in iter_results(root):
        if problem:
            skipped.append((path, problem.removeprefix(f"{path}: ")))
        else:
            runs.append(Run(path, result))
    return runs, skipped


# ----- values read from one result file --------------------------------------------------------------
def finite(value: Any, what: str) -> float:
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
    return finite(_epoch_metrics(run, opts)["score"], "dev score")


def metric(name: str) -> Callable[[Run, Options], float]:
    def value(run: Run, opts: Options) -> float:
        metrics = _epoch_metrics(run, opts)
        for key in METRIC_KEYS.get(name, (name,)):
            if key in metrics:
                return finite(metrics[key], f"metric {key}")
        raise Unusable(f"no {name!r} metric (has {', '.join(sorted(metrics))})")
    value.per_epoch = True  # --select applies (footnoted); a score: searched, compared, plotted against cost
    return value


def minutes_per_epoch(run: Run, opts: Options) -> float:
    if run.result.train is not None and run.result.train.resumed_from:
        raise Unusable("resumed run: its train_runtime_s covers only the part after the restart")
    runtime = finite(run.result.timing.train_runtime_s, "timing.train_runtime_s")
    epochs = len(run.result.epochs) or run.value("trainer.epochs")
    return runtime / finite(epochs, "number of epochs") / 60


def peak_memory_mb(run: Run, opts: Options) -> float:
    return finite(run.result.timing.peak_memory_mb, "timing.peak_memory_mb")


# ----- what a run measured of its cost (None where a run has no such measurement) ------------------------------
def comparable_peak_mb(run: Run) -> float | None:
    """The run's own peak; None for a CPU result that recorded only its process's lifetime peak (written before
    peaks were reset per run: in a multirun it includes the jobs before it, so it compares with nothing)."""
    timing = run.result.timing
    if timing.peak_memory_scope != "run" and run.result.env.get("device", "cpu") == "cpu":
        return None
    return timing.peak_memory_mb


def _recorded(value: Any) -> float | None:
    number = value if isinstance(value, (int, float)) and not isinstance(value, bool) else None
    return float(number) if number is not None and math.isfinite(number) else None


def measured(read: Callable[[Run], Any]) -> Callable[[Run, Options], float | None]:
    """A table column of what a run measured (not a dev score: never searched over nor compared); None where the
    run recorded none (a run that trains nothing has no step time, Full FT exports no adapter)."""
    return lambda run, opts: _recorded(read(run))


peak_memory = measured(comparable_peak_mb)
step_time_s = measured(lambda run: run.result.timing.step_time_median_s)
train_tokens_per_s = measured(lambda run: run.result.timing.train_tokens_per_s)
adapter_mib = measured(lambda run: run.result.adapter_bytes / 2**20 if run.result.adapter_bytes else None)


# ----- what a run recorded about its method (the rows it belongs to) ------------------------------------
def final_rank(run: Run) -> int | None:
    return run.value("budget.rank")


def initial_budget(run: Run) -> int | None:
    """The initial budget the run started at, as its method recorded it (DoRA: initial_budget, AdaLoRA: init_r);
    for results without that record (written before it, or made up by tests), its config, and where the config
    leaves it null, the methods' own default rule."""
    summary = run.result.method_summary or {}
    for key in INITIAL_BUDGET_KEYS:
        if summary.get(key) is not None:
            return int(summary[key])
        if run.value(f"method.{key}") is not None:
            return int(run.value(f"method.{key}"))
    rank = final_rank(run)
    return default_initial_budget(rank) if rank is not None else None


def dem_on(run: Run) -> bool:
    """DEM weight eta > 0, as DoRA recorded it (method_summary.reg_coefficient), else as its resolved config holds
    it; a result with neither (not a DoRA run, or an old layout) counts as the default, on."""
    eta = (run.result.method_summary or {}).get("reg_coefficient")
    if eta is None:
        eta = run.value("method.reg_coefficient")
    return eta is None or float(eta) > 0


def default_start(run: Run) -> bool:
    """Pruning methods start at the default initial budget unless configured otherwise (Table 6 varies it)."""
    rank = final_rank(run)
    return rank is None or initial_budget(run) == default_initial_budget(rank)


def paper_setting(run: Run) -> bool:
    """The main tables' configuration: DoRA/AdaLoRA with the default start; DoRA with DEM."""
    method = run.result.method
    return method not in ("dora", "adalora") or (default_start(run) and (method != "dora" or dem_on(run)))
