"""End-to-end CLI: SQuAD v1/v2 on a tiny random RoBERTa and XSum on a tiny random BART, files the test writes."""
import json
import math

import pytest
from helpers import run_cli, variant_dir, write_squad, write_xsum

from dora_bench.results import RunResult

SMALL = ("seed=1", "trainer.epochs=1", "trainer.batch_size=8", "trainer.logging_steps=1", "trainer.progress_bar=false")
SQUAD_KEYS = {"squad_v1": {"exact", "f1", "score"},
              "squad_v2": {"exact", "f1", "HasAns_exact", "HasAns_f1", "NoAns_exact", "NoAns_f1", "score"}}


@pytest.fixture(scope="module")
def squad(tmp_path_factory, cache_dir):
    """One multirun: squad_v1 and squad_v2 × LoRA and BitFit, 64-token windows (several per context).

    `++`: the sweep is composed once with the default task, which has no doc_stride.
    """
    data = write_squad(write_squad(tmp_path_factory.mktemp("squad_data"), version_2=False), version_2=True)
    work = tmp_path_factory.mktemp("squad_runs")
    out = run_cli("-m", "task=squad_v1,squad_v2", "method=lora,bitfit", "model=tiny_roberta", f"data.dir={data}",
                  "trainer.max_length=64", "++task.doc_stride=16", *SMALL, cwd=work)
    assert out.returncode == 0, out.stderr[-3000:]
    return work / "results/runs/tiny_roberta", data


@pytest.fixture(scope="module")
def xsum(tmp_path_factory, cache_dir):
    data = write_xsum(tmp_path_factory.mktemp("xsum_data"))
    work = tmp_path_factory.mktemp("xsum_runs")
    out = run_cli("-m", "task=xsum", "method=lora,bitfit", "model=tiny_bart", f"data.dir={data}",
                  "trainer.max_length=128", "task.max_target_length=32", "task.generation.generation_max_length=16",
                  *SMALL, cwd=work)
    assert out.returncode == 0, out.stderr[-3000:]
    return work / "results/runs/tiny_bart/xsum", data, out.stdout


def finite_metrics(result) -> dict:
    assert result["status"] == "complete", result.get("error")
    metrics = RunResult.from_dict(result).select("best").metrics
    assert all(isinstance(v, float) and math.isfinite(v) for v in metrics.values()), metrics
    return metrics


@pytest.mark.parametrize("task", ["squad_v1", "squad_v2"])
@pytest.mark.parametrize("run", ["lora-small", "bitfit"])
def test_squad_runs_complete_with_official_metrics_and_write_predictions(squad, task, run):
    runs, data = squad
    folder = variant_dir(runs / task / run)
    result = json.loads((folder / "seed=1.json").read_text())
    metrics = finite_metrics(result)
    assert set(metrics) == SQUAD_KEYS[task] and metrics["score"] == metrics["f1"]
    assert 0.0 <= metrics["exact"] <= metrics["f1"] <= 100.0
    # every question is answered from its windows: more features than questions
    assert result["train"]["train_samples"] > 24 and result["train"]["eval_samples"]["validation"] > 12
    assert result["params"]["trainable_paper"] < result["params"]["trainable_with_head"]  # qa_outputs not counted
    predictions = json.loads((folder / "seed=1.predictions" / "validation.json").read_text())
    assert sorted(predictions) == sorted(f"q{i}" for i in range(12))
    dev = json.loads((data / ("dev-v2.0.json" if task == "squad_v2" else "dev-v1.1.json")).read_text())
    contexts = [p["context"] for p in dev["data"][0]["paragraphs"]]
    assert all(isinstance(a, str) and any(a in c for c in contexts) for a in predictions.values())
    null_odds = folder / "seed=1.predictions" / "validation.null_odds.json"
    assert null_odds.exists() == (task == "squad_v2")


@pytest.mark.parametrize("run", ["lora-small", "bitfit"])
def test_xsum_runs_complete_with_rouge_and_write_generated_summaries(xsum, run):
    runs, data, _ = xsum
    folder = variant_dir(runs / run)
    result = json.loads((folder / "seed=1.json").read_text())
    metrics = finite_metrics(result)
    assert set(metrics) == {"rouge1", "rouge2", "rougeL", "score"} and metrics["score"] == metrics["rougeL"]
    lines = (folder / "seed=1.predictions" / "validation.jsonl").read_text().splitlines()
    references = [json.loads(line)["summary"] for line in (data / "validation.jsonl").read_text().splitlines()]
    assert [json.loads(line)["reference"] for line in lines] == references
    assert all(isinstance(json.loads(line)["generated"], str) for line in lines)


def test_xsum_lora_adapts_96_matrix_kinds_and_no_head(xsum):
    runs, _, stdout = xsum
    params = json.loads((variant_dir(runs / "lora-small") / "seed=1.json").read_text())["params"]
    d, ffn, r, layers = 32, 64, 2, 2  # tiny_bart
    per_encoder_layer = 4 * r * (d + d) + 2 * r * (d + ffn)
    per_decoder_layer = 8 * r * (d + d) + 2 * r * (d + ffn)
    expected = layers * (per_encoder_layer + per_decoder_layer)
    assert params["trainable_paper"] == params["trainable_with_head"] == expected
    assert "use_stemmer=False, rougeL)" in stdout  # which ROUGE was used is printed
