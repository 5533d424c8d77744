"""dora-bench-status: every run a sweep expects, located by identity, as done / running / failed / missing."""
import re

import pytest
from helpers import TINY, run_cli

from dora_bench import results
from dora_bench.locks import RunLock


def states_by_learning_rate(stdout: str) -> dict[float, str]:
    line = re.compile(r"^(done|running|failed|missing) .*?trainer\.learning_rate=([^\s/,]+)")
    return {float(m.group(2)): m.group(1) for m in map(line.match, stdout.splitlines()) if m}


@pytest.mark.slow
def test_status_tells_done_failed_running_and_missing_runs_of_a_sweep(tmp_path, glue_dir, cache_dir):
    common = ("task=rte", "method=lora", "seed=1", f"data.dir={glue_dir}", *TINY)
    ran = run_cli("-m", "trainer.learning_rate=1e-3,1e12", *common, cwd=tmp_path)  # 1e12: a non-finite loss
    assert ran.returncode == 0, ran.stderr[-2000:]
    # a third configuration that is training now (its lock held by this process), a fourth never started
    cfg = results.compose_config([*common, "trainer.learning_rate=5e-3", f"results_dir={tmp_path / 'results'}"])
    lock = RunLock(results.locate(cfg, 1).lock, 600)
    assert lock.try_acquire() is None
    try:
        out = run_cli("trainer.learning_rate=1e-3,1e12,5e-3,1e-2", *common, cwd=tmp_path, script="dora_bench.status")
    finally:
        lock.release()
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert states_by_learning_rate(out.stdout) == {1e-3: "done", 1e12: "failed", 5e-3: "running", 1e-2: "missing"}
    failed = next(line for line in lines if line.startswith("failed"))
    assert "non-finite loss" in failed
    assert lines[-1].startswith("4 run(s): 1 done, 1 running, 1 failed, 1 missing; time spent in finished runs: ")
    assert "h on cpu" in lines[-1]


@pytest.mark.slow
def test_an_experiment_grid_counts_each_run_once(tmp_path):
    """Table 2 on one task: 5 budgeted methods x 2 budgets + Full FT and BitFit (budget-free: one run for both
    budget values) = 12 configurations x 5 seeds."""
    out = run_cli("+experiment=table2", "task=rte", f"results_dir={tmp_path}", cwd=tmp_path, script="dora_bench.status")
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[-1].startswith("60 run(s): 0 done, 0 running, 0 failed, 60 missing")
    assert sum(line.startswith("missing  +experiment=table2 task=rte") and "method=full_ft" in line
               for line in out.stdout.splitlines()) == 5


def test_an_optuna_search_is_refused_in_one_line(tmp_path):
    out = run_cli("+experiment=search", cwd=tmp_path, script="dora_bench.status")
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == ["dora-bench-status: error: an Optuna search has no fixed grid to check; "
                                               "list its trials with dora-bench-tables --sweeps"]
