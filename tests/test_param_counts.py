"""Trainable-parameter counts on a RoBERTa-base-shaped model match the paper's."""
import pytest
from roberta_base import config, roberta_base

from dora_bench.methods import apply_method


def count(method, budget="small", total_steps=100):
    handle = apply_method(roberta_base(), config(f"method={method}", f"budget={budget}"), total_steps)
    return handle


@pytest.mark.parametrize("budget,expected", [("small", 331_776), ("large", 1_327_104)])
@pytest.mark.slow
def test_lora_counts(budget, expected):
    handle = count("lora", budget)
    assert handle.paper_trainable_params() == expected
    adapted = [n for n, _ in handle.model.named_modules() if n.endswith("lora_A")]
    assert len(adapted) == 72 and not any("classifier" in n for n in adapted)
    # the head trains too, but is not counted (paper convention)
    assert handle.trainable_params(include_head=True) > expected


def test_bitfit_count():
    handle = count("bitfit")
    assert round(handle.paper_trainable_params() / 1e6, 2) == 0.10
    assert handle.paper_trainable_params() == 102_144  # 12 x (4x768 + 3x768 + 3072) + 768 (embedding LN)


def test_full_ft_count():
    assert round(count("full_ft").paper_trainable_params() / 1e6, 2) == 124.65
