"""Non-finite losses, crashes and hygiene: clear errors, nothing lost (bad input: test_bad_input.py)."""
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
from helpers import TINY, run_cli, variant_dir
from safetensors.torch import load_file


REPO = Path(__file__).resolve().parents[1]


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


def _result_and_adapter(root: Path):
    run = variant_dir(root / "results/runs/tiny_roberta/stsb/dora-small")
    return json.loads((run / "seed=1.json").read_text()), load_file(run / "seed=1.adapter/adapter_model.safetensors")


def test_sigkill_at_a_random_point_then_rerun_matches_an_uninterrupted_run(tmp_path, glue_dir, cache_dir):
    args = ["task=stsb", "method=dora", "seed=1", f"data.dir={glue_dir}", *TINY, "trainer.epochs=4",
            "method.prune_interval=1"]
    clean, killed = tmp_path / "clean", tmp_path / "killed"
    clean.mkdir(), killed.mkdir()
    assert run_cli(*args, cwd=clean).returncode == 0
    delay = random.Random(os.getpid()).uniform(0.0, 2.0)
    proc = subprocess.Popen([sys.executable, "-m", "dora_bench", *args], cwd=killed, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoints = killed / "results/checkpoints/tiny_roberta/stsb/dora-small"   # <variant>/seed=1/checkpoint-N
    deadline = time.time() + 300
    while not list(checkpoints.glob("*/seed=1/checkpoint-*/checkpoint_complete.json")) and proc.poll() is None:
        assert time.time() < deadline
        time.sleep(0.05)
    time.sleep(delay)  # somewhere in the following epochs, or while a checkpoint is being written
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    rerun = run_cli(*args, cwd=killed)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    results = list((killed / "results/runs").rglob("seed=*.json"))
    assert len(results) == 1, results
    (a, wa), (b, wb) = _result_and_adapter(clean), _result_and_adapter(killed)
    assert [e["metrics"] for e in a["epochs"]] == [e["metrics"] for e in b["epochs"]], f"killed after +{delay:.2f}s"
    assert a["method_summary"]["rank_pattern"] == b["method_summary"]["rank_pattern"]
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def test_no_remote_code_no_pickles_no_callables_from_the_command_line():
    source = "\n".join(p.read_text() for p in (REPO / "dora_bench").rglob("*.py"))
    assert "trust_remote_code=True" not in source
    assert "instantiate(" not in source and not re.search(r"[\"']_target_[\"']", source)
    for call in re.findall(r"torch\.load\([^)]*\)", source):
        assert "weights_only=True" in call, call
    assert "use_safetensors=True" in source
