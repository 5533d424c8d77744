"""The paper's tables: 2 (GLUE), 3 (SQuAD), 4 (XSum), 5 (DEM ablation), 6 (initial budget), 9 (efficiency)."""
from __future__ import annotations

from dora_bench.tables.paper import efficiency_rows, rows_by
from dora_bench.tables.runs import (Key, Run, dem_on, default_start, final_rank, initial_budget, metric,
                                    minutes_per_epoch, paper_setting, peak_memory_mb)
from dora_bench.tables.spec import Column, Table

GLUE = ("rte", "mrpc", "stsb", "cola", "sst2", "qnli", "qqp", "mnli")
MAIN_ROWS = "Rows: untagged runs in the paper's setting (DoRA with DEM; DoRA/AdaLoRA start at 1.5x the final budget)."
BY_METHOD_BUDGET = rows_by(lambda r: (r["method"], r["budget"]))


# ----- which row a result file belongs to (from what it recorded) -------------------------------------
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
          _scores(("stsb", "cola", "sst2")), "table5_dem_ablation", rows_by(lambda r: (r["variant"], "large")),
          notes=("Rows from what each run recorded (method_summary, else its config): without DEM = DEM weight "
                 "(reg_coefficient) 0; DoRA runs with the default initial budget (1.5x final), any tag.",)),
    Table("table6", "Table 6: DoRA initial budget (paper: final budget 2)", ("Final budget", "Initial budget"),
          initial_budget_row, _scores(("mrpc", "stsb", "sst2")), "table6_initial_budget",
          rows_by(lambda r: (2, r["initial_budget"])),
          notes=("Rows from what each run recorded (method_summary, else its config): final budget = budget.rank, "
                 "initial budget = initial_budget (null = ceil(1.5 x final)); DoRA runs with DEM, any tag.",)),
    Table("table9", "Table 9: efficiency on QNLI (paper: RTX 3090)", ("Method", "Budget"), efficiency_row,
          (Column("min/epoch", "qnli", minutes_per_epoch, paper="minutes_per_epoch"),
           Column("min/epoch vs LoRA", "qnli", minutes_per_epoch, paper="minutes_per_epoch", ratio=True),
           Column("peak MiB", "qnli", peak_memory_mb, paper="gpu_memory_mib", digits=0),
           Column("peak MiB vs LoRA", "qnli", peak_memory_mb, paper="gpu_memory_mib", ratio=True)),
          "table9_efficiency", efficiency_rows, paper_key=lambda key: key[:1],
          notes=("min/epoch: train_runtime_s / epochs trained (includes the per-epoch dev evaluation); resumed "
                 "runs are skipped. peak MiB: max GPU memory allocated, or max RSS of the process on CPU. "
                 "'vs LoRA': ratio of the cells to the LoRA row of the same budget (else of LoRA large). "
                 "Any tag (e.g. the 1-epoch runs of +experiment=table9); runs of other epochs or learning rates get "
                 "sections of their own (an efficiency table picks no configuration by dev score).",),
          searches=False),
)
