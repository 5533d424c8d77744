"""Non-finite losses, crashes and hygiene: clear errors, nothing lost (bad input: test_bad_input.py)."""
import json
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import TINY, run_cli, variant_dir
from safetensors.torch import load_file

from dora_bench.engine import COMPLETE_MARK


REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_non_finite_loss_fails_the_seed_and_the_others_still_run(tmp_path, glue_dir, cache_dir):
    out = run_cli("task=rte", "method=full_ft", "seeds=[1,2]", "trainer.learning_rate=1e12", f"data.dir={glue_dir}",
                  *TINY, cwd=tmp_path)
    assert out.returncode == 1
    for seed in (1, 2):
        path = variant_dir(tmp_path / "results/runs/tiny_roberta/rte/full_ft") / f"seed={seed}.json"
        record = json.loads(path.read_text())
        assert record["status"] == "failed"
        assert re.search(r"non-finite loss .* at optimizer step \d+ \(learning rate [\d.e+-]+\)", record["error"])
    assert "FAILED seeds: [1, 2]" in out.stdout + out.stderr or "no seed completed" in out.stdout


# Runs dora-bench in a child that SIGKILLs itself in the Trainer's on_save of optimizer step `kill_at`, before the
# engine's own callbacks (method state, completion mark) run: a kill while a checkpoint is being written, at a
# step chosen by the test rather than by timing. The earlier checkpoints are complete.
KILLED_WHILE_SAVING = """
import os, signal, sys
from transformers import TrainerCallback
from dora_bench import engine

kill_at = int(sys.argv[1])


class KillWhileSaving(TrainerCallback):
    def on_save(self, args, state, control, **kwargs):
        if state.global_step == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)


setup_bench = engine.BenchTrainerMixin.setup_bench


def setup_bench_then_kill(self, *args, **kwargs):
    self.add_callback(KillWhileSaving())   # before the engine's CheckpointCallback
    setup_bench(self, *args, **kwargs)


engine.BenchTrainerMixin.setup_bench = setup_bench_then_kill
sys.argv = ["dora-bench", *sys.argv[2:]]
from dora_bench.cli import main
main()
"""

# stsb: 24 training pairs, batch 8: 3 optimizer steps an epoch, T = 9 in 3 epochs, a checkpoint after each epoch.
# The kill comes at step 6, the rerun resumes from checkpoint-3 and takes steps 4..9.
RESUME_CASES = {
    # DoRA: pruning events at t = 2, 3, 4 and the final one at t = 5 = ceil(T − 0.5·T): masks and smoothed scores resume
    "dora": ("method=dora", "method.prune_interval=1"),
    # AdaLoRA: tinit = int(0.15·9) = 1, tfinal = int(0.5·9) = 4: masks at PEFT steps 2, 3, 4 and the final one at
    # 5 (step t = 6); the allocator's sensitivity and uncertainty averages and its rank pattern resume
    "adalora": ("method=adalora", "method.delta_t=1"),
}


def _result_and_adapter(root: Path, run: str):
    folder = variant_dir(root / "results/runs/tiny_roberta/stsb" / run)
    adapter = next((folder / "seed=1.adapter").glob("*.safetensors"))
    return json.loads((folder / "seed=1.json").read_text()), load_file(adapter)


def _logged_training_steps(stdout: str) -> int:
    """Training-log entries the Trainer printed (logging_steps=1: one per optimizer step this process took)."""
    return sum(1 for line in stdout.splitlines() if line.startswith("{") and "'loss':" in line)


@pytest.mark.parametrize("method", sorted(RESUME_CASES))
@pytest.mark.slow
def test_killed_while_saving_a_checkpoint_then_rerun_resumes_and_matches_an_uninterrupted_run(
        tmp_path, glue_dir, cache_dir, method):
    args = ["task=stsb", "seed=1", f"data.dir={glue_dir}", *TINY, "trainer.epochs=3", *RESUME_CASES[method]]
    clean, killed = tmp_path / "clean", tmp_path / "killed"
    clean.mkdir(), killed.mkdir()
    uninterrupted = run_cli(*args, cwd=clean)
    assert uninterrupted.returncode == 0, uninterrupted.stderr[-2000:]
    assert _logged_training_steps(uninterrupted.stdout) == 9
    run = f"{method}-small"

    dying = subprocess.run([sys.executable, "-c", KILLED_WHILE_SAVING, "6", *args], cwd=killed, capture_output=True,
                           text=True, timeout=600)
    assert dying.returncode == -signal.SIGKILL, dying.stderr[-2000:]
    assert not list((killed / "results/runs").rglob("seed=*.json"))         # a killed run leaves no result
    checkpoints = killed / f"results/checkpoints/tiny_roberta/stsb/{run}"
    complete = sorted(p for p in checkpoints.glob("*/seed=1/checkpoint-*") if (p / COMPLETE_MARK).exists())
    assert [p.name for p in complete] == ["checkpoint-3"]     # checkpoint-6 was being written: never resumed from

    rerun = run_cli(*args, cwd=killed)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    resumed = str(complete[0].relative_to(killed))                         # results_dir is relative: results
    assert f"[dora-bench] seed 1: resuming from {resumed}\n" in rerun.stdout
    assert _logged_training_steps(rerun.stdout) == 9 - 3                   # only the steps after checkpoint-3
    (a, wa), (b, wb) = _result_and_adapter(clean, run), _result_and_adapter(killed, run)
    assert a["train"]["resumed_from"] is None and b["train"]["resumed_from"] == resumed
    assert [e["metrics"] for e in a["epochs"]] == [e["metrics"] for e in b["epochs"]]
    assert len(b["epochs"]) == 3                                           # the killed run's epochs were restored
    assert a["method_summary"]["rank_pattern"] == b["method_summary"]["rank_pattern"]
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    assert len(list((killed / "results/runs").rglob("seed=*.json"))) == 1


def test_no_remote_code_no_pickles_no_callables_from_the_command_line():
    source = "\n".join(p.read_text() for p in (REPO / "dora_bench").rglob("*.py"))
    assert "trust_remote_code=True" not in source
    assert "instantiate(" not in source and not re.search(r"[\"']_target_[\"']", source)
    for call in re.findall(r"torch\.load\([^)]*\)", source):
        assert "weights_only=True" in call, call
    assert "use_safetensors=True" in source
