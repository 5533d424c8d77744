"""The task head trains in every method and is left out of the paper's counts. On a BERT model (MiniLM) the
head is the classifier and the pooler (dense + tanh), the two parts RoBERTa keeps in its `classifier`."""
import pytest
import torch
from hydra import compose, initialize_config_module
from transformers import BertConfig, BertForSequenceClassification

from dora_bench.methods import apply_method

METHODS = ("full_ft", "bitfit", "h_adapter", "p_adapter", "lora", "adalora", "dora")
TINY_BERT = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                       intermediate_size=64, max_position_embeddings=64, num_labels=1)


def applied(method):
    with initialize_config_module("dora_bench.conf", version_base="1.3"):
        cfg = compose("config", overrides=["model=minilm", "task=stsb", f"method={method}", "budget=small"])
    torch.manual_seed(0)
    return apply_method(BertForSequenceClassification(TINY_BERT), cfg, total_steps=100)


@pytest.mark.parametrize("method", METHODS)
def test_the_pooler_is_head_in_every_method(method):
    handle = applied(method)
    trainable = {n for n, p in handle.model.named_parameters() if p.requires_grad}
    pooler = {n for n in trainable if ".pooler." in n}
    assert any(n.endswith("dense.weight") for n in pooler), sorted(trainable)[:20]
    assert any("classifier" in n and n.endswith("weight") for n in trainable)
    counted = sum(p.numel() for n, p in handle.model.named_parameters()
                  if p.requires_grad and ".pooler." not in n and "classifier" not in n)
    if method == "full_ft":   # the paper counts the whole model
        counted = sum(p.numel() for p in handle.model.parameters())
    if method == "dora":      # the paper's formula over the components (see test_dora_model), no head
        # 12 adapted matrices, Σ (d_in + d_out) = 2 layers × (4·(32 + 32) + 2·(32 + 64)) = 896; r' = ceil(1.5·2) = 3.
        # The tensors also hold c (one entry per component): 3·(896 + 12) parameters outside the head.
        assert (handle.paper_trainable_params(), counted) == (3 * 896, 3 * (896 + 12))
    else:                     # the head (pooler included) is not counted
        assert handle.paper_trainable_params() == counted


def test_a_training_step_moves_the_pooler_under_lora():
    handle = applied("lora")
    model = handle.model
    pooler = next(p for n, p in model.named_parameters() if ".pooler." in n and n.endswith("dense.weight")
                  and p.requires_grad)
    before = pooler.detach().clone()
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    batch = {"input_ids": torch.randint(0, 100, (4, 8)), "labels": torch.rand(4)}
    model(**batch).loss.backward()
    optimizer.step()
    assert not torch.equal(before, pooler.detach())
