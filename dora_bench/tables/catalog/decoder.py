"""Decoder LLMs on GSM8K (+experiment=llm_cpu, llm_gsm8k): per method, the scores of the epoch and rate chosen on
the validation slice, the test split's beside them, and what each method costs — a table of our own (the paper
has no decoder experiment), as PEFT's method comparison reports accuracy with memory, time and adapter size."""
from __future__ import annotations

from dora_bench.tables.catalog.paper import main_row
from dora_bench.tables.runs import adapter_mib, metric, peak_memory, step_time_s, train_tokens_per_s
from dora_bench.tables.spec import Column, Table

TASK = "gsm8k"

TABLES = (
    Table("decoder", "Decoder LLMs: GSM8K (chosen on the validation slice, test split beside it)", ("Method", "Budget"),
          main_row,
          (Column("val NLL", TASK, metric("answer_nll"), digits=3, lower_better=True),
           Column("test NLL", TASK, metric("test_answer_nll"), digits=3, lower_better=True),
           Column("test EM", TASK, metric("test_exact_match"), digits=1, lower_better=False),
           Column("peak MiB", TASK, peak_memory, digits=0),
           Column("step s", TASK, step_time_s, digits=2),
           Column("train tok/s", TASK, train_tokens_per_s, digits=0),
           Column("adapter MiB", TASK, adapter_mib, digits=2)),
          paper_section=None, paper_rows=lambda section: {}, params=True,
          notes=("Rows: untagged runs in the paper's setting (DoRA with DEM; DoRA/AdaLoRA start at 1.5x the final "
                 "budget); Base model: the model as loaded, evaluated once (method=none). Each seed's epoch and each "
                 "cell's configuration are chosen by the headline metric on the validation slice (task.validation_size "
                 "training questions held out; `val`); the test split's numbers (`test`) are of that same epoch and "
                 "configuration, never chosen on. NLL: mean negative log-likelihood per answer token, teacher-forced "
                 "(lower is better); EM: exact match of the final number of greedy generations (x100, on the first "
                 "task.generate_samples questions). Params: trainable parameters as counted (an MLP component of a "
                 "low-rank method is wider than an attention one). peak MiB: the run's peak (GPU allocated, or the "
                 "process's resident set on a CPU, model and data included); step s: median optimizer step; train "
                 "tok/s: non-padding training tokens per second of optimizer steps; adapter MiB: the exported adapter "
                 "on disk (Full FT exports none).",)),
)
