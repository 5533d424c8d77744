"""Two CPU processes (torchrun, gloo) agree with each other and with one process at the same global batch."""
import json
import subprocess
import sys

import pytest
from helpers import run_cli

# No dropout anywhere, so one process and two halves of the same global batch compute the same thing.
NO_DROPOUT = ["+model.random_init.hidden_dropout_prob=0", "+model.random_init.attention_probs_dropout_prob=0"]


def common(method, glue_dir):
    extra = ["method.lora_dropout=0", "method.prune_interval=1"] if method == "dora" else [
        "method.lora_dropout=0", "method.delta_t=1"]
    return ["task=stsb", f"method={method}", "model=tiny_roberta", f"data.dir={glue_dir}", "data.max_train_samples=24",
            "trainer.epochs=3", "trainer.batch_size=8", "seed=1", "trainer.progress_bar=false", "trainer.use_cpu=true",
            *NO_DROPOUT, *extra]


@pytest.mark.parametrize("method", ["dora", "adalora"])
@pytest.mark.slow
def test_two_processes_match_one(method, glue_dir, cache_dir, tmp_path):
    args = common(method, glue_dir)
    single, double = tmp_path / "single", tmp_path / "double"
    single.mkdir(), double.mkdir()
    assert run_cli(*args, cwd=single).returncode == 0
    out = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "dora_bench",
                          *args], cwd=double, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.count("[dora-bench] stsb") == 1  # only rank 0 reports
    files = list((double / "results/runs").rglob("seed=*.json"))
    assert len(files) == 1  # only rank 0 writes
    two = json.loads(files[0].read_text())
    one = json.loads(next((single / "results/runs").rglob("seed=*.json")).read_text())
    assert two["train"]["world_size"] == 2
    agreement = two["train"]["rank_agreement"]
    assert agreement["identical"] and len(set(agreement["digests"])) == 1 and len(agreement["digests"]) == 2
    assert two["train"]["optimizer_steps"] == one["train"]["optimizer_steps"] == 9
    assert two["method_summary"]["rank_pattern"] == one["method_summary"]["rank_pattern"]
    for a, b in zip(one["epochs"], two["epochs"]):
        assert a["metrics"]["pearson"] == pytest.approx(b["metrics"]["pearson"], abs=0.05)
