"""Task families. Each module (glue, squad, xsum) offers the same verbs:

- ``model_kwargs(cfg)`` → extra `AutoConfig` arguments (e.g. num_labels)
- ``data_files(cfg)`` → the local files the run reads ({split: path}), None for hub data
- ``load(cfg)`` → raw ``DatasetDict`` (train + eval splits) and a data fingerprint
- ``prepare(cfg, tokenizer, raw)`` → ``TaskData`` (features, collator, per-epoch evaluation)
"""
from __future__ import annotations

import codecs
import functools
import hashlib
import importlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from datasets import Dataset, DatasetDict, load_dataset, load_from_disk
from omegaconf import DictConfig

from dora_bench.errors import UserError
from dora_bench.files import atomic_write_text
from dora_bench.hub import require_hub
from dora_bench.tasks.cache_key import feature_key


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


def text_file_sha256(path: Path, split: str) -> str:
    """sha256 of a data file that must be text: UTF-8, no NUL byte, not blank (else the first bad byte is named).

    One streaming pass, so that a large file is read once for the check and the fingerprint together.
    """
    digest, decoder = hashlib.sha256(), codecs.getincrementaldecoder("utf-8")()
    offset = newlines = 0  # bytes and line breaks before the current block
    blank = True

    def refuse(at: int, block: bytes, what: str) -> UserError:
        line = newlines + block[:max(at - offset, 0)].count(b"\n") + 1
        return UserError(f"{split} file {str(path)!r} is not UTF-8 text: byte {at} (line {line}) is {what}")

    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
            carried = len(decoder.getstate()[0])  # the start of a character cut by the previous block's end
            try:
                decoder.decode(block)
            except UnicodeDecodeError as err:
                at = offset - carried + err.start
                raise refuse(at, block, f"0x{err.object[err.start]:02x}, which UTF-8 does not allow there") from None
            if (nul := block.find(b"\x00")) != -1:
                raise refuse(offset + nul, block, "a NUL byte (binary data)")
            blank = blank and not block.strip()
            offset, newlines = offset + len(block), newlines + block.count(b"\n")
    try:
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        raise refuse(offset - len(decoder.getstate()[0]), b"", "the start of an unfinished character") from None
    if blank:
        raise UserError(f"{split} file {str(path)!r} is empty" + (f" ({offset} bytes of white space)" if offset else ""))
    return digest.hexdigest()


def data_sha256(cfg: DictConfig) -> str | None:
    """One digest of the local files the run reads (None: hub data): the data's part of a run's identity, so
    that the same files give the same run wherever they lie (see dora_bench.results.identity)."""
    files = get_task(cfg.task.family).data_files(cfg)
    if files is None:
        return None
    digests = {split: _file_sha256(path, split) for split, path in existing(files).items()}
    return hashlib.sha256(json.dumps(digests, sort_keys=True).encode()).hexdigest()[:16]


def _file_sha256(path: Path, split: str) -> str:
    stat = path.stat()
    return _cached_sha256(str(path.resolve()), split, stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=64)
def _cached_sha256(path: str, split: str, size: int, mtime_ns: int) -> str:  # size, mtime: a changed file is read again
    return text_file_sha256(Path(path), split)


def cached_map(dataset: Dataset, fn: Callable, cache_dir: str, **map_kwargs) -> Dataset:
    """`dataset.map(fn, batched=True)` computed once and reused across seeds and methods, for as long as nothing
    that shapes the features changes: the rows, the function's code and bound values (templates, lengths, the
    tokenizer) and the tokenising libraries (tasks/cache_key.py)."""
    target = Path(cache_dir) / "features" / feature_key(dataset, fn, map_kwargs)[:24]
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


# ---- loading helpers shared by the task families ------------------------------------------------

SCRIPT_REFUSAL = "Dataset scripts are no longer supported"  # datasets 4+ on a hub dataset with a loading script
PARQUET_REVISION = "refs/convert/parquet"                     # the hub's automatic Parquet conversion


def load_hub(hub_id: str, name: str | None, splits: dict[str, str], offline_hint: str) -> tuple[DatasetDict, dict]:
    """Hub splits renamed to ours ({ours: hub split}); fails fast offline, naming the local-data overrides."""
    what = hub_id + (f"/{name}" if name else "")
    require_hub(what, offline_hint)
    try:
        hub = _load_main_or_parquet(hub_id, name, what, offline_hint)
    except (ConnectionError, OSError) as err:
        raise UserError(f"cannot load {what} from the hub ({type(err).__name__}); {offline_hint}") from None
    missing = [s for s in splits.values() if s not in hub]
    if missing:
        raise UserError(f"{what} has no split(s) {missing}; it has: {', '.join(hub)}")
    loaded = DatasetDict({ours: hub[theirs] for ours, theirs in splits.items()})
    return loaded, {"source": "hub", "id": what, "fingerprints": {k: v._fingerprint for k, v in loaded.items()}}


def _load_main_or_parquet(hub_id: str, name: str | None, what: str, hint: str) -> DatasetDict:
    """The main revision; for a dataset that still has a loading script, the hub's Parquet conversion of it."""
    try:
        return load_dataset(hub_id, name)
    except RuntimeError as err:
        if SCRIPT_REFUSAL not in str(err):
            raise
    print(f"[dora-bench] {what} is script-based, which datasets refuses; loading its Parquet conversion "
          f"(revision={PARQUET_REVISION})")
    try:  # the conversion holds <config>/<split>/*.parquet and no config metadata: a config is a folder
        return load_dataset(hub_id, revision=PARQUET_REVISION, data_dir=name)
    except (OSError, ValueError, RuntimeError) as err:
        raise UserError(f"{what} is script-based (datasets refuses loading scripts) and its Parquet conversion "
                        f"(revision={PARQUET_REVISION}) cannot be loaded ({type(err).__name__}); {hint}") from None


def local_files(cfg: DictConfig, names_in_dir: dict[str, str]) -> dict[str, Path] | None:
    """Explicit data.train_file + data.validation_file, or the given file names inside data.dir.

    None when no local data was asked for (the caller then uses the hub).
    """
    data = cfg.data
    if data.get("train_file") or data.get("validation_file"):
        if not (data.get("train_file") and data.get("validation_file")):
            raise UserError("data.train_file and data.validation_file must be given together")
        files = {"train": Path(data.train_file), "validation": Path(data.validation_file)}
    elif data.get("dir"):
        root = Path(data.dir)
        if not root.is_dir():
            raise UserError(f"data.dir={str(root)!r} is not a directory")
        files = {split: root / name for split, name in names_in_dir.items()}
        missing = [path.name for path in files.values() if not path.is_file()]
        if missing:
            raise UserError(f"data.dir={str(root)!r} has no {', '.join(missing)}; expected "
                            f"{', '.join(names_in_dir.values())} (other names: task.data_files.<split>=, "
                            "or data.train_file= / data.validation_file=)")
    else:
        return None
    return existing(files)


def existing(files: dict[str, Path]) -> dict[str, Path]:
    """The files, once each is known to exist (else an error naming the split and the path)."""
    for split, path in files.items():
        if not path.is_file():
            raise UserError(f"{split} file {str(path)!r} does not exist")
    return files


def local_fingerprint(files: dict[str, Path]) -> dict:
    """The sha256 of each file, once each is known to be text (read once per run: the identity hashed it)."""
    return {"source": "local", "files": {s: {"path": str(p), "sha256": _file_sha256(p, s)} for s, p in files.items()}}


def read_local(files: dict[str, Path], reader: Callable[[Path], Dataset]) -> tuple[DatasetDict, dict]:
    """Each split read by the task's reader (files checked to be text first), and the files' fingerprint."""
    fingerprint = local_fingerprint(files)
    splits = DatasetDict({split: reader(path) for split, path in files.items()})
    for split, rows in splits.items():  # found here, before a model is built
        if len(rows) == 0:
            raise UserError(f"{split} file {str(files[split])!r} has no examples (a header or blank lines only)")
    return splits, fingerprint


def write_predictions(trainer, filename: str, text: str) -> Path | None:
    """Write `<predictions folder of the run>/<filename>` on the main process (the latest epoch overwrites)."""
    if not trainer.is_world_process_zero() or trainer.predictions_dir is None:
        return None
    path = trainer.predictions_dir / filename
    atomic_write_text(path, text)
    return path
