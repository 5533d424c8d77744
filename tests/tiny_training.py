"""In-process training of a tiny random RoBERTa through the real engine (BenchTrainer)."""
from __future__ import annotations

import torch
from datasets import Dataset
from hydra import compose, initialize_config_module
from transformers import DataCollatorWithPadding, TrainingArguments

from dora_bench.engine import BenchTrainer
from dora_bench.methods import apply_method
from dora_bench.models import load_model


def tiny_cfg(*overrides: str):
    with initialize_config_module("dora_bench.conf", version_base="1.3"):
        return compose("config", overrides=["model=tiny_roberta", "task=rte", *overrides])


def tiny_model(cfg, cache_dir):
    torch.manual_seed(0)
    return load_model(cfg.model, "seq_cls", str(cache_dir), num_labels=2)


def toy_dataset(tokenizer, n: int = 32) -> Dataset:
    g = torch.Generator().manual_seed(0)
    words = ["cat", "dog", "sat", "mat", "ran", "big", "red", "sun"]
    texts = [" ".join(words[i] for i in torch.randint(0, 8, (6,), generator=g)) for _ in range(n)]
    enc = tokenizer(texts, truncation=True, max_length=32)
    return Dataset.from_dict({**enc, "labels": [int("cat" in t) for t in texts]})


def train(handle, tokenizer, dataset, out_dir, epochs: int = 1, batch_size: int = 4, lr: float = 1e-2,
          collator=None, **training_args):
    """``training_args`` add to or replace the TrainingArguments below (accumulation, precision, ...)."""
    args = TrainingArguments(**{
        "output_dir": str(out_dir), "num_train_epochs": epochs, "per_device_train_batch_size": batch_size,
        "learning_rate": lr, "eval_strategy": "no", "save_strategy": "no", "report_to": "none",
        "disable_tqdm": True, "use_cpu": True, "seed": 0, **training_args})
    trainer = BenchTrainer(model=handle.model, args=args, train_dataset=dataset,
                           data_collator=collator or DataCollatorWithPadding(tokenizer), processing_class=tokenizer)
    trainer.setup_bench(handle, evaluate_fn=lambda t: {"score": 0.0}, run_fingerprint="test")
    trainer.train()
    return trainer


def build(method_overrides, cache_dir, total_steps):
    cfg = tiny_cfg(*method_overrides)
    model, tokenizer = tiny_model(cfg, cache_dir)
    return apply_method(model, cfg, total_steps), tokenizer
