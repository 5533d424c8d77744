"""Expected cost of a paper experiment at the paper's epochs: runs, optimizer steps, rough GPU hours.

Runs and steps come from the experiment's config (its sweep, Table 8 epochs and batch sizes per task, Full FT
and BitFit epochs from their method files, the code's own step arithmetic and result paths) and the public
training-set sizes below. GPU hours use the paper's own measurement (Table 9: minutes per QNLI epoch on one
RTX 3090, per method) as examples per second, for tasks at QNLI's sequence length; evaluation is not included.

    python scripts/paper_cost.py                       # Table 2 (GLUE)
    python scripts/paper_cost.py --experiment table3   # runs and steps of SQuAD (no GPU-hour figure)
"""
from __future__ import annotations

import argparse
from collections import defaultdict

from hydra import compose, initialize_config_module

from dora_bench.engine import optimizer_steps
from dora_bench.status import expected_runs
from dora_bench.tables.paper import load_paper

# Training examples. GLUE: the train splits of the GLUE benchmark (Wang et al., 2018, Table 1; exact counts as
# in the Hugging Face nyu-mll/glue dataset card; CoLA, MRPC, RTE and STS-B equal the official TSVs' rows).
# SQuAD: questions in train-v1.1.json / train-v2.0.json (long contexts add a few % of windows). XSum: the
# official train split (Narayan et al., 2018; EdinburghNLP/xsum). GSM8K: the official train.jsonl (Cobbe et al., 2021;
# openai/gsm8k), of which task.validation_size questions are held out.
TRAIN_SIZES = {"cola": 8551, "sst2": 67349, "mrpc": 3668, "stsb": 5749, "qqp": 363846, "mnli": 392702,
               "qnli": 104743, "rte": 2490, "squad_v1": 87599, "squad_v2": 130319, "xsum": 204045, "gsm8k": 7473}
TABLE9_TASK = "qnli"
# RoBERTa-base-shaped model, batch 16 x 128 tokens, 2 CPU threads: 8-11 s a step on the development machine.
CPU_SECONDS_PER_EXAMPLE = 9.5 / 16


def runs_of(experiment: str) -> list:
    """(job, config, seed) of every distinct run of the experiment's sweep, as dora-bench-status expects them."""
    with initialize_config_module("dora_bench.conf", version_base="1.3"):
        return expected_runs([f"+experiment={experiment}"])


def table9_seconds_per_example() -> tuple[dict[str, float], int]:
    """Seconds per training example of each method in the paper's Table 9, and the sequence length it ran at."""
    minutes = {method: row[0] for method, row in load_paper()["table9_efficiency"]["rows"].items()}
    with initialize_config_module("dora_bench.conf", version_base="1.3"):
        length = compose("config", overrides=[f"task={TABLE9_TASK}"]).trainer.max_length
    return {method: m * 60 / TRAIN_SIZES[TABLE9_TASK] for method, m in minutes.items()}, length


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiment", default="table2")
    args = parser.parse_args(argv)
    per_example, table9_length = table9_seconds_per_example()
    rows = defaultdict(lambda: {"runs": 0, "steps": 0, "examples": 0, "gpu_h": 0.0, "epochs": {}, "timed": True})
    for _, cfg, _ in runs_of(args.experiment):
        t = cfg.trainer
        available = TRAIN_SIZES[cfg.task.name] - (cfg.task.get("validation_size") or 0)   # GSM8K's held-out slice
        examples = min(available, cfg.data.max_train_samples or available)
        epochs = 0 if cfg.method.impl == "none" else t.epochs   # the zero-shot reference evaluates only
        row = rows[cfg.task.name]
        row["runs"] += 1
        row["steps"] += optimizer_steps(examples, t.batch_size, 1, t.grad_accum, t.epochs) if epochs else 0
        row["examples"] += examples * epochs
        row["epochs"][cfg.method.name] = int(epochs)
        row["timed"] &= t.max_length == table9_length and cfg.method.name in per_example
        row["gpu_h"] += examples * epochs * per_example.get(cfg.method.name, 0.0) / 3600
    total = {key: sum(r[key] for r in rows.values()) for key in ("runs", "steps", "examples", "gpu_h")}
    total["timed"] = all(r["timed"] for r in rows.values())
    lines = [f"+experiment={args.experiment} at the paper's epochs (train sizes: scripts/paper_cost.py)", "",
             "| task | train examples | epochs | runs | optimizer steps | GPU hours (RTX 3090, Table 9) |",
             "|---|---:|---|---:|---:|---:|"]
    lines += [f"| {task} | {TRAIN_SIZES[task]:,} | {epochs_text(row['epochs'])} | {row['runs']} | {row['steps']:,} "
              f"| {hours(row)} |" for task, row in rows.items()]
    lines += [f"| **all** | | | **{total['runs']}** | **{total['steps']:,}** | **{hours(total)}** |", ""]
    if total["timed"]:
        total["cpu_days"] = total["examples"] * CPU_SECONDS_PER_EXAMPLE / 86400
        lines.append(f"On a 2-core CPU (a RoBERTa-base step of 16 x 128 tokens: about {CPU_SECONDS_PER_EXAMPLE * 16:g} "
                     f"s): about {total['cpu_days']:,.0f} days.")
    text = "\n".join(lines)
    print(text)
    return {"rows": dict(rows), "total": total, "text": text}


def epochs_text(epochs: dict[str, int]) -> str:
    """The epochs most methods train for, then the exceptions: '80 (full_ft 10, bitfit 20)'."""
    values = list(epochs.values())
    common = max(values, key=values.count)
    exceptions = ", ".join(f"{method} {n}" for method, n in epochs.items() if n != common)
    return f"{common} ({exceptions})" if exceptions else str(common)


def hours(row: dict) -> str:
    return f"{row['gpu_h']:,.0f}" if row["timed"] else "— (other sequence length)"


if __name__ == "__main__":
    main()
