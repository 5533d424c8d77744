"""The decoder table of dora-bench-tables on made-up GSM8K result files: rows chosen on the validation NLL (lower is
better), the test split beside it, each column compared in its own direction, what each method costs, the base
model's row without training costs, and no paper column (the paper has no decoder experiment)."""
import json

import pytest
from test_tables import cell, put, render, row

NLL = ["task.metric=answer_nll"]


def put_llm(root, method, budget, seed, val_nll, *, test_nll=None, test_em=10.0, rate="0.001", step=2.0, peak=900.0,
            tokens=300.0, adapter=None, params=1000):
    metrics = {"answer_nll": val_nll, "exact_match": test_em, "test_answer_nll": test_nll or val_nll + 0.1,
               "test_exact_match": test_em, "test_answer_token_accuracy": 50.0}
    trains = method != "none"
    path = put(root, "gsm8k", method, budget, seed, val_nll, model="tiny_llama", params=params if trains else 0,
               overrides=[*NLL, *([f"trainer.learning_rate={rate}"] if trains else [])], metrics=metrics,
               epochs=[{"epoch": 1.0 if trains else 0.0, "step": 10 if trains else 0,
                        "metrics": {"score": val_nll, **metrics}}],
               timing={"peak_memory_mb": peak, "peak_memory_scope": "run",
                       "step_time_median_s": step if trains else float("nan"),
                       "train_tokens_per_s": tokens if trains else None})
    data = json.loads(path.read_text())
    path.write_text(json.dumps(data | {"adapter_bytes": adapter}))
    return path


def header(text):
    return [c.strip() for c in next(line for line in text.splitlines() if line.startswith("| Method")).strip("|").split("|")]


@pytest.mark.slow
def test_the_decoder_table_shows_scores_costs_and_the_base_model_row(tmp_path):
    for seed in (1, 2, 3):
        put_llm(tmp_path, "none", None, seed, 2.00, test_em=2.0)
        put_llm(tmp_path, "lora", "large", seed, 1.50 + 0.01 * seed, test_em=10.0 + seed, adapter=2 * 2**20)
        put_llm(tmp_path, "lora", "large", seed, 1.80, rate="0.0001", test_em=40.0, adapter=2 * 2**20)  # worse rate
        put_llm(tmp_path, "dora", "large", seed, 1.30 + 0.01 * seed, test_nll=1.35 + 0.01 * seed, test_em=5.0 + seed,
                step=3.0, adapter=2**20)
        put_llm(tmp_path, "full_ft", None, seed, 1.60 + 0.02 * seed, test_em=11.0 + seed, step=5.0, peak=2000.0)
    text = render(tmp_path)["decoder"]
    names = header(text)
    assert names == ["Method", "Budget", "Params", "val NLL", "test NLL", "test EM", "peak MiB", "step s", "train tok/s",
                     "adapter MiB"]                                            # no paper column: our own table
    base = row(text, "Base model", "—")
    assert base[3:6] == ["2.000 ± 0.000 (3) ▼", "2.100 ± 0.000 (3) ▼", "2.0 ± 0.0 (3) ▼"]
    assert base[7:] == ["—", "—", "—"] and base[2] == "0"                       # trains nothing: no step, no adapter
    lora = row(text, "LoRA", "large")
    assert lora[3].startswith("1.520 ± 0.008 (3)†")   # the lowest NLL wins (0.001, not 0.0001), at the grid's edge
    assert lora[5] == "12.0 ± 0.8 (3)†" and lora[7:] == ["2.00 ± 0.00 (3)", "300 ± 0 (3)", "2.00 ± 0.00 (3)"]
    dora = row(text, "DoRA", "large")
    assert dora[3] == "1.320 ± 0.008 (3) ▲" and dora[4] == "1.370 ± 0.008 (3) ▲"   # lower NLL than LoRA: better
    assert dora[5] == "7.0 ± 0.8 (3) ▼"                                              # lower exact match: worse
    full = row(text, "Full FT", "—")
    assert full[9] == "—" and full[6] == "2000 ± 0 (3)"                              # exports no adapter
    assert "paper (Δ)" not in text and "Base model: the model as loaded" in text


@pytest.mark.slow
def test_a_search_on_seed_1_confirmed_on_seeds_1_to_3_is_judged_on_seed_1(tmp_path):
    """A rate searched on seed 1 and run on seeds 1-3 at the pick: the cell compares its configurations on the seed
    they share, not the pick's three-seed mean against the others' one seed (either way round)."""
    for name, pick, neighbour in (("beaten", (1.60, 1.20, 1.20), 1.40), ("confirmed", (1.45, 1.50, 1.50), 1.48)):
        root = tmp_path / name
        put_llm(root, "lora", "large", 1, 1.70, rate="0.003")                 # a neighbour, seed 1 only
        put_llm(root, "lora", "large", 1, neighbour, rate="0.0003")           # the other neighbour, seed 1 only
        for seed, nll in zip((1, 2, 3), pick):
            put_llm(root, "lora", "large", seed, nll, rate="0.001")           # the pick, seeds 1-3
        text = render(root)["decoder"]
        shown = cell(text, ("LoRA", "large"), "val NLL")[0]
        if name == "beaten":    # 0.0003 beats the pick on seed 1 (1.40 < 1.60), though the pick's mean is 1.33
            assert shown == "1.400 ± 0.000 (1)†"
        else:                   # the pick wins on seed 1 (1.45 < 1.48), though its mean (1.483) is not below 1.48
            assert shown == "1.483 ± 0.024 (3)"
            assert "on seed(s) 1, which all have: 1.45; over its own 1.48 (n=3) of 3 configurations" in text
