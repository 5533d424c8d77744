"""Task families. Each module (glue, squad, xsum) offers the same verbs:

- ``model_kwargs(cfg)`` → extra `AutoConfig` arguments (e.g. num_labels)
- ``load(cfg)`` → raw ``DatasetDict`` (train + eval splits) and a data fingerprint
- ``prepare(cfg, tokenizer, raw)`` → ``TaskData`` (features, collator, per-epoch evaluation)
"""
from __future__ import annotations

import hashlib
import importlib
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from datasets import Dataset, load_from_disk

from dora_bench.errors import UserError


@dataclass
class TaskData:
    train: Dataset
    eval_sets: dict[str, Dataset]
    collator: Callable
    # evaluate(trainer) -> metrics (×100 where the paper does); must contain "score", the headline number
    evaluate: Callable[[Any], dict[str, float]]
    trainer_kwargs: dict[str, Any] = field(default_factory=dict)


def get_task(family: str):
    try:
        return importlib.import_module(f"dora_bench.tasks.{family}")
    except ModuleNotFoundError as err:
        if err.name != f"dora_bench.tasks.{family}":
            raise
        raise UserError(f"task.family={family!r} has no module dora_bench.tasks.{family}") from None


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def cached_map(dataset: Dataset, fn: Callable, cache_dir: str, key: str, **map_kwargs) -> Dataset:
    """`dataset.map(fn, batched=True)` computed once per key and reused across seeds and methods."""
    target = Path(cache_dir) / "features" / hashlib.sha256(key.encode()).hexdigest()[:24]
    if target.exists():
        return load_from_disk(str(target))
    features = dataset.map(fn, batched=True, load_from_cache_file=False, desc="tokenising", **map_kwargs)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = tempfile.mkdtemp(dir=target.parent, prefix=".tmp-")
    features.save_to_disk(tmp)
    try:
        os.replace(tmp, target)  # atomic: a half-written cache is never read
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
    return load_from_disk(str(target))


def limit(dataset: Dataset, n: int | None, what: str, shuffle_seed: int | None = None) -> Dataset:
    """Keep at most n rows (a fixed shuffled subset for training); an empty result is an error."""
    if n is not None:
        if n <= 0:
            raise UserError(f"{what}={n} must be a positive number of samples")
        if shuffle_seed is not None and n < len(dataset):
            dataset = dataset.shuffle(seed=shuffle_seed)
        dataset = dataset.select(range(min(n, len(dataset))))
    if len(dataset) == 0:
        raise UserError(f"{what}: the split is empty")
    return dataset
