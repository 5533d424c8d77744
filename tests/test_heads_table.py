"""dora_bench/heads.py is the one home of what a task head implies, and everything that needs it reads it there."""
import pytest
import torch
from hydra import compose, initialize_config_module

import transformers
from dora_bench import engine, heads, schema
from dora_bench.methods import apply_method
from dora_bench.methods.base import PEFT_TASK_TYPES, head_modules
from dora_bench.models import MODEL_CLASSES, load_model


def test_every_head_names_what_exists():
    from peft import TaskType

    assert schema.HEADS == tuple(heads.HEADS)
    for name, head in heads.HEADS.items():
        assert MODEL_CLASSES[name] is getattr(transformers, head.auto_class)
        assert PEFT_TASK_TYPES[name] == TaskType[head.peft_task_type].value
        trainer = getattr(engine, head.trainer)
        assert issubclass(trainer, engine.BenchTrainerMixin)
        assert head.predict_with_generate == issubclass(trainer, transformers.Seq2SeqTrainer)
        assert head.padding_side in ("left", "right")
    assert heads.head("causal_lm").padding_side == "left"   # generation continues from the prompt's last token


def cfg_for(*overrides):
    with initialize_config_module("dora_bench.conf", version_base="1.3"):
        return compose("config", overrides=["task=gsm8k", "model=tiny_llama", *overrides])


def test_a_decoder_lm_head_is_tied_and_not_a_head_that_trains(cache_dir):
    """LoRA on tiny_llama trains its adapters only: the lm_head shares the embedding matrix and stays frozen, so
    the paper's count and the count with head are both the LoRA matrices, computed by hand from the shapes."""
    cfg = cfg_for("method=lora")
    torch.manual_seed(0)
    model, tokenizer = load_model(cfg.model, "causal_lm", str(cache_dir))
    assert model.lm_head.weight is model.model.embed_tokens.weight
    assert head_modules(model, "causal_lm") is None
    handle = apply_method(model, cfg, total_steps=10)
    trainable = [n for n, p in handle.model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable), trainable
    d, ffn, kv, layers, r = 32, 64, 16, 2, cfg.method.r   # tiny_llama: 4 query heads of 8, 2 key/value heads
    shapes = [(d, d), (d, kv), (d, kv), (d, d), (d, ffn), (d, ffn), (ffn, d)]   # q k v o gate up down (in, out)
    expected = layers * sum(r * (d_in + d_out) for d_in, d_out in shapes)
    assert handle.paper_trainable_params() == handle.trainable_params(include_head=True) == expected


@pytest.mark.parametrize("task,model,head_names", [("rte", "tiny_roberta", {"classifier"}),
                                                   ("squad_v1", "tiny_roberta", {"qa_outputs"})])
def test_encoder_heads_still_train_fully(cache_dir, task, model, head_names):
    with initialize_config_module("dora_bench.conf", version_base="1.3"):
        cfg = compose("config", overrides=[f"task={task}", f"model={model}", "method=lora"])
    torch.manual_seed(0)
    loaded, _ = load_model(cfg.model, cfg.task.head, str(cache_dir), **({"num_labels": 2} if task == "rte" else {}))
    assert set(head_modules(loaded, cfg.task.head)) == head_names
    handle = apply_method(loaded, cfg, total_steps=10)
    assert handle.trainable_params(include_head=True) > handle.paper_trainable_params() > 0
