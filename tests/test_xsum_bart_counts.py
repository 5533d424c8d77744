"""LoRA on a BART-base-shaped model (random weights from a config): the paper's counts, no lm_head."""
import copy
from functools import lru_cache

import pytest
from hydra import compose, initialize_config_module
from transformers import BartConfig, BartForConditionalGeneration

from dora_bench.methods import apply_method

# BartConfig's defaults are BART-large: spell out BART-base.
BART_BASE = dict(vocab_size=50265, d_model=768, encoder_layers=6, decoder_layers=6, encoder_attention_heads=12,
                 decoder_attention_heads=12, encoder_ffn_dim=3072, decoder_ffn_dim=3072, max_position_embeddings=1024)


@lru_cache(maxsize=1)
def _bart_base():
    return BartForConditionalGeneration(BartConfig(**BART_BASE))


def config(*overrides):
    with initialize_config_module("dora_bench.conf", version_base="1.3"):
        return compose("config", overrides=["task=xsum", "model=bart_base", *overrides])


@pytest.mark.parametrize("budget,expected", [("small", 405_504), ("large", 1_622_016)])
@pytest.mark.slow
def test_lora_counts_on_bart_base(budget, expected):
    handle = apply_method(copy.deepcopy(_bart_base()), config("method=lora", f"budget={budget}"), 100)
    assert handle.paper_trainable_params() == expected
    adapted = [n.removesuffix(".lora_A") for n, _ in handle.model.named_modules() if n.endswith("lora_A")]
    assert len(adapted) == 96
    assert sum(".encoder." in n for n in adapted) == 36 and sum("encoder_attn" in n for n in adapted) == 24
    # lm_head is tied to the frozen shared embeddings and trains in no way
    trainable = [n for n, p in handle.model.named_parameters() if p.requires_grad]
    assert all("lora_" in n for n in trainable)
    assert handle.trainable_params(include_head=True) == expected
    lm_head = handle.model.get_output_embeddings()
    assert lm_head.weight is handle.model.get_input_embeddings().weight and not lm_head.weight.requires_grad
