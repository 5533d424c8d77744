"""Efficiency of every method in one run: median train-step time, eval throughput, peak memory, params.

Each (method, budget) runs in its own subprocess (a clean peak-memory reading), through the same
engine and method code as real runs, on a RoBERTa-base-width model with random weights and synthetic
batches. Rounds alternate the order of methods so that machine drift hits all of them alike.

    python scripts/bench_methods.py                       # CPU: 2 layers, batch 16, length 128
    python scripts/bench_methods.py --layers 12 --steps 50   # unchanged on a GPU (CUDA events, max_memory_allocated)
    python scripts/bench_methods.py --precision fp32,bf16    # ratio tables per precision, side by side
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

METHODS = [("full_ft", None), ("bitfit", None)] + [
    (m, b) for b in ("small", "large") for m in ("h_adapter", "p_adapter", "lora", "lora_rprime", "adalora", "dora")]
# "lora_rprime": LoRA with as many components as DoRA starts with (r = r' = default_initial_budget(b(T))), DoRA's cost floor.
RPRIME = "lora_rprime"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--vocab", type=int, default=50265)
    p.add_argument("--hidden", type=int, default=768, help="768 = RoBERTa-base width (smaller only for smoke tests)")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--steps", type=int, default=6, help="measured optimizer steps per round")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--methods", default="all", help="comma list of method[:budget], or all")
    p.add_argument("--precision", default="fp32",
                   help="comma list of fp32, bf16, fp16 (trainer.precision; fp16 needs CUDA): one table each")
    p.add_argument("--out", default="results/bench_methods.json")
    p.add_argument("--in-process", action="store_true",
                   help="no subprocess per method (fast smoke test; peak memory is then not per method)")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    return p.parse_args(argv)


# ---- worker: one method in one process ----------------------------------------------------------

def worker(args) -> dict:
    import torch
    from datasets import Dataset
    from hydra import compose, initialize_config_module
    from transformers import RobertaConfig, RobertaForSequenceClassification, TrainingArguments, default_data_collator

    from dora_bench import memory
    from dora_bench.dora.config import default_initial_budget
    from dora_bench.engine import BenchTrainer
    from dora_bench.methods import apply_method
    from dora_bench.run import accelerator_arguments

    torch.set_num_threads(args.threads)
    method, budget = args.worker.split(":")
    total = args.warmup + args.steps
    with initialize_config_module("dora_bench.conf", version_base="1.3"):
        cfg = compose("config", overrides=["task=qnli", "model=roberta_base", f"method={method.removesuffix('_rprime')}",
                                           f"budget={budget or 'small'}", f"trainer.precision={args.precision}"])
    if method == RPRIME:
        cfg.method.r = default_initial_budget(cfg.budget.rank)
    torch.manual_seed(0)
    model = RobertaForSequenceClassification(RobertaConfig(
        vocab_size=args.vocab, hidden_size=args.hidden, num_hidden_layers=args.layers,
        num_attention_heads=12 if args.hidden % 12 == 0 else 4, intermediate_size=4 * args.hidden,
        max_position_embeddings=514, type_vocab_size=1, pad_token_id=1))
    handle = apply_method(model, cfg, total)
    hook_seconds = []
    hook = handle.after_optimizer_step

    def timed_hook(step):
        started = time.perf_counter()
        hook(step)
        hook_seconds.append(time.perf_counter() - started)
    handle.after_optimizer_step = timed_hook

    g = torch.Generator().manual_seed(0)
    n = args.batch * total
    data = Dataset.from_dict({"input_ids": torch.randint(3, args.vocab, (n, args.seq_len), generator=g).tolist(),
                              "attention_mask": [[1] * args.seq_len] * n,
                              "labels": torch.randint(0, 2, (n,), generator=g).tolist()})
    targs = TrainingArguments(output_dir="/tmp/bench_methods", max_steps=total, per_device_train_batch_size=args.batch,
                              per_device_eval_batch_size=args.batch, learning_rate=1e-4, report_to="none",
                              save_strategy="no", eval_strategy="no", disable_tqdm=True, logging_strategy="no",
                              **accelerator_arguments(cfg.trainer))
    trainer = BenchTrainer(model=handle.model, args=targs, train_dataset=data, data_collator=default_data_collator)
    eval_set = data.select(range(args.batch * 2))
    trainer.setup_bench(handle, lambda t: {"score": 0.0, "n": len(t.predict(eval_set).predictions)}, "bench")
    memory.reset_peak()
    trainer.train()
    steps = trainer.step_timer.step_times()[args.warmup:]
    started = time.perf_counter()
    trainer.evaluate()
    eval_seconds = time.perf_counter() - started
    peak = memory.peak_mb()
    return {"method": method, "budget": budget or None, "precision": args.precision, "step_s": statistics.median(steps),
            "hook_share": sum(hook_seconds[args.warmup:]) / sum(steps),
            "eval_samples_per_s": len(eval_set) / eval_seconds, "peak_memory_mb": peak,
            "trainable_paper": handle.paper_trainable_params(),
            "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"}


# ---- driver ------------------------------------------------------------------------------------

def selected(spec: str) -> list[tuple[str, str | None]]:
    if spec == "all":
        return METHODS
    chosen = []
    for item in spec.split(","):
        method, _, budget = item.partition(":")
        chosen += [(m, b) for m, b in METHODS if m == method and (not budget or b == budget)]
    return chosen


def run_worker(args, method: str, budget: str | None) -> dict:
    if args.in_process:
        return worker(argparse.Namespace(**{**vars(args), "worker": f"{method}:{budget or ''}"}))
    command = [sys.executable, __file__, "--worker", f"{method}:{budget or ''}", "--layers", str(args.layers),
               "--vocab", str(args.vocab), "--hidden", str(args.hidden), "--batch", str(args.batch),
               "--seq-len", str(args.seq_len), "--steps", str(args.steps), "--warmup", str(args.warmup),
               "--threads", str(args.threads), "--precision", args.precision]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    out = subprocess.run(command, capture_output=True, text=True, env=env)
    if out.returncode != 0:
        raise RuntimeError(f"{method}:{budget} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def measure(args) -> list[dict]:
    """Rows of one precision (args.precision)."""
    runs: dict[tuple, list[dict]] = {}
    order = selected(args.methods)
    for round_ in range(args.rounds):
        for method, budget in (order if round_ % 2 == 0 else order[::-1]):
            print(f"  {args.precision} round {round_ + 1}: {method} {budget or ''}", file=sys.stderr, flush=True)
            runs.setdefault((method, budget), []).append(run_worker(args, method, budget))
    rows = []
    for samples in runs.values():
        row = dict(samples[0])
        for key in ("step_s", "hook_share", "eval_samples_per_s", "peak_memory_mb"):
            row[key] = statistics.median(s[key] for s in samples)
        rows.append(row)
    return rows


def ratios(rows: list[dict]) -> list[dict]:
    """Step time and memory relative to LoRA of the same budget and to Full FT."""
    lora = {r["budget"]: r for r in rows if r["method"] == "lora"}
    full = next((r for r in rows if r["method"] == "full_ft"), None)
    for r in rows:
        ref = lora.get(r["budget"] or "large")  # budget-free methods: against the large LoRA, as Table 9 does
        r["step_vs_lora"] = r["step_s"] / ref["step_s"] if ref else None
        r["memory_vs_lora"] = r["peak_memory_mb"] / ref["peak_memory_mb"] if ref else None
        r["step_vs_full_ft"] = r["step_s"] / full["step_s"] if full else None
    adalora = {r["budget"]: r for r in rows if r["method"] == "adalora"}
    rprime = {r["budget"]: r for r in rows if r["method"] == RPRIME}
    for r in rows:
        if r["method"] == "dora" and r["budget"] in adalora:
            r["step_vs_adalora"] = r["step_s"] / adalora[r["budget"]]["step_s"]
        if r["method"] == "dora" and r["budget"] in rprime:
            r["step_vs_lora_rprime"] = r["step_s"] / rprime[r["budget"]]["step_s"]
            r["memory_vs_lora_rprime"] = r["peak_memory_mb"] / rprime[r["budget"]]["peak_memory_mb"]
    return rows


def markdown(rows: list[dict], args) -> str:
    fmt = lambda x, spec=".3f": "—" if x is None else format(x, spec)  # noqa: E731
    lines = [f"{rows[0]['precision']} on {rows[0]['device']}, hidden {args.hidden}, {args.layers} layers, "
             f"batch {args.batch} × length {args.seq_len}, {args.threads} threads, median of {args.steps} steps × "
             f"{args.rounds} round(s).",
             "", "| method | budget | params (paper) | step s | ×LoRA | ×Full FT | eval samples/s | peak MB | ×LoRA mem |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['method']} | {r['budget'] or '—'} | {r['trainable_paper']:,} | {fmt(r['step_s'])} | "
                     f"{fmt(r['step_vs_lora'])} | {fmt(r['step_vs_full_ft'])} | {fmt(r['eval_samples_per_s'], '.1f')} | "
                     f"{fmt(r['peak_memory_mb'], '.0f')} | {fmt(r['memory_vs_lora'])} |")
    for r in rows:
        if r["method"] == "dora":
            lines.append(f"\nDoRA ({r['budget']}): step ×LoRA(r=r') {fmt(r.get('step_vs_lora_rprime'))} (target ≤ 1.03), "
                         f"memory ×LoRA(r=r') {fmt(r.get('memory_vs_lora_rprime'))} (≤ 1.02), step ×AdaLoRA "
                         f"{fmt(r.get('step_vs_adalora'))} (≤ 0.95), controller share of a step "
                         f"{100 * r['hook_share']:.3f}% (< 1%)")
    return "\n".join(lines)


def paper_table9() -> dict[str, tuple[float, float]]:
    """The paper's Table 9 (QNLI, RTX 3090) as (time, memory) relative to LoRA, per method."""
    import importlib.resources

    import yaml

    rows = yaml.safe_load((importlib.resources.files("dora_bench") / "paper.yaml").read_text())["table9_efficiency"]["rows"]
    minutes, memory = rows["lora"]
    return {method: (m / minutes, mib / memory) for method, (m, mib) in rows.items()}


def side_by_side(rows: list[dict], precisions: list[str]) -> str:
    """Step time and peak memory ×LoRA per precision in one table, the paper's Table 9 beside them (its large
    budget rows; the paper measured minutes per epoch and GPU MiB on QNLI, on an RTX 3090)."""
    paper = paper_table9()
    fmt = lambda x: "—" if x is None else f"{x:.3f}"  # noqa: E731
    head = [f"step ×LoRA {p}" for p in precisions] + [f"mem ×LoRA {p}" for p in precisions]
    lines = ["| method | budget | " + " | ".join(head) + " | paper time ×LoRA | paper mem ×LoRA |",
             "|---|---|" + "---:|" * (len(head) + 2)]
    by_key = {(r["method"], r["budget"], r["precision"]): r for r in rows}
    for method, budget in dict.fromkeys((r["method"], r["budget"]) for r in rows):
        cells = [by_key.get((method, budget, p)) for p in precisions]
        steps = [fmt(c and c["step_vs_lora"]) for c in cells]
        memory = [fmt(c and c["memory_vs_lora"]) for c in cells]
        reference = paper.get(method) if budget in (None, "large") else None
        lines.append(f"| {method} | {budget or '—'} | " + " | ".join(steps + memory) + " | "
                     + (f"{reference[0]:.3f} | {reference[1]:.3f} |" if reference else "— | — |"))
    return "\n".join(lines)


def main(argv=None):
    args = parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args)))
        return
    precisions = args.precision.split(",")
    if unknown := [p for p in precisions if p not in ("fp32", "bf16", "fp16")]:
        raise SystemExit(f"--precision {','.join(unknown)} is not valid; allowed: fp32, bf16, fp16")
    import torch
    if "fp16" in precisions and not torch.cuda.is_available():
        raise SystemExit("--precision fp16 needs a CUDA GPU; allowed here: fp32, bf16")
    rows, reports = [], []
    for precision in precisions:
        rows_of_precision = ratios(measure(argparse.Namespace(**{**vars(args), "precision": precision})))
        rows += rows_of_precision
        reports.append(markdown(rows_of_precision, args))
    reports.append(side_by_side(rows, precisions))
    report = "\n\n".join(reports)
    print(report)
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w") as fh:
        json.dump({"args": vars(args), "rows": rows, "markdown": report}, fh, indent=2)


if __name__ == "__main__":
    main()
