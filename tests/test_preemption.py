"""Preemption: SIGTERM / SIGUSR1 mid-epoch -> checkpoint after the current step, exit 75, no result; the next
start resumes mid-epoch and writes the result an uninterrupted run writes. Under submitit, its preemption
signal (USR2) checkpoints the same way and submitit requeues the job, which resumes."""
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import run_cli
from hydra import compose, initialize_config_module
from safetensors.torch import load_file

from dora_bench.engine import COMPLETE_MARK, StepTimer
from dora_bench.preemption import EXIT_PREEMPTED, Preempted, PreemptionWatch
from dora_bench.results import locate, read_result
from dora_bench.run import run_seed

# DoRA on STS-B, 24 training rows at batch 2: 12 optimizer steps an epoch, 36 in all, pruning at every step.
STEPS_PER_EPOCH, STEPS = 12, 36
ARGS = ("task=stsb", "method=dora", "seed=1", "model=tiny_roberta", "trainer.epochs=3", "trainer.batch_size=2",
        "trainer.logging_steps=1", "trainer.progress_bar=false", "method.prune_interval=1")
SIGNAL_AFTER = "'epoch': 1.25"   # the log of optimizer step 15, a quarter into the second epoch


def result_and_adapter(root: Path):
    [path] = list((root / "results/runs").rglob("seed=*.json"))
    return json.loads(path.read_text()), load_file(path.with_suffix(".adapter") / "adapter_model.safetensors")


def assert_same_run(a, b):
    (ra, wa), (rb, wb) = a, b
    assert [e["metrics"] for e in ra["epochs"]] == [e["metrics"] for e in rb["epochs"]]
    assert ra["method_summary"]["rank_pattern"] == rb["method_summary"]["rank_pattern"]
    assert ra["method_summary"]["trajectory"] == rb["method_summary"]["trajectory"]
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, glue_dir, cache_dir):
    root = tmp_path_factory.mktemp("uninterrupted")
    out = run_cli(*ARGS, f"data.dir={glue_dir}", cwd=root)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.count("'loss'") == STEPS
    return result_and_adapter(root)


def start(*args, cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "HYDRA_FULL_ERROR": "1"}
    return subprocess.Popen([sys.executable, "-m", "dora_bench", *args], cwd=cwd, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)


@pytest.mark.slow
def test_sigterm_mid_epoch_saves_a_checkpoint_exits_75_and_the_rerun_matches_an_uninterrupted_run(
        tmp_path, glue_dir, uninterrupted):
    args = (*ARGS, f"data.dir={glue_dir}")
    proc = start(*args, cwd=tmp_path)
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if SIGNAL_AFTER in line:
            os.kill(proc.pid, signal.SIGTERM)   # what Slurm sends before a preemption or the time limit
            break
    seen.append(proc.stdout.read())
    assert proc.wait(timeout=300) == EXIT_PREEMPTED, "".join(seen)[-3000:]
    out = "".join(seen)
    found = re.search(r"preempted by SIGTERM: checkpoint (\S+) saved at optimizer step (\d+); no result written; "
                      r"exit code 75; the same command resumes it", out)
    assert found, out[-3000:]
    checkpoint, step = Path(tmp_path / found[1]), int(found[2])
    assert step > 15 and step % STEPS_PER_EPOCH, step                    # after the signal, mid-epoch
    assert out.count("'loss'") == step                                   # the step in flight ended, no other began
    assert not list((tmp_path / "results/runs").rglob("seed=*.json"))    # no result, not even a failed one
    assert json.loads((checkpoint / COMPLETE_MARK).read_text())["global_step"] == step
    assert (checkpoint / "trainables.safetensors").is_file() and not (checkpoint / "model.safetensors").exists()
    assert [p.name for p in checkpoint.parent.iterdir()] == [checkpoint.name]   # the last epoch's one is gone

    rerun = run_cli(*args, cwd=tmp_path)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert f"resuming from {checkpoint.relative_to(tmp_path)}" in rerun.stdout
    assert rerun.stdout.count("'loss'") == STEPS - step                  # only the steps still to do
    resumed = result_and_adapter(tmp_path)
    assert resumed[0]["train"]["resumed_from"].endswith(f"checkpoint-{step}")
    assert_same_run(uninterrupted, resumed)


def submitit_task(cwd: Path) -> int | None:
    """The pid of the submitit task process (python -m submitit.core._submit) that runs in `cwd`."""
    for entry in Path("/proc").iterdir():
        try:
            if (entry.name.isdigit() and b"submitit.core._submit" in (entry / "cmdline").read_bytes()
                    and Path(os.readlink(entry / "cwd")) == cwd):
                return int(entry.name)
        except OSError:
            continue
    return None


@pytest.mark.slow
def test_submitit_preemption_signal_checkpoints_then_submitit_requeues_and_the_job_resumes(
        tmp_path, glue_dir, uninterrupted):
    """hydra-submitit-launcher's local executor runs the real protocol: USR2 to the job, its handler asks the
    launcher to checkpoint (resubmit the same job), requeues (exit 144, restarted by submitit's controller)."""
    proc = start("-m", "hydra/launcher=submitit_local", *ARGS, f"data.dir={glue_dir}", cwd=tmp_path)
    deadline = time.time() + 300
    task = None
    while task is None:
        logs = list((tmp_path / "multirun/.submitit").rglob("*_0_log.out"))
        if logs and SIGNAL_AFTER in logs[0].read_text():
            task = submitit_task(tmp_path)
        assert proc.poll() is None and time.time() < deadline, proc.stdout.read()[-3000:]
        time.sleep(0.02)
    os.kill(task, signal.SIGUSR2)
    out = proc.communicate(timeout=600)[0]
    assert proc.returncode == 0, out[-3000:]
    [stdout] = [p.read_text() for p in logs]
    stderr = logs[0].with_suffix(".err").read_text()
    found = re.search(r"preempted by SIGUSR2: checkpoint (\S+) saved at optimizer step (\d+); no result written; "
                      r"handing SIGUSR2 to submitit, which requeues the job", stderr)
    assert found, stderr[-3000:]
    assert "Requeued job" in stdout                                       # submitit's own handler requeued it
    assert f"resuming from {found[1]}" in stdout
    assert stdout.count("'loss'") == STEPS                                 # no step trained twice
    assert_same_run(uninterrupted, result_and_adapter(tmp_path))


# ----- every method, in process: a checkpoint mid-epoch holds everything the rest of the run needs ----------
METHODS = ("full_ft", "bitfit", "h_adapter", "p_adapter", "lora", "adalora", "dora")
EXTRA = {"dora": ("method.prune_interval=1",), "adalora": ("method.delta_t=1",)}
STOP_AT = 4   # rte: 24 rows at batch 8 = 3 steps an epoch; step 4 is inside the second of two epochs


def config(root: Path, glue_dir: Path, method: str):
    with initialize_config_module("dora_bench.conf", version_base="1.3"):
        return compose("config", overrides=[
            "task=rte", "model=tiny_roberta", f"method={method}", f"data.dir={glue_dir}", f"results_dir={root}",
            "trainer.epochs=2", "trainer.batch_size=8", "trainer.progress_bar=false", "keep_checkpoints=true",
            *EXTRA.get(method, ())])


def final_weights(cfg) -> dict[str, torch.Tensor]:
    [folder] = locate(cfg, 1).checkpoints.glob("checkpoint-*")
    weights = {}
    for file in folder.glob("*.safetensors"):
        weights |= load_file(file)
    return weights


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.slow
def test_each_method_preempted_mid_epoch_resumes_to_the_uninterrupted_result(method, tmp_path, glue_dir, cache_dir,
                                                                             monkeypatch):
    run, clean = config(tmp_path / "run", glue_dir, method), config(tmp_path / "clean", glue_dir, method)
    on_step_end = StepTimer.on_step_end

    def signal_at_step(self, args, state, control, **kwargs):
        on_step_end(self, args, state, control, **kwargs)
        if state.global_step == STOP_AT:
            os.kill(os.getpid(), signal.SIGUSR1)   # what `sbatch --signal=USR1@<s>` sends

    monkeypatch.setattr(StepTimer, "on_step_end", signal_at_step)
    with PreemptionWatch() as watch, pytest.raises(Preempted) as stopped:
        run_seed(run, 1, watch)
    assert stopped.value.signum == signal.SIGUSR1 and stopped.value.step == STOP_AT
    where = locate(run, 1)
    assert not where.result.exists()
    assert [p.name for p in where.checkpoints.iterdir()] == [f"checkpoint-{STOP_AT}"]
    monkeypatch.undo()

    resumed = run_seed(run, 1)
    assert resumed.complete, resumed.error
    assert resumed.train.resumed_from.endswith(f"checkpoint-{STOP_AT}")
    reference = run_seed(clean, 1)
    assert [e.metrics for e in resumed.epochs] == [e.metrics for e in reference.epochs]
    assert resumed.method_summary == reference.method_summary
    a, b = final_weights(run), final_weights(clean)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert read_result(where.result).complete


def test_a_signal_before_training_stops_with_nothing_to_save(tmp_path, glue_dir, cache_dir):
    run = config(tmp_path, glue_dir, "lora")
    with PreemptionWatch() as watch:
        os.kill(os.getpid(), signal.SIGTERM)
        with pytest.raises(Preempted, match="^preempted by SIGTERM: stopped before training began; nothing to save$"):
            run_seed(run, 1, watch)
    assert not tmp_path.joinpath("runs").exists() and not tmp_path.joinpath("checkpoints").exists()


def test_the_watch_hands_the_signal_to_the_handler_that_was_there_before(tmp_path):
    """After the checkpoint, a handler installed before the watch (submitit's requeue) gets the signal."""
    seen = []
    previous = signal.signal(signal.SIGUSR1, lambda signum, frame: seen.append(signum))
    try:
        with PreemptionWatch() as watch:
            os.kill(os.getpid(), signal.SIGUSR1)
            assert watch.requested == signal.SIGUSR1 and seen == []    # recorded only, nothing stopped yet
            with pytest.raises(SystemExit) as exited:
                watch.exit(Preempted(signal.SIGUSR1, "ckpt", 3))
        assert seen == [signal.SIGUSR1] and exited.value.code == EXIT_PREEMPTED
        os.kill(os.getpid(), signal.SIGUSR1)   # the watch is gone: the earlier handler is back
        assert seen == [signal.SIGUSR1, signal.SIGUSR1]
    finally:
        signal.signal(signal.SIGUSR1, previous)
