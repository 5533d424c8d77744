"""End-to-end CLI: SQuAD v1/v2 on a tiny random RoBERTa and XSum on a tiny random BART, files the test writes."""
import json
import math
import re
import string
from collections import Counter

import pytest
from helpers import run_cli, variant_dir, write_squad, write_xsum
from rouge_score import rouge_scorer

from dora_bench.results import RunResult

pytestmark = pytest.mark.slow   # trains end to end (module fixtures): the full tier

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
    version_2 = task == "squad_v2"
    dev = json.loads((data / ("dev-v2.0.json" if version_2 else "dev-v1.1.json")).read_text())
    questions = {qa["id"]: (p["context"], qa) for p in dev["data"][0]["paragraphs"] for qa in p["qas"]}
    null_odds_file = folder / "seed=1.predictions" / "validation.null_odds.json"
    assert null_odds_file.exists() == version_2
    null_odds = json.loads(null_odds_file.read_text()) if version_2 else {}
    for qid, answer in predictions.items():
        context = questions[qid][0]
        if version_2 and (null_odds[qid] is None or null_odds[qid] > 0.0):   # the null answer wins (threshold 0)
            assert answer == "", (qid, answer, null_odds[qid])
        else:  # a span of this question's own context, never empty
            assert answer and answer in context, (qid, answer)
    # the stored scores are those of the written predictions, by the official scripts' rules
    assert metrics == pytest.approx(official_squad(predictions, questions, version_2) | {"score": metrics["f1"]})


# ---- the official SQuAD evaluation scripts (v1.1, v2.0), written out here independently of dora_bench -------------
def official_normalize(s: str) -> str:
    s = s.lower()
    s = "".join(ch for ch in s if ch not in set(string.punctuation))
    s = re.sub(r"\b(a|an|the)\b", " ", s)
    return " ".join(s.split())


def official_f1(prediction: str, gold: str, version_2: bool) -> float:
    pred, ref = official_normalize(prediction).split(), official_normalize(gold).split()
    if version_2 and (not pred or not ref):
        return float(pred == ref)
    same = sum((Counter(pred) & Counter(ref)).values())
    return 0.0 if same == 0 else 2 * same / (len(pred) + len(ref))   # 2PR/(P+R) with P = same/|pred|, R = same/|ref|


def official_squad(predictions: dict, questions: dict, version_2: bool) -> dict:
    exact, f1, has_answer = {}, {}, {}
    for qid, (_, qa) in questions.items():
        golds = [a["text"] for a in qa["answers"]]
        has_answer[qid] = bool(golds)
        if version_2:
            golds = [g for g in golds if official_normalize(g)] or [""]
        exact[qid] = max(float(official_normalize(predictions[qid]) == official_normalize(g)) for g in golds)
        f1[qid] = max(official_f1(predictions[qid], g, version_2) for g in golds)
    parts = {"": list(questions)}
    if version_2:
        parts |= {"HasAns_": [q for q in questions if has_answer[q]], "NoAns_": [q for q in questions if not has_answer[q]]}
    return {f"{prefix}{name}": 100.0 * sum(scores[q] for q in qids) / len(qids)
            for prefix, qids in parts.items() for name, scores in (("exact", exact), ("f1", f1))}


@pytest.mark.parametrize("run", ["lora-small", "bitfit"])
def test_xsum_runs_complete_with_rouge_and_write_generated_summaries(xsum, run):
    runs, data, _ = xsum
    folder = variant_dir(runs / run)
    result = json.loads((folder / "seed=1.json").read_text())
    metrics = finite_metrics(result)
    assert set(metrics) == {"rouge1", "rouge2", "rougeL", "score"} and metrics["score"] == metrics["rougeL"]
    lines = (folder / "seed=1.predictions" / "validation.jsonl").read_text().splitlines()
    references = [json.loads(line)["summary"] for line in (data / "validation.jsonl").read_text().splitlines()]
    written = [json.loads(line) for line in lines]
    assert [w["reference"] for w in written] == references
    assert all(isinstance(w["generated"], str) for w in written)
    # the stored scores are rouge-score's own F-measures (×100, mean over examples) of the written summaries
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=False)
    scores = [scorer.score(w["reference"], w["generated"]) for w in written]
    recomputed = {name: 100 * sum(s[name].fmeasure for s in scores) / len(scores) for name in ("rouge1", "rouge2", "rougeL")}
    assert metrics == pytest.approx(recomputed | {"score": recomputed["rougeL"]})


def test_xsum_lora_adapts_96_matrix_kinds_and_no_head(xsum):
    runs, _, stdout = xsum
    params = json.loads((variant_dir(runs / "lora-small") / "seed=1.json").read_text())["params"]
    d, ffn, r, layers = 32, 64, 2, 2  # tiny_bart
    per_encoder_layer = 4 * r * (d + d) + 2 * r * (d + ffn)
    per_decoder_layer = 8 * r * (d + d) + 2 * r * (d + ffn)
    expected = layers * (per_encoder_layer + per_decoder_layer)
    assert params["trainable_paper"] == params["trainable_with_head"] == expected
    assert "use_stemmer=False, rougeL)" in stdout  # which ROUGE was used is printed
