"""DoRA under gradient accumulation: batch 16 × accumulation 1 and batch 8 × accumulation 2 are the same
training run — same regularised loss per optimizer step, same importance scores, same masks. The DEM
term counts once per optimizer step, not once per micro-batch, whichever way the Trainer scales losses:
it divides by the accumulation steps for models that ignore ``num_items_in_batch`` (RoBERTa), and not
for models that normalise by it themselves (causal LMs such as Llama)."""
import pytest
import torch
from datasets import Dataset
from tiny_training import tiny_cfg, toy_dataset, train
from transformers import LlamaConfig, LlamaForCausalLM, default_data_collator

from dora_bench.engine import optimizer_steps
from dora_bench.methods import apply_method
from dora_bench.models import load_model

SAMPLES, EPOCHS = 64, 3
TOTAL_STEPS = optimizer_steps(SAMPLES, 16, 1, 1, EPOCHS)  # 12; pruning events at steps 2..6 (Δ = 1)
NO_DROPOUT = ("method.lora_dropout=0",)  # with the model's own dropout off too, runs are deterministic


def dora_cfg(reg_coefficient: float):
    return tiny_cfg("method=dora", "method.prune_interval=1", f"method.reg_coefficient={reg_coefficient}", *NO_DROPOUT)


def roberta(cache_dir, reg_coefficient):
    cfg = dora_cfg(reg_coefficient)
    torch.manual_seed(0)  # the new classifier head, then A and B
    model, tokenizer = load_model(cfg.model, "seq_cls", str(cache_dir), num_labels=2,
                                  hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    return apply_method(model, cfg, TOTAL_STEPS), tokenizer, toy_dataset(tokenizer, SAMPLES), None


def llama(cache_dir, reg_coefficient):
    """A causal LM whose loss is Σ token losses / num_items_in_batch (tokens of the whole accumulation window)."""
    cfg = dora_cfg(reg_coefficient)
    cfg.model.adapted_modules = r".*\.self_attn\.(q_proj|v_proj)|.*\.mlp\.down_proj"
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=32))
    g = torch.Generator().manual_seed(0)
    input_ids = torch.randint(0, 64, (SAMPLES, 12), generator=g)
    labels = input_ids.clone()
    for row, ignored in zip(labels, torch.randint(0, 9, (SAMPLES,), generator=g)):
        row[12 - int(ignored):] = -100  # unequal token counts per sample: num_items_in_batch matters
    data = Dataset.from_dict({"input_ids": input_ids.tolist(), "attention_mask": torch.ones_like(input_ids).tolist(),
                              "labels": labels.tolist()})
    return apply_method(model, cfg, TOTAL_STEPS), None, data, default_data_collator


def run(build, cache_dir, out_dir, batch_size, accumulation, reg_coefficient=1.0):
    handle, tokenizer, data, collator = build(cache_dir, reg_coefficient)
    trainer = train(handle, tokenizer, data, out_dir, epochs=EPOCHS, batch_size=batch_size, lr=1e-2,
                    collator=collator, gradient_accumulation_steps=accumulation, logging_steps=1)
    assert trainer.state.global_step == TOTAL_STEPS
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    weights = {name: p.detach().clone() for name, p in handle.model.named_parameters() if p.requires_grad}
    return {"loss": losses, "state": handle.state_dict(), "weights": weights,
            "loss_kwargs": trainer.model_accepts_loss_kwargs}


@pytest.mark.parametrize("build,divides_by_accumulation", [(roberta, True), (llama, False)], ids=["roberta", "llama"])
@pytest.mark.slow
def test_dem_counts_once_per_optimizer_step(cache_dir, tmp_path, build, divides_by_accumulation):
    whole = run(build, cache_dir, tmp_path / "whole", batch_size=16, accumulation=1)
    halves = run(build, cache_dir, tmp_path / "halves", batch_size=8, accumulation=2)
    assert whole["loss_kwargs"] is halves["loss_kwargs"] is (not divides_by_accumulation)  # the path under test

    assert len(whole["loss"]) == TOTAL_STEPS
    assert halves["loss"] == pytest.approx(whole["loss"], abs=2e-4)  # logged losses are rounded to 4 decimals
    for key in ("mask", "final_mask"):
        assert torch.equal(halves["state"][key], whole["state"][key]), key
    assert whole["state"]["history"] == halves["state"]["history"]
    assert [event["kept"] for event in whole["state"]["history"]][-1] < whole["state"]["mask"].numel()  # it pruned
    scores = whole["state"]["scores"]
    assert scores.dtype == torch.float32 and scores.abs().sum() > 0
    torch.testing.assert_close(halves["state"]["scores"], scores, rtol=1e-4, atol=1e-6)
    for name, value in whole["weights"].items():
        torch.testing.assert_close(halves["weights"][name], value, rtol=1e-4, atol=1e-5, msg=name)

    # The comparison can see a DEM counted twice: η doubled is not the same run.
    doubled = run(build, cache_dir, tmp_path / "doubled", batch_size=16, accumulation=1, reg_coefficient=2.0)
    assert max(abs(a - b) for a, b in zip(doubled["loss"], whole["loss"])) > 0.05
