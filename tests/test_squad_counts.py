"""Methods on a RoBERTa-base-shaped QA model: qa_outputs trains but is not counted (paper convention)."""
import pytest
from roberta_base import config, roberta_base

from dora_bench.methods import apply_method

QA_HEAD = 768 * 2 + 2  # qa_outputs: hidden -> (start, end)


@pytest.mark.parametrize("method,expected", [("lora", 331_776), ("bitfit", 102_144)])
@pytest.mark.slow
def test_qa_head_trains_and_is_excluded_from_the_paper_count(method, expected):
    handle = apply_method(roberta_base("qa"), config("task=squad_v1", f"method={method}", "budget=small"), 100)
    assert handle.paper_trainable_params() == expected
    assert handle.trainable_params(include_head=True) == expected + QA_HEAD
    trainable_head = [n for n, p in handle.model.named_parameters() if "qa_outputs" in n and p.requires_grad]
    assert len(trainable_head) == 2  # weight and bias (PEFT: its trainable copy)
