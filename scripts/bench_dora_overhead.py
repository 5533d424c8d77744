"""Train-step time and peak memory of DoRA (dynamic rank) against PEFT LoRA of rank r'.

Both adapt the same six matrices per layer of a RoBERTa-base-width model (random weights, built
from a config) with the same alpha and dropout; the classifier trains in both. DoRA runs its full
per-step machinery: the DEM loss and ``controller.step`` with a pruning event on every step
(t_init = 0, Δ = 1: the worst case).

Time: both models live in one process and their steps alternate (ABBA order), so drift hits
both alike; the median over the measured steps is reported. Memory: each method runs alone in a
fresh subprocess (median of ``--memory-repeats``); peak RSS (``ru_maxrss``) on CPU,
``torch.cuda.max_memory_allocated`` on GPU.

    python scripts/bench_dora_overhead.py [--layers 2] [--steps 8] [--budget small|large]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

import torch
from peft import LoraConfig, get_peft_model
from transformers import RobertaConfig, RobertaForSequenceClassification

from dora_bench.dora import DoraConfig, apply_dora

TARGETS = r".*\.layer\.\d+\.(attention\.self\.(query|key|value)|attention\.output\.dense|intermediate\.dense|output\.dense)"
FINAL_BUDGET = {"small": 2, "large": 8}
LORA_ALPHA, LORA_DROPOUT = 8, 0.1
METHODS = ("lora", "dora")
# The peak is reached once gradients, optimizer state and activations coexist (from step 2).
MEMORY_STEPS = 3


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--steps", type=int, default=8, help="measured steps per method")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--memory-repeats", type=int, default=3, help="fresh subprocesses per method (median)")
    parser.add_argument("--budget", choices=FINAL_BUDGET, default="small")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--memory-of", choices=METHODS, help=argparse.SUPPRESS)  # subprocess mode
    return parser.parse_args(argv)


def build(method: str, args: argparse.Namespace):
    """Model and a ``train_step(t)`` closure for one method, on ``args.device``."""
    torch.manual_seed(0)
    config = RobertaConfig(hidden_size=768, num_hidden_layers=args.layers, num_attention_heads=12,
                           intermediate_size=3072, vocab_size=50265, max_position_embeddings=514, num_labels=2)
    model = RobertaForSequenceClassification(config)
    rank = DoraConfig(target_modules=TARGETS, final_budget=FINAL_BUDGET[args.budget]).initial_budget
    controller = None
    if method == "lora":
        model = get_peft_model(model, LoraConfig(r=rank, lora_alpha=LORA_ALPHA, lora_dropout=LORA_DROPOUT,
                                                 target_modules=TARGETS, modules_to_save=["classifier"]))
    else:
        dora_config = DoraConfig(target_modules=TARGETS, final_budget=FINAL_BUDGET[args.budget],
                                 lora_alpha=LORA_ALPHA, lora_dropout=LORA_DROPOUT, t_init=0.0, prune_interval=1)
        controller = apply_dora(model, dora_config, total_steps=100 * (args.warmup + args.steps))
        model.classifier.requires_grad_(True)
    model.to(args.device).train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.01)
    gen = torch.Generator().manual_seed(1)
    input_ids = torch.randint(3, config.vocab_size, (args.batch_size, args.seq_len), generator=gen).to(args.device)
    labels = torch.randint(0, 2, (args.batch_size,), generator=gen).to(args.device)

    def train_step(t: int) -> None:
        loss = model(input_ids=input_ids, labels=labels).loss
        if controller is not None:
            loss = loss + controller.regularization()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if controller is not None:
            controller.step(t)

    return train_step, sum(p.numel() for p in params), rank


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(train_step, t: int, device: str) -> float:
    synchronize(device)
    start = time.perf_counter()
    train_step(t)
    synchronize(device)
    return time.perf_counter() - start


def measure_times(args: argparse.Namespace) -> dict[str, dict]:
    built = {method: build(method, args) for method in METHODS}
    times = {method: [] for method in METHODS}
    for t in range(1, args.warmup + args.steps + 1):
        order = METHODS if t % 2 else METHODS[::-1]  # ABBA: neither method always runs first
        for method in order:
            elapsed = timed(built[method][0], t, args.device)
            if t > args.warmup:
                times[method].append(elapsed)
    return {m: {"median_s": statistics.median(times[m]), "trainable": built[m][1], "rank": built[m][2]}
            for m in METHODS}


def _memory_mib(device: str) -> float:
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def peak_memory_here(method: str, args: argparse.Namespace) -> dict[str, float]:
    """Run one method alone: peak memory in all and its growth while training."""
    train_step, _, _ = build(method, args)
    synchronize(args.device)
    if args.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    before = _memory_mib(args.device)
    for t in range(1, MEMORY_STEPS + 1):
        train_step(t)
    synchronize(args.device)
    peak = _memory_mib(args.device)
    return {"peak_mib": peak, "training_mib": peak - before}


def peak_memory(argv: list[str], repeats: int) -> dict[str, dict[str, float]]:
    """Median over fresh subprocesses per method."""
    # A fixed glibc mmap threshold returns every freed tensor to the OS at once, so peak RSS
    # tracks peak live memory instead of heap fragmentation (tens of MiB of noise otherwise).
    env = {"MALLOC_MMAP_THRESHOLD_": "65536", **os.environ}
    runs = {method: [] for method in METHODS}
    for repeat in range(repeats):
        for method in METHODS if repeat % 2 == 0 else METHODS[::-1]:
            out = subprocess.run([sys.executable, __file__, *argv, "--memory-of", method],
                                 check=True, capture_output=True, text=True, env=env).stdout
            runs[method].append(json.loads(out.strip().splitlines()[-1]))
    return {method: {key: statistics.median(run[key] for run in runs[method]) for key in runs[method][0]}
            for method in METHODS}


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.memory_of:
        print(json.dumps(peak_memory_here(args.memory_of, args)))
        return
    memory = peak_memory(argv, args.memory_repeats)
    results = measure_times(args)
    memory_kind = "CUDA max allocated" if args.device.startswith("cuda") else "peak RSS"
    print(f"device={args.device} threads={args.threads} layers={args.layers} batch={args.batch_size} "
          f"len={args.seq_len} budget={args.budget} steps={args.steps} (+{args.warmup} warm-up)\n")
    print(f"| method | rank | trainable params | median step (s) | {memory_kind} (MiB) | growth in training (MiB) |")
    print("|---|---|---|---|---|---|")
    for method in METHODS:
        r, m = results[method], memory[method]
        print(f"| {method} | {r['rank']} | {r['trainable']:,} | {r['median_s']:.4f} | {m['peak_mib']:.1f} "
              f"| {m['training_mib']:.1f} |")
    time_ratio = results["dora"]["median_s"] / results["lora"]["median_s"]
    peak_ratio = memory["dora"]["peak_mib"] / memory["lora"]["peak_mib"]
    growth_ratio = memory["dora"]["training_mib"] / max(memory["lora"]["training_mib"], 1e-9)
    print(f"\nDoRA/LoRA: step time {time_ratio:.3f} (target <= 1.03), peak memory {peak_ratio:.3f} "
          f"(target <= 1.02), growth in training {growth_ratio:.3f}")


if __name__ == "__main__":
    main()
