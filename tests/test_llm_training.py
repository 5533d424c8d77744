"""Decoder training details: gradient checkpointing as the runner sets it up leaves no adapter without a gradient
(frozen embeddings cut the graph under reentrant checkpointing, peft issue 1142); a bf16 base keeps LoRA's weights
and gradients fp32; AdapterHub refuses what it does not support."""
import pytest
import torch
from datasets import Dataset
from hydra import compose, initialize_config_module
from transformers import Qwen2Config, Qwen2ForCausalLM, TrainerCallback

from dora_bench.engine import BenchTrainer
from dora_bench.errors import UserError
from dora_bench.methods import apply_method
from dora_bench.models import load_model
from dora_bench.run import _training_arguments
from dora_bench.tasks.causal_lm import PadCollator, encode


def cfg_for(model, method, *overrides):
    with initialize_config_module("dora_bench.conf", version_base="1.3"):
        return compose("config", overrides=[f"model={model}", f"method={method}", "task=gsm8k", "trainer.batch_size=2",
                                            "trainer.epochs=1", "trainer.progress_bar=false", *overrides])


def tiny_features(tokenizer, n=2):
    prompts = [f"Question: {i}+{i}?\nAnswer:" for i in range(n)]
    out = encode(tokenizer, prompts, [f" {2 * i}\n#### {2 * i}" for i in range(n)], max_length=64, keep_overlong=False)
    return Dataset.from_dict({k: v for k, v in out.items() if k != "prompt_ids"})


class GradientProbe(TrainerCallback):
    """Before the optimizer step: which trainable parameters the backward pass never reached (grad None: a cut graph;
    a zero gradient is legitimate, e.g. LoRA's A while B is still zero), whether any moved, the gradients' dtypes."""

    def __init__(self, model):
        self.model, self.missing, self.dtypes, self.nonzero = model, None, set(), False

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        trainable = [(n, p) for n, p in self.model.named_parameters() if p.requires_grad]
        self.missing = [n for n, p in trainable if p.grad is None]
        self.dtypes = {p.grad.dtype for _, p in trainable if p.grad is not None}
        self.nonzero = any(p.grad is not None and p.grad.abs().sum() > 0 for _, p in trainable)


def one_step(cfg, cache_dir, tmp_path):
    torch.manual_seed(0)
    model, tokenizer = load_model(cfg.model, "causal_lm", str(cache_dir))
    handle = apply_method(model, cfg, total_steps=1)
    args = _training_arguments(cfg, 1, tmp_path / "out", 1, logs=tmp_path / "logs")
    args.save_strategy, args.eval_strategy, args.report_to = "no", "no", []
    trainer = BenchTrainer(model=handle.model, args=args, train_dataset=tiny_features(tokenizer),
                           data_collator=PadCollator(tokenizer.pad_token_id), processing_class=tokenizer)
    trainer.setup_bench(handle, evaluate_fn=lambda t: {"score": 0.0}, run_fingerprint="test")
    probe = GradientProbe(handle.model)
    trainer.add_callback(probe)
    output = trainer.train()
    return handle, probe, output


@pytest.mark.parametrize("model,method", [("tiny_llama", m) for m in ("lora", "adalora", "dora", "h_adapter", "full_ft")]
                         + [("tiny_gpt2", m) for m in ("lora", "dora", "p_adapter")])
@pytest.mark.slow
def test_gradient_checkpointing_gives_every_trainable_parameter_a_gradient(cache_dir, tmp_path, model, method):
    cfg = cfg_for(model, method, "trainer.gradient_checkpointing=true")
    handle, probe, _ = one_step(cfg, cache_dir, tmp_path)
    assert any(getattr(m, "gradient_checkpointing", False) for m in handle.model.modules())   # it is on
    assert probe.missing == [] and probe.nonzero, probe.missing[:5]


def test_lora_on_a_bf16_base_keeps_its_own_weights_and_gradients_fp32(cache_dir, tmp_path):
    cfg = cfg_for("tiny_llama", "lora", "model.dtype=bf16")
    handle, probe, output = one_step(cfg, cache_dir, tmp_path)
    base = {p.dtype for n, p in handle.model.named_parameters() if not p.requires_grad}
    adapters = {p.dtype for n, p in handle.model.named_parameters() if p.requires_grad}
    assert base == {torch.bfloat16} and adapters == {torch.float32} and probe.dtypes == {torch.float32}
    assert probe.missing == [] and torch.isfinite(torch.tensor(output.training_loss))


def test_adapterhub_refuses_an_architecture_it_does_not_support():
    cfg = cfg_for("qwen2_5_0_5b", "h_adapter")
    qwen = Qwen2ForCausalLM(Qwen2Config(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                        num_attention_heads=4, num_key_value_heads=2))
    with pytest.raises(UserError, match=r"method=h_adapter uses AdapterHub .* does not support model=qwen2_5_0_5b "
                                        r"\(Qwen2Model\); allowed: .*Llama.*or another method"):
        apply_method(qwen, cfg, total_steps=10)
