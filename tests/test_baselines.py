"""AdaLoRA (PEFT) and AdapterHub adapters: allocator wiring, counts, frozen weights, CLI."""
import math

import pytest
import torch
from helpers import TINY, run_cli, variant_dir
from roberta_base import config, roberta_base
from tiny_training import build, toy_dataset, train

from dora_bench.engine import load_method_state
from dora_bench.methods import apply_method
from dora_bench.results import read_result

ROBERTA_BASE_SUM = 165_888  # Σ (d_in + d_out) over the 72 adapted matrices of RoBERTa-base
PAPER = {("h_adapter", "small"): 313_536, ("h_adapter", "large"): 1_198_848,
         ("p_adapter", "small"): 304_320, ("p_adapter", "large"): 1_189_632}


@pytest.mark.parametrize("method,budget", sorted(PAPER))
@pytest.mark.slow
def test_adapter_counts_match_the_paper(method, budget):
    handle = apply_method(roberta_base(), config(f"method={method}", f"budget={budget}"), 100)
    assert handle.paper_trainable_params() == PAPER[method, budget]
    assert handle.trainable_params(include_head=True) > PAPER[method, budget]  # head trains too


@pytest.mark.parametrize("budget,init_r", [("small", 3), ("large", 12)])
def test_adalora_count_at_init(budget, init_r):
    handle = apply_method(roberta_base(), config("method=adalora", f"budget={budget}"), 100)
    assert handle.paper_trainable_params() == init_r * (ROBERTA_BASE_SUM + 72)
    assert len(handle.summary()["rank_pattern"]) == 72


def nonzero_singular_values(model) -> int:
    return sum(int((p != 0).sum()) for n, p in model.named_parameters() if "lora_E" in n)


def adalora_run(cache_dir, tmp_path, hook: bool):
    """40 optimizer steps (T) of AdaLoRA through the engine; tinit = 6, tfinal = 20."""
    dataset_size, batch = 40, 4
    handle, tokenizer = build(["method=adalora", "budget=small", "method.delta_t=2"], cache_dir, total_steps=40)
    if not hook:
        handle.after_optimizer_step = lambda step: None
    matrices = len(handle.summary()["rank_pattern"])
    seen = {}
    inner = handle.after_optimizer_step
    tuner = handle.model.base_model  # PEFT's AdaLoraModel: record the steps its allocator is given
    allocate, allocated = tuner.update_and_allocate, []
    tuner.update_and_allocate = lambda global_step: (allocated.append(global_step), allocate(global_step))

    def spy(step):
        inner(step)
        seen[step] = nonzero_singular_values(handle.model)
    handle.after_optimizer_step = spy
    train(handle, tokenizer, toy_dataset(tokenizer, dataset_size), tmp_path, epochs=4, batch_size=batch)
    return handle, matrices, seen, allocated


def test_adalora_allocator_runs_inside_the_engine(cache_dir, tmp_path):
    handle, matrices, seen, allocated = adalora_run(cache_dir, tmp_path, hook=True)
    assert sorted(seen) == list(range(1, 41))  # the hook ran after every optimizer step, counted from 1
    assert allocated == list(range(40))        # PEFT counts from 0: optimizer step t is its global_step t − 1
    summary = handle.summary()
    assert (summary["tinit"], summary["tfinal"], summary["total_step"]) == (6, 20, 40)   # int(0.15·40), int(0.5·40)
    # The first mask comes at PEFT step 8, the first multiple of deltaT = 2 after tinit = 6 (optimizer step 9), with
    # the cubic budget int((3m − 2m)·(1 − (8 − 6)/(40 − 20 − 6))³ + 2m) triplets of the 3m.
    assert all(seen[t] == 3 * matrices for t in range(1, 9)), seen
    assert seen[9] == int(matrices * (1 - 2 / 14) ** 3 + 2 * matrices)
    # PEFT step T − tfinal = 20 (optimizer step 21) fixes the rank pattern; every later step re-applies it.
    assert handle.final_structure_step == 21
    assert all(seen[t] == 2 * matrices for t in range(21, 41)), seen
    assert sum(summary["rank_pattern"].values()) == 2 * matrices
    assert handle.paper_trainable_params() < 3 * (sum(m.in_features + m.out_features for m in _svd(handle)) + matrices)


def test_adalora_boundaries_truncate_like_the_original_scripts(cache_dir):
    """T = 33: tinit = int(0.15·33) = int(4.95) = 4, tfinal = int(16.5) = 16; the pattern is final after PEFT step
    33 − 16 = 17, i.e. optimizer step 18."""
    handle, _ = build(["method=adalora", "budget=small"], cache_dir, total_steps=33)
    peft_config = handle.model.peft_config["default"]
    assert (peft_config.tinit, peft_config.tfinal, peft_config.total_step) == (4, 16, 33)
    assert (handle.summary()["tinit"], handle.summary()["tfinal"]) == (4, 16)
    assert handle.final_structure_step == 18


def test_adalora_without_the_hook_trains_like_lora(cache_dir, tmp_path):
    _, matrices, seen, _ = adalora_run(cache_dir, tmp_path, hook=False)
    assert seen[40] == 3 * matrices  # nothing pruned: the previous test's assertion would fail


def _svd(handle):
    from peft.tuners.adalora import SVDLinear

    return [m for m in handle.model.modules() if isinstance(m, SVDLinear)]


@pytest.mark.parametrize("method", ["bitfit", "lora", "adalora", "h_adapter", "p_adapter", "dora"])
@pytest.mark.slow
def test_frozen_parameters_stay_unchanged(method, cache_dir, tmp_path):
    handle, tokenizer = build([f"method={method}"], cache_dir, total_steps=8)
    before = {n: p.detach().clone() for n, p in handle.model.named_parameters()}
    train(handle, tokenizer, toy_dataset(tokenizer, 32), tmp_path, epochs=1, batch_size=4)
    after = dict(handle.model.named_parameters())
    frozen = [n for n in before if not after[n].requires_grad]
    trained = [n for n in before if after[n].requires_grad]
    assert frozen and trained
    assert all(torch.equal(before[n], after[n]) for n in frozen)
    assert any(not torch.equal(before[n], after[n]) for n in trained)
    assert any("classifier" in n for n in trained)


@pytest.mark.slow
def test_cli_runs_every_baseline(glue_dir, cache_dir, tmp_path):
    out = run_cli("-m", "task=rte", "method=adalora,h_adapter,p_adapter", "seed=1", f"data.dir={glue_dir}", *TINY,
                  cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    for run in ("adalora-small", "h_adapter-small", "p_adapter-small"):
        folder = variant_dir(tmp_path / "results/runs/tiny_roberta/rte" / run)
        result = read_result(folder / "seed=1.json")
        assert result.status == "complete", result.error
        assert all(math.isfinite(v) for v in result.select("best").metrics.values())
        assert (folder / "seed=1.adapter").is_dir()
    adalora = read_result(variant_dir(tmp_path / "results/runs/tiny_roberta/rte/adalora-small") / "seed=1.json")
    assert adalora.method_summary["rank_pattern"] and adalora.final_structure_step > 0


def test_adalora_allocator_state_round_trips_through_a_checkpoint(cache_dir, tmp_path):
    """The sensitivity and uncertainty averages and the rank pattern mid-pruning, as a resumed run gets them back.
    T = 16: tinit = 2, a mask after every PEFT step 3..7; training stops after step 6, a checkpoint every 3 steps."""
    overrides = ["method=adalora", "budget=small", "method.delta_t=1"]
    handle, tokenizer = build(overrides, cache_dir, total_steps=16)
    train(handle, tokenizer, toy_dataset(tokenizer, 32), tmp_path, epochs=2, batch_size=4, max_steps=6,
          save_strategy="steps", save_steps=3)
    resumed, _ = build(overrides, cache_dir, total_steps=16)
    load_method_state(resumed, tmp_path / "checkpoint-6")
    trained, loaded = handle.model.base_model.rankallocator, resumed.model.base_model.rankallocator
    for averages in ("ipt", "exp_avg_ipt", "exp_avg_unc"):
        a, b = getattr(trained, averages), getattr(loaded, averages)
        assert a and a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), averages
    ranks = handle.summary()["rank_pattern"]
    assert resumed.summary()["rank_pattern"] == ranks and sum(ranks.values()) < 3 * len(ranks)  # some pruned
