"""XSum on an encoder-decoder: hub or JSONL/CSV (document, summary) → seq2seq features → beam search → ROUGE."""
from __future__ import annotations

import json
import re
from functools import partial
from importlib import metadata
from pathlib import Path

import numpy as np
from datasets import Dataset, DatasetDict, load_dataset
from datasets.exceptions import DatasetGenerationError
from omegaconf import DictConfig
from rouge_score import rouge_scorer
from transformers import DataCollatorForSeq2Seq

from dora_bench.errors import UserError
from dora_bench.tasks import TaskData, cached_map, limit, load_hub, local_files, read_local, write_predictions

COLUMNS = ("document", "summary")


def model_kwargs(cfg: DictConfig) -> dict:
    return {}


# ---- load -------------------------------------------------------------------------------------

def data_files(cfg: DictConfig) -> dict[str, Path] | None:
    """The local files this run reads ({split: path}); None when the data comes from the hub."""
    return local_files(cfg, dict(cfg.task.data_files))


def load(cfg: DictConfig) -> tuple[DatasetDict, dict]:
    """Raw "train" and "validation" splits with columns id, document, summary, and a data fingerprint."""
    t = cfg.task
    files = data_files(cfg)
    if files is None:
        hint = ("pass data.dir=<folder with " + " and ".join(t.data_files.values()) + "> "
                "(or data.train_file= / data.validation_file=, JSONL or CSV with document and summary columns)")
        raw, fingerprint = load_hub(t.hub_id, None, dict(t.splits), hint)
        return _drop_empty(raw, fingerprint)
    return read_local(files, read_pairs)


def read_pairs(path: Path) -> Dataset:
    """A JSONL/JSON/CSV file with non-empty `document` and `summary` on every row (`id` optional)."""
    suffix = path.suffix.lower()
    if suffix not in (".jsonl", ".json", ".csv"):
        raise UserError(f"{path}: unsupported file type {suffix!r}; allowed: .jsonl, .json, .csv")
    try:
        raw = load_dataset("csv" if suffix == ".csv" else "json", data_files=str(path), split="train")
    except DatasetGenerationError as err:
        raise UserError(f"{path}: cannot be read as {suffix[1:].upper()} ({err.__cause__ or err})") from None
    missing = [c for c in COLUMNS if c not in raw.column_names]
    if missing:
        raise UserError(f"{path}: missing column(s) {missing}; XSum needs {list(COLUMNS)} (and optionally id)")
    for row, record in enumerate(raw.select_columns(list(COLUMNS)), start=1):
        for column in COLUMNS:
            if not _non_empty(record[column]):
                raise UserError(f"{path}, row {row}: {column} is {record[column]!r}; "
                                "every row needs a non-empty text document and summary")
    ids = [str(i) for i in raw["id"]] if "id" in raw.column_names else [str(i) for i in range(len(raw))]
    return Dataset.from_dict({"id": ids, "document": raw["document"], "summary": raw["summary"]})


def _non_empty(value) -> bool:
    return isinstance(value, str) and bool(value.strip())


def _drop_empty(raw: DatasetDict, fingerprint: dict) -> tuple[DatasetDict, dict]:
    """Hub rows without a document or summary cannot be trained or scored: drop them, and say so."""
    kept = DatasetDict({k: v.filter(lambda r: all(_non_empty(r[c]) for c in COLUMNS)) for k, v in raw.items()})
    dropped = {k: len(raw[k]) - len(kept[k]) for k in raw}
    if any(dropped.values()):
        print(f"[dora-bench] dropped hub rows with an empty document or summary: {dropped}")
    return kept, fingerprint | {"dropped_empty": dropped}


# ---- preprocess -------------------------------------------------------------------------------

def tokenise(batch, tokenizer, source_length: int, target_length: int | None):
    """Documents truncated to source_length; summaries as labels (truncated) when target_length is set."""
    encoded = tokenizer(batch["document"], truncation=True, max_length=source_length)
    if target_length is not None:
        encoded["labels"] = tokenizer(text_target=batch["summary"], truncation=True,
                                      max_length=target_length)["input_ids"]
    return encoded


class Seq2SeqCollator(DataCollatorForSeq2Seq):
    """Pads labels with -100; label-free (evaluation) batches get no `labels` key.

    transformers 4.57 adds `labels: None` to them, and Seq2SeqTrainer then tries to compute a loss.
    """

    def __call__(self, features, return_tensors=None):
        batch = super().__call__(features, return_tensors)
        if batch.get("labels") is None:
            batch.pop("labels", None)
        return batch


def prepare(cfg: DictConfig, tokenizer, raw: DatasetDict, fingerprint: dict) -> TaskData:
    t, source_length = cfg.task, cfg.trainer.max_length  # lengths, ROUGE variant and metric: checked by the schema

    def features(split: str, rows: Dataset, target_length: int | None) -> Dataset:
        fn = partial(tokenise, tokenizer=tokenizer, source_length=source_length, target_length=target_length)
        return cached_map(rows, fn, cfg.cache_dir, remove_columns=rows.column_names)

    train_rows = limit(raw["train"], cfg.data.max_train_samples, "data.max_train_samples", cfg.data.subsample_seed)
    eval_rows = limit(raw["validation"], cfg.data.max_eval_samples, "data.max_eval_samples")
    eval_inputs = features("validation", eval_rows, None)  # no labels: scored on generated text only
    return TaskData(
        train=features("train", train_rows, t.max_target_length),
        eval_sets={"validation": eval_inputs},
        collator=Seq2SeqCollator(tokenizer, label_pad_token_id=-100),
        evaluate=lambda trainer: evaluate(trainer, cfg, tokenizer, eval_rows, eval_inputs),
    )


# ---- metric: ROUGE F-measure ×100, mean over examples -----------------------------------------

def sentence_lines(text: str) -> str:
    """One sentence per line (what rougeLsum expects), split on line breaks and after . ! ? (no nltk)."""
    return "\n".join(s for s in re.split(r"(?<=[.!?])\s+|\s*\n\s*", text.strip()) if s)


def rouge_scores(predictions: list[str], references: list[str], use_stemmer: bool = False,
                 l_variant: str = "rougeL") -> dict[str, float]:
    """rouge1, rouge2 and the ROUGE-L variant: per-example F-measure ×100, averaged."""
    if len(predictions) != len(references) or not predictions:
        raise ValueError(f"{len(predictions)} predictions for {len(references)} references")
    types = ("rouge1", "rouge2", l_variant)
    scorer = rouge_scorer.RougeScorer(list(types), use_stemmer=use_stemmer)
    totals = dict.fromkeys(types, 0.0)
    for prediction, reference in zip(predictions, references):
        # rouge-score splits rougeLsum sentences on newlines only; n-gram scores ignore them
        scores = scorer.score(sentence_lines(reference), sentence_lines(prediction))
        for name in types:
            totals[name] += scores[name].fmeasure
    return {name: 100.0 * total / len(predictions) for name, total in totals.items()}


def evaluate(trainer, cfg: DictConfig, tokenizer, examples: Dataset, inputs: Dataset) -> dict[str, float]:
    """Generate (beam search, settings from task.generation), decode, score, write the summaries."""
    generated = trainer.predict(inputs, metric_key_prefix="validation").predictions
    generated = np.where(generated != -100, generated, tokenizer.pad_token_id)  # -100: padding between batches
    summaries = [s.strip() for s in tokenizer.batch_decode(generated, skip_special_tokens=True)]
    rouge = cfg.task.rouge
    metrics = rouge_scores(summaries, examples["summary"], rouge.use_stemmer, rouge.l_variant)
    if trainer.is_world_process_zero():
        print(f"[dora-bench] ROUGE (rouge-score {metadata.version('rouge-score')}, F ×100, mean of "
              f"{len(summaries)} examples, use_stemmer={rouge.use_stemmer}, {rouge.l_variant}): "
              + ", ".join(f"{k} {v:.2f}" for k, v in metrics.items()))
    lines = (json.dumps({"id": i, "generated": g, "reference": r}, ensure_ascii=False)
             for i, g, r in zip(examples["id"], summaries, examples["summary"]))
    write_predictions(trainer, "validation.jsonl", "\n".join(lines) + "\n")
    metrics["score"] = metrics[cfg.task.metric]
    return metrics
