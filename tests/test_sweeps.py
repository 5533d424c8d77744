"""Real multirun sweeps in subprocesses: an interrupted sweep resumes without recomputing; submitit_local works."""
import json
import os
import signal
import subprocess
import sys
import time

from helpers import run_cli

from dora_bench import tables

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


def test_submitit_local_launcher_runs_an_experiment_sweep(tmp_path, glue_dir, cache_dir):
    """Two jobs of +experiment=cpu_glue, narrowed on the command line, each in its own submitit process."""
    out = run_cli("-m", "hydra/launcher=submitit_local", "+experiment=cpu_glue", "task=rte", "method=bitfit",
                  "budget=small", "seed=1,2", f"data.dir={glue_dir}", *TINY_SWEEP, cwd=tmp_path)
    assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]
    assert "Submitit 'local' sweep" in out.stdout + out.stderr
    results = sorted((tmp_path / "results/runs/tiny_roberta/rte/bitfit").glob("*/seed=*.json"))
    assert [p.name for p in results] == ["seed=1.json", "seed=2.json"]
    for path in results:
        record = json.loads(path.read_text())
        assert record["status"] == "complete"
        assert record["config"]["data"]["max_train_samples"] == 160   # the experiment's delta reached the job
    logs = list((tmp_path / "multirun/.submitit").rglob("*_log.out"))
    assert len(logs) == 2                                   # one process per job
