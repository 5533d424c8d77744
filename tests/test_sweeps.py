"""Real sweeps: an interrupted sweep resumes without recomputing; submitit_local works; one result per
configuration (grid and Optuna search), reused only by that configuration."""
import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import yaml
from helpers import run_cli

from dora_bench import tables
from dora_bench.results import compose_config, leaves, read_result, value_text
from dora_bench.run import run_seed

TINY_SWEEP = ("model=tiny_roberta", "trainer.epochs=2", "trainer.batch_size=8", "trainer.progress_bar=false")


def complete_results(work):
    done = {}
    for path in (work / "results/runs").rglob("seed=*.json"):
        try:
            if json.loads(path.read_text())["status"] == "complete":
                done[path] = path.stat().st_mtime_ns
        except (OSError, ValueError):
            pass  # being replaced right now
    return done


@pytest.mark.slow
def test_interrupted_sweep_skips_finished_runs_and_completes_the_rest(tmp_path, glue_dir, cache_dir):
    sweep = ("-m", "task=rte,mrpc", "method=bitfit,lora", "seed=1,2", f"data.dir={glue_dir}", *TINY_SWEEP)
    env = {**os.environ, "HYDRA_FULL_ERROR": "1"}
    with open(tmp_path / "first.log", "w") as log:
        # Own process group: the kill takes the whole sweep, as Ctrl-C or a pre-empted node would.
        first = subprocess.Popen([sys.executable, "-m", "dora_bench", *sweep], cwd=tmp_path, env=env, stdout=log,
                                 stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 300
        while len(complete_results(tmp_path)) < 2 and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
    before = complete_results(tmp_path)
    assert 2 <= len(before) < 8, (tmp_path / "first.log").read_text()[-3000:]

    again = run_cli(*sweep, cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    after = complete_results(tmp_path)
    assert len(after) == 8
    assert {p: after[p] for p in before} == before          # finished runs were not recomputed
    assert again.stdout.count("complete result exists, skipping") == len(before)

    assert tables.main(["--results", str(tmp_path / "results")]) == 0
    table2 = (tmp_path / "results/tables/table2.md").read_text()
    for prefix in ("| BitFit | — |", "| LoRA | small |"):
        line = next(line for line in table2.splitlines() if line.startswith(prefix))
        assert line.count(" (2) |") == 2, line               # rte and mrpc, two seeds each


@pytest.mark.slow
def test_submitit_local_launcher_runs_an_experiment_sweep(tmp_path, glue_dir, cache_dir):
    """Two jobs of +experiment=cpu_glue, narrowed on the command line, each in its own submitit process."""
    out = run_cli("-m", "hydra/launcher=submitit_local", "+experiment=cpu_glue", "task=stsb", "method=bitfit", "lr_grid=low",
                  "budget=small", "seed=1,2", f"data.dir={glue_dir}", *TINY_SWEEP, cwd=tmp_path)
    assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]
    assert "Submitit 'local' sweep" in out.stdout + out.stderr
    results = sorted((tmp_path / "results/runs/tiny_roberta/stsb/bitfit").glob("*/seed=*.json"))
    assert [p.name for p in results] == ["seed=1.json", "seed=2.json"]
    experiment, defaults = compose_config(["+experiment=cpu_glue", "task=stsb"]), compose_config([])
    for path in results:
        record = json.loads(path.read_text())
        assert record["status"] == "complete"
        for group, key in (("data", "max_train_samples"), ("trainer", "precision")):  # the deltas reached the job
            assert record["config"][group][key] == experiment[group][key] != defaults[group][key], key
    logs = list((tmp_path / "multirun/.submitit").rglob("*_log.out"))
    assert len(logs) == 2                                   # one process per job


STSB = ("task=stsb", "model=tiny_roberta", "seed=1", "trainer.epochs=1", "trainer.batch_size=8",
        "trainer.progress_bar=false")


def results_under(root):
    return {path: read_result(path) for path in sorted((root / "runs").rglob("seed=*.json"))}


@pytest.mark.slow
def test_a_learning_rate_multirun_keeps_one_result_per_value_and_reruns_nothing(tmp_path, glue_dir, cache_dir):
    sweep = ("-m", "method=lora", "trainer.learning_rate=1e-4,1e-2", f"data.dir={glue_dir}", *STSB)
    first = run_cli(*sweep, cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    found = results_under(tmp_path / "results")
    by_rate = {r.identity["trainer"]["learning_rate"]: r.select("best").score for r in found.values()}
    assert set(by_rate) == {1e-4, 1e-2} and by_rate[1e-4] != by_rate[1e-2]
    assert all(r.search_space is None for r in found.values())      # a grid records no space: its values are tried
    assert len({p.parent for p in found}) == 2
    printed = re.findall(r"stsb lora \(small\): pearson (-?[\d.]+) ±", first.stdout)
    assert sorted(map(float, printed)) == sorted(round(v, 2) for v in by_rate.values())

    stamps = {p: p.stat().st_mtime_ns for p in found}
    again = run_cli(*sweep, cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.count("complete result exists, skipping") == 2
    assert {p: p.stat().st_mtime_ns for p in results_under(tmp_path / "results")} == stamps   # nothing trained
    assert re.findall(r"stsb lora \(small\): pearson (-?[\d.]+) ±", again.stdout) == printed


@pytest.mark.slow
def test_keys_that_cannot_change_numbers_skip_and_the_others_train_anew(tmp_path, glue_dir, cache_dir, capsys):
    def cfg(*overrides):
        return compose_config(["method=dora", f"data.dir={glue_dir}", f"results_dir={tmp_path}", "trainer.logging_steps=1",
                               "method.prune_interval=1", *STSB, *overrides])

    first = run_seed(cfg(), 1)
    assert first.status == "complete", first.error
    for harmless in (["trainer.progress_bar=true", "keep_checkpoints=true"], ["trainer.logging_steps=3", "report=last"]):
        capsys.readouterr()
        again = run_seed(cfg(*harmless), 1)
        assert "complete result exists, skipping" in capsys.readouterr().out, harmless
        assert again == first
    assert len(results_under(tmp_path)) == 1
    changes = ["trainer.epochs=2", "data.max_train_samples=16", f"model.name_or_path={tmp_path / 'weights'}",
               "method.reg_coefficient=0.1", "method.schedule=authors_code"]
    for change in changes:
        capsys.readouterr()
        result = run_seed(cfg(change), 1)
        assert "skipping" not in capsys.readouterr().out, change
        assert result.status == "complete" and result.fingerprint != first.fingerprint, change
    found = results_under(tmp_path)
    assert len(found) == 1 + len(changes) and len({p.parent for p in found}) == len(found)
    for change in changes:   # each change in exactly one result's identity, and in its folder's name
        key, value = change.split("=", 1)
        holders = [p for p, r in found.items() if value_text(leaves(r.identity)[key]) == value]
        assert len(holders) == 1 and f"{key}=" in holders[0].parent.name, (change, holders)


@pytest.mark.slow
def test_optuna_search_returns_the_objective_and_a_failed_trial_does_not_end_it(tmp_path, glue_dir, cache_dir):
    """Three trials of +experiment=search narrowed to the learning rate: one diverges (a failed run)."""
    out = run_cli("-m", "hydra/sweeper=optuna", "+experiment=search", "hydra/sweeper/sampler=random",
                  "hydra.sweeper.sampler.seed=1", "hydra.sweeper.n_trials=3", "trainer.learning_rate=choice(1e12,1e-3,1e-2)",
                  "method.reg_coefficient=0.3", "method.prune_interval=1", "trainer.epochs=2", "trainer.logging_steps=1",
                  "task=rte", "model=tiny_roberta", "seed=1", "trainer.batch_size=8", "trainer.progress_bar=false",
                  f"data.dir={glue_dir}", "data.max_eval_samples=8", cwd=tmp_path)
    assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]
    found = {r.identity["trainer"]["learning_rate"]: (path, r) for path, r in results_under(tmp_path / "results").items()}
    assert set(found) == {10**12, 1e-3, 1e-2}
    for _, record in found.values():   # the space each trial was drawn from: the command line's, the fixed keys out
        assert record.search_space == {"trainer.learning_rate": {"choice": [10**12, 1e-3, 1e-2],
                                                                 "text": "choice(1e12,1e-3,1e-2)"}}
    diverged = found[10**12][1]
    assert diverged.status == "failed" and "non-finite loss" in diverged.error
    completed = {rate: r.select("best").score for rate, (_, r) in found.items() if r.complete}
    assert set(completed) == {1e-3, 1e-2}
    # seed 1 of the random sampler draws 1e-3, 1e12, 1e-2: a trial ran after the failed one
    assert found[1e-2][0].stat().st_mtime_ns > found[10**12][0].stat().st_mtime_ns
    best = yaml.safe_load((tmp_path / "multirun/optimization_results.yaml").read_text())
    assert best["best_value"] == max(completed.values())    # the objective: mean dev score over the trial's seeds

    assert tables.main(["--results", str(tmp_path / "results"), "--sweeps"]) == 0
    sweeps = (tmp_path / "results/tables/sweeps.md").read_text()
    listed = [line for line in sweeps.splitlines() if line.startswith("| DoRA | small | rte |")]
    assert len(listed) == 3, sweeps
    for rate, score in completed.items():
        assert any(f"| {rate} |" in line and f"| {score:.2f} ± 0.00 (1) | 0 |" in line for line in listed), listed
    assert any("| 1000000000000 |" in line and "| — | 1 |" in line for line in listed), listed
