"""The decoder experiments: +experiment=llm_gsm8k (GPU: Llama-3.2-3B, every applicable method and the zero-shot base
model, seeds 1-5) and +experiment=llm_cpu (SmolLM2-135M offline, one protocol for every method, three learning rates
each on seed 1, seeds 2 and 3 at the rate chosen). Every job of both sweeps composes and validates in
test_experiments.py; here: what they promise."""
import pytest
from hydra import compose, initialize_config_module
from test_experiments import composed, sweep_lists

APPLICABLE = {"none", "full_ft", "h_adapter", "p_adapter", "lora", "adalora", "dora"}   # BitFit: Llama has no bias
SEARCH = ("search_low", "search_mid", "search_high")


@pytest.fixture(scope="module", autouse=True)
def hydra_conf():
    with initialize_config_module("dora_bench.conf", version_base="1.3"):
        yield


@pytest.mark.slow
def test_llm_gsm8k_is_the_gpu_setting():
    lists = sweep_lists("llm_gsm8k")
    assert set(lists["method"]) == APPLICABLE and lists["seed"] == ["1", "2", "3", "4", "5"]
    for method in lists["method"]:
        cfg = composed("llm_gsm8k", f"method={method}")
        assert (cfg["model"]["name"], cfg["task"]["name"], cfg["budget"]["rank"]) == ("llama3_2_3b", "gsm8k", 8)
        assert cfg["trainer"]["precision"] == "bf16" and cfg["trainer"]["gradient_checkpointing"]
        assert cfg["trainer"]["epochs"] == cfg["task"]["epochs"]          # Full FT too (its own default is 10)
        assert cfg["data"]["max_eval_samples"] is None and cfg["task"]["generate_samples"] is None   # all of test
    rates = {m: composed("llm_gsm8k", f"method={m}")["trainer"]["learning_rate"] for m in lists["method"]}
    assert rates["full_ft"] < rates["lora"] == rates["dora"] == rates["adalora"] == rates["h_adapter"]


@pytest.mark.slow
def test_llm_cpu_runs_one_protocol_searches_on_seed_1_and_confirms_the_pick_on_seeds_2_and_3(monkeypatch):
    """The search: seed 1 at three rates a factor of about 3 apart (a winner in the middle is bracketed), and a rung
    beyond (about a third / three times) where a method picked an outer one, else the same rate again; the confirmation:
    seeds 2 and 3 at the rate the search chose for the method, one of those it tried."""
    monkeypatch.setenv("DORA_BENCH_DATA", "/data")
    lists = sweep_lists("llm_cpu")
    assert set(lists["method"]) == APPLICABLE and "seed" not in lists and "lr_grid" not in lists
    assert lists["llm_trial"] == ["search_lower", *SEARCH, "search_higher", "confirm_2", "confirm_3"]
    protocol = set()
    for method in lists["method"]:
        runs = {trial: composed("llm_cpu", f"method={method}", f"llm_trial={trial}") for trial in lists["llm_trial"]}
        assert [runs[t]["seed"] for t in lists["llm_trial"]] == [1, 1, 1, 1, 1, 2, 3]
        lower, low, mid, high, higher = rates = [runs[t]["trainer"]["learning_rate"] for t in lists["llm_trial"][:5]]
        picked = {runs[trial]["trainer"]["learning_rate"] for trial in ("confirm_2", "confirm_3")}
        assert len(picked) == 1 and picked <= set(rates), (method, rates, picked)
        if method == "none":
            assert len(set(rates)) == 1                                   # trains nothing: one configuration
        else:
            assert low < mid < high and mid / low >= 2.5 and high / mid >= 2.5, (method, rates)   # mid is bracketed
            assert lower == low or 2.5 <= low / lower <= 4, (method, rates)       # a third-ish, or low again
            assert higher == high or 2.5 <= higher / high <= 4, (method, rates)
        protocol |= {(cfg["model"]["name"], cfg["budget"]["name"], cfg["trainer"]["epochs"], cfg["trainer"]["batch_size"],
                      cfg["trainer"]["max_length"], cfg["trainer"]["precision"], cfg["trainer"]["group_by_length"],
                      cfg["data"]["max_train_samples"], cfg["data"]["max_eval_samples"], cfg["data"]["dir"],
                      cfg["task"]["metric"], cfg["task"]["validation_size"], cfg["task"]["generate_samples"])
                     for cfg in runs.values()}
    assert len(protocol) == 1                                             # the same examples and steps for all
    model, budget, _, _, _, precision, _, _, _, data_dir, metric, validation, generated = protocol.pop()
    assert (model, budget, precision, data_dir, metric) == ("smollm2_135m", "large", "bf16", "/data/gsm8k", "answer_nll")
    assert generated < validation                                         # generation on a small fixed subset


def test_the_zero_shot_reference_is_one_run_per_seed_in_llm_cpu():
    """method=none has the same identity under every rate, so the sweep evaluates the base model once per seed."""
    from dora_bench import results

    identities = {results.fingerprint(results.identity(compose("config", overrides=[
        "+experiment=llm_cpu", "method=none", f"llm_trial={trial}"]), 1)) for trial in SEARCH}
    assert len(identities) == 1


DECODER_PRESETS = ("tiny_llama", "tiny_gpt2", "stories260k", "smollm2_135m", "smollm2_135m_hub", "qwen2_5_0_5b",
                   "llama3_2_1b", "llama3_2_3b")


@pytest.mark.parametrize("preset", DECODER_PRESETS)
def test_every_decoder_preset_validates_and_adapts_every_projection_of_every_layer(preset):
    """The preset's regex, applied to the module names of a small model of its architecture, matches the seven
    projections of every layer (GPT-2: its four Conv1D, both c_proj included) and never lm_head or embeddings."""
    import re

    import torch
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    from dora_bench.schema import validate

    cfg = compose("config", overrides=[f"model={preset}", "task=gsm8k", "trainer.max_length=256"])
    validate(cfg)
    small = dict(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
                 num_key_value_heads=2)
    kind = "gpt2" if "gpt2" in preset else "qwen2" if "qwen" in preset else "llama"
    with torch.device("meta"):
        model = {"gpt2": lambda: GPT2LMHeadModel(GPT2Config(vocab_size=64, n_embd=32, n_layer=3, n_head=4)),
                 "qwen2": lambda: Qwen2ForCausalLM(Qwen2Config(**small)),
                 "llama": lambda: LlamaForCausalLM(LlamaConfig(**small))}[kind]()
    matched = [name for name, _ in model.named_modules() if re.fullmatch(cfg.model.adapted_modules, name)]
    per_layer = 4 if kind == "gpt2" else 7
    assert len(matched) == 3 * per_layer, matched
    assert not [name for name in matched if "lm_head" in name or "emb" in name or "wte" in name]
    if kind == "gpt2":
        assert sum(name.endswith("c_proj") for name in matched) == 2 * 3
