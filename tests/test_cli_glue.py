"""End-to-end CLI runs on a tiny random RoBERTa and GLUE-layout files written by the test."""
import json
import math

import pytest
from helpers import TINY, run_cli, variant_dir

from dora_bench.results import RunResult

pytestmark = pytest.mark.slow   # trains end to end (module fixtures): the full tier

TASKS = ("rte", "mrpc", "stsb", "cola", "sst2", "qnli", "qqp", "mnli")


@pytest.fixture(scope="module")
def sweep(tmp_path_factory, glue_dir, cache_dir):
    """One Hydra multirun over all eight tasks (LoRA) plus Full FT and BitFit on RTE."""
    work = tmp_path_factory.mktemp("sweep")
    lora = run_cli("-m", f"task={','.join(TASKS)}", "method=lora", "seed=1", f"data.dir={glue_dir}", *TINY, cwd=work)
    assert lora.returncode == 0, lora.stderr[-3000:]
    others = run_cli("-m", "task=rte", "method=full_ft,bitfit", "seed=1", f"data.dir={glue_dir}", *TINY, cwd=work)
    assert others.returncode == 0, others.stderr[-3000:]
    return work, lora.stdout + others.stdout


def load(work, task, run):
    return json.loads((variant_dir(work / "results/runs/tiny_roberta" / task / run) / "seed=1.json").read_text())


@pytest.mark.parametrize("task", TASKS)
def test_every_glue_task_writes_a_complete_result_with_finite_metrics(sweep, task):
    work, _ = sweep
    result = load(work, task, "lora-small")
    assert result["status"] == "complete"
    assert [e["epoch"] for e in result["epochs"]] == [1.0, 2.0]
    for epoch in result["epochs"]:
        assert all(isinstance(v, float) and math.isfinite(v) for v in epoch["metrics"].values())
    assert RunResult.from_dict(result).select("best").score == max(e["metrics"]["score"] for e in result["epochs"])
    assert result["params"]["trainable_paper"] < result["params"]["trainable_with_head"]
    assert result["data"]["files"]["train"]["sha256"]
    assert result["env"]["versions"]["transformers"].startswith("4.57")
    assert result["config"]["task"]["name"] == task


def test_task_specific_metrics(sweep):
    work, _ = sweep
    assert set(load(work, "cola", "lora-small")["epochs"][0]["metrics"]) == {"matthews", "score"}
    assert set(load(work, "stsb", "lora-small")["epochs"][0]["metrics"]) == {"pearson", "spearman", "score"}
    assert set(load(work, "mrpc", "lora-small")["epochs"][0]["metrics"]) == {"accuracy", "f1", "score"}
    mnli = load(work, "mnli", "lora-small")["epochs"][0]["metrics"]
    assert mnli["accuracy"] == pytest.approx((mnli["matched_accuracy"] + mnli["mismatched_accuracy"]) / 2)
    assert mnli["score"] == mnli["accuracy"]


def test_budget_free_methods_have_no_budget_in_their_name(sweep):
    work, out = sweep
    full, bitfit = load(work, "rte", "full_ft"), load(work, "rte", "bitfit")
    assert full["budget"] is None and bitfit["budget"] is None
    assert full["params"]["trainable_paper"] == full["params"]["total"]
    assert 0 < bitfit["params"]["trainable_paper"] < full["params"]["trainable_paper"] / 10
    assert "rte full_ft: accuracy" in out


def test_rerun_skips_finished_seeds(sweep, glue_dir):
    work, _ = sweep
    path = variant_dir(work / "results/runs/tiny_roberta/rte/lora-small") / "seed=1.json"
    before = path.stat().st_mtime_ns, path.read_text()
    again = run_cli("task=rte", "method=lora", "seed=1", f"data.dir={glue_dir}", *TINY, cwd=work)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "complete result exists, skipping" in again.stdout
    assert (path.stat().st_mtime_ns, path.read_text()) == before


def test_same_seed_twice_gives_identical_metrics(sweep, glue_dir, tmp_path):
    work, _ = sweep
    again = run_cli("task=rte", "method=lora", "seed=1", f"data.dir={glue_dir}", *TINY, cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-2000:]
    first = load(work, "rte", "lora-small")
    second = json.loads((variant_dir(tmp_path / "results/runs/tiny_roberta/rte/lora-small") / "seed=1.json").read_text())
    assert [e["metrics"] for e in first["epochs"]] == [e["metrics"] for e in second["epochs"]]


def test_seed_loop_prints_mean_and_std(glue_dir, cache_dir, tmp_path):
    out = run_cli("task=rte", "method=bitfit", "seeds=[1,2]", f"data.dir={glue_dir}", *TINY, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "over 2 seed(s) [1, 2]" in out.stdout and "±" in out.stdout
    runs = variant_dir(tmp_path / "results/runs/tiny_roberta/rte/bitfit")
    assert sorted(p.name for p in runs.glob("*.json")) == ["seed=1.json", "seed=2.json"]
