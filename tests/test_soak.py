"""Soak: two `dora-bench -m` of one sweep started together, each with the joblib launcher (2 jobs at a time),
over one results folder: every seed trained exactly once, every result complete and valid, dora-bench-status
reports the sweep done, and the tables equal those of the same sweep run serially."""
import filecmp
import os
import subprocess
import sys

import pytest
from helpers import run_cli

from dora_bench import results, tables

# 2 methods x 2 seeds = 4 jobs of one seed each, on the tiny model (STS-B: Pearson differs between runs)
GRID = ("task=stsb", "method=lora,bitfit", "seed=1,2", "model=tiny_roberta", "trainer.epochs=2", "trainer.batch_size=8",
        "trainer.logging_steps=1", "trainer.progress_bar=false")
RUNS = {("lora", 1), ("lora", 2), ("bitfit", 1), ("bitfit", 2)}


@pytest.mark.slow
def test_two_parallel_sweeps_over_one_results_folder_train_each_seed_once_and_match_a_serial_sweep(
        tmp_path, glue_dir, cache_dir):
    shared, serial = tmp_path / "shared", tmp_path / "serial"
    sweep = ("-m", *GRID, f"data.dir={glue_dir}")
    env = {**os.environ, "HYDRA_FULL_ERROR": "1", "OMP_NUM_THREADS": "1"}   # 2 processes x 2 jobs on a shared CPU
    procs = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "dora_bench", *sweep, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
             f"results_dir={shared}"], cwd=tmp_path / name, env=env, text=True,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
    outs = [proc.communicate(timeout=900)[0] for proc in procs]
    for proc, out in zip(procs, outs):
        assert proc.returncode == 0, out[-4000:]
    both = "".join(outs)
    assert both.count("train_runtime") == len(RUNS), both[-4000:]       # each of the 4 seeds trained once
    assert both.count("trains it now") >= 1                              # and the other process did wait
    assert both.count("complete result written by the process we waited for") + both.count(
        "complete result exists, skipping") == len(RUNS)                 # ... and took the trainer's result

    found = list(results.iter_results(shared))
    assert [problem for _, _, problem in found] == [None] * len(RUNS)
    assert {(r.method, r.seed) for _, r, _ in found} == RUNS and all(r.complete for _, r, _ in found)
    leftovers = [p for p in shared.rglob("*") if p.is_file() and (p.suffix in (".lock", ".tmp") or
                                                                    p.relative_to(shared).parts[0] == "checkpoints")]
    assert leftovers == []                                                # no lock, temp file or checkpoint left

    status = run_cli(*GRID, f"data.dir={glue_dir}", f"results_dir={shared}", cwd=tmp_path, script="dora_bench.status")
    assert status.returncode == 0, status.stderr
    assert status.stdout.splitlines()[-1].startswith("4 run(s): 4 done, 0 running, 0 failed, 0 missing")

    alone = run_cli(*sweep, f"results_dir={serial}", cwd=tmp_path, env={"OMP_NUM_THREADS": "1"})   # same arithmetic
    assert alone.returncode == 0, alone.stderr[-3000:]
    assert alone.stdout.count("train_runtime") == len(RUNS)
    serial_runs = {(r.method, r.seed): r for _, r, _ in results.iter_results(serial)}
    for _, r, _ in found:
        assert [e.metrics for e in r.epochs] == [e.metrics for e in serial_runs[r.method, r.seed].epochs]
    for root in (shared, serial):
        assert tables.main(["--results", str(root), "--out", str(tmp_path / f"tables-{root.name}")]) == 0
    ours, theirs = tmp_path / "tables-shared", tmp_path / "tables-serial"
    names = sorted(p.name for p in ours.iterdir())
    assert names and names == sorted(p.name for p in theirs.iterdir())
    # cost.md and its scatters plot what each run measured (step time, memory): the rest holds only results
    names = [n for n in names if not n.startswith("cost")]
    match, mismatch, errors = filecmp.cmpfiles(ours, theirs, names, shallow=False)
    assert mismatch == [] and errors == [] and match == names
