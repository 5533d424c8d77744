"""Checkpoint size per method on a RoBERTa-base-shaped model (random weights from its config, no download).

For every method (budget small), one optimizer step through the real engine writes a checkpoint the way runs do:
"after" is that folder (trainable parameters, optimizer, scheduler, RNG, trainer and method state); "before" is
the same folder with the model as the HF Trainer's own `_save` writes it instead of the trainables (the whole
model for DoRA, the adapters, BitFit and Full FT; PEFT's adapter files for LoRA and AdaLoRA), which is what
checkpoints held before. Tokenizer files (about 2 MB for RoBERTa's BPE; this model has none) are in neither.

    python scripts/checkpoint_sizes.py                                          # RoBERTa-base: 12 x 768, vocab 50265
    python scripts/checkpoint_sizes.py --layers 1 --hidden 64 --vocab 500      # a quick look
"""
from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from pathlib import Path

METHODS = ("full_ft", "bitfit", "h_adapter", "p_adapter", "lora", "adalora", "dora")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--layers", type=int, default=12)
    p.add_argument("--hidden", type=int, default=768)
    p.add_argument("--heads", type=int, default=12)
    p.add_argument("--intermediate", type=int, default=3072)
    p.add_argument("--vocab", type=int, default=50265)
    p.add_argument("--budget", default="small")
    p.add_argument("--methods", default=",".join(METHODS))
    return p.parse_args(argv)


def folder_bytes(folder: Path, skip: tuple[str, ...] = ()) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and p.name not in skip)


def measure(method: str, args, work: Path) -> dict:
    import torch
    from datasets import Dataset
    from hydra import compose, initialize_config_module
    from transformers import RobertaConfig, RobertaForSequenceClassification, Trainer, TrainingArguments
    from transformers.trainer_callback import PrinterCallback

    from dora_bench.checkpoints import TRAINABLES
    from dora_bench.engine import BenchTrainer
    from dora_bench.methods import apply_method

    with initialize_config_module("dora_bench.conf", version_base="1.3"):
        cfg = compose("config", overrides=["model=roberta_base", "task=rte", f"method={method}",
                                           f"budget={args.budget}"])
    torch.manual_seed(0)
    config = RobertaConfig(vocab_size=args.vocab, hidden_size=args.hidden, num_hidden_layers=args.layers,
                           num_attention_heads=args.heads, intermediate_size=args.intermediate,
                           max_position_embeddings=514, type_vocab_size=1, pad_token_id=1, num_labels=2)
    handle = apply_method(RobertaForSequenceClassification(config), cfg, total_steps=10)
    g = torch.Generator().manual_seed(0)
    data = Dataset.from_dict({"input_ids": torch.randint(3, args.vocab, (4, 16), generator=g).tolist(),
                              "attention_mask": [[1] * 16] * 4, "labels": [0, 1, 0, 1]})
    out = work / method
    trainer = BenchTrainer(model=handle.model, train_dataset=data, args=TrainingArguments(
        output_dir=str(out), max_steps=1, per_device_train_batch_size=2, save_strategy="steps", save_steps=1,
        eval_strategy="no", report_to="none", disable_tqdm=True, use_cpu=True, save_safetensors=True))
    trainer.setup_bench(handle, evaluate_fn=lambda t: {"score": 0.0}, run_fingerprint="sizes")
    trainer.remove_callback(PrinterCallback)
    trainer.train()
    [checkpoint] = out.glob("checkpoint-*")
    stock = work / f"{method}-stock"
    Trainer._save(trainer, str(stock))   # the model as the Trainer alone writes it
    after = folder_bytes(checkpoint)
    others = folder_bytes(checkpoint, skip=(TRAINABLES, "model.safetensors", "config.json", "training_args.bin"))
    before = others + folder_bytes(stock)
    params = list(handle.model.parameters())
    row = {"method": method, "trainable": sum(p.numel() for p in params if p.requires_grad),
           "frozen": sum(p.numel() for p in params if not p.requires_grad), "before": before, "after": after,
           "files": sorted(p.name for p in checkpoint.iterdir())}
    shutil.rmtree(out), shutil.rmtree(stock)
    return row


def main(argv=None) -> None:
    args = parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    rows = []
    with tempfile.TemporaryDirectory(prefix="checkpoint-sizes-") as work:
        for method in args.methods.split(","):
            rows.append(measure(method, args, Path(work)))
    mb = 2**20
    print(f"RoBERTa-shaped model: {args.layers} layers, hidden {args.hidden}, vocab {args.vocab}; budget {args.budget}; "
          "one checkpoint after one optimizer step\n")
    print("| method | trainable params | frozen params | checkpoint before (MiB) | after (MiB) | after / before |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['method']} | {r['trainable']:,} | {r['frozen']:,} | {r['before'] / mb:,.3f} | "
              f"{r['after'] / mb:,.3f} | {r['after'] / r['before']:.4f} |")
    print("\nfiles of a checkpoint now: " + "; ".join(f"{r['method']}: {', '.join(r['files'])}" for r in rows))


if __name__ == "__main__":
    main()
