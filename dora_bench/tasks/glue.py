"""GLUE on an encoder: load (hub, GLUE TSV folders, or JSONL/CSV files) → tokenise → metrics."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from datasets import Dataset, DatasetDict, load_dataset
from omegaconf import DictConfig
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import f1_score, matthews_corrcoef
from transformers import DataCollatorWithPadding

from dora_bench.errors import UserError, one_of
from dora_bench.tasks import TaskData, cached_map, existing, limit, load_hub, read_local


@dataclass(frozen=True)
class GlueSpec:
    texts: tuple[str, ...]                 # HF column names of the input text(s)
    tsv_columns: dict[str, str | int]      # HF column -> TSV header name (or index when headerless)
    labels: tuple[str, ...] | None = None  # label names in class order; None: integer labels / regression
    num_labels: int = 2
    metrics: tuple[str, ...] = ("accuracy",)
    headerless_fields: int = 0             # CoLA's TSV has no header and this many fields
    eval_files: dict[str, str] = field(default_factory=lambda: {"validation": "dev.tsv"})
    glue_dir: str = ""                     # folder name in the original GLUE download


NLI2 = ("entailment", "not_entailment")
GLUE = {
    "cola": GlueSpec(("sentence",), {"sentence": 3, "label": 1}, metrics=("matthews",), headerless_fields=4,
                     glue_dir="CoLA"),
    "sst2": GlueSpec(("sentence",), {"sentence": "sentence", "label": "label"}, glue_dir="SST-2"),
    "mrpc": GlueSpec(("sentence1", "sentence2"), {"sentence1": "#1 String", "sentence2": "#2 String",
                                                  "label": "Quality"}, metrics=("accuracy", "f1"), glue_dir="MRPC"),
    "stsb": GlueSpec(("sentence1", "sentence2"), {"sentence1": "sentence1", "sentence2": "sentence2",
                                                  "label": "score"}, num_labels=1,
                     metrics=("pearson", "spearman"), glue_dir="STS-B"),
    "qqp": GlueSpec(("question1", "question2"), {"question1": "question1", "question2": "question2",
                                                 "label": "is_duplicate"}, metrics=("accuracy", "f1"), glue_dir="QQP"),
    "mnli": GlueSpec(("premise", "hypothesis"), {"premise": "sentence1", "hypothesis": "sentence2",
                                                 "label": "gold_label"},
                     labels=("entailment", "neutral", "contradiction"), num_labels=3,
                     eval_files={"matched": "dev_matched.tsv", "mismatched": "dev_mismatched.tsv"}, glue_dir="MNLI"),
    "qnli": GlueSpec(("question", "sentence"), {"question": "question", "sentence": "sentence", "label": "label"},
                     labels=NLI2, glue_dir="QNLI"),
    "rte": GlueSpec(("sentence1", "sentence2"), {"sentence1": "sentence1", "sentence2": "sentence2",
                                                 "label": "label"}, labels=NLI2, glue_dir="RTE"),
}
HUB_ID = "nyu-mll/glue"
HUB_SPLITS = {"matched": "validation_matched", "mismatched": "validation_mismatched", "validation": "validation"}


def spec_for(cfg: DictConfig) -> GlueSpec:
    if cfg.task.name not in GLUE:
        raise UserError(f"task.name={cfg.task.name!r} is not a GLUE task; allowed: {', '.join(GLUE)}")
    spec = GLUE[cfg.task.name]
    if cfg.task.metric not in spec.metrics:  # the metrics this task reports; the headline is one of them
        raise one_of("task.metric", cfg.task.metric, spec.metrics)
    return spec


def model_kwargs(cfg: DictConfig) -> dict:
    return {"num_labels": spec_for(cfg).num_labels}


# ---- load -------------------------------------------------------------------------------------

def load(cfg: DictConfig) -> tuple[DatasetDict, dict]:
    """Raw splits ("train" + one per eval set) with HF column names, and a fingerprint of the data."""
    spec = spec_for(cfg)
    files = data_files(cfg)
    if files is None:
        hint = (f"pass data.dir=<folder with GLUE {cfg.task.name} TSVs> "
                "(or data.train_file= / data.validation_file=)")
        return load_hub(HUB_ID, cfg.task.name, {"train": "train"} | {k: HUB_SPLITS[k] for k in spec.eval_files}, hint)
    return read_local(files, lambda path: _read_file(path, spec, cfg.task.name))


def data_files(cfg: DictConfig) -> dict[str, Path] | None:
    """The local files this run reads ({split: path}); None when the data comes from the hub."""
    spec, data = spec_for(cfg), cfg.data
    if data.get("train_file") or data.get("validation_file"):
        if not (data.get("train_file") and data.get("validation_file")):
            raise UserError("data.train_file and data.validation_file must be given together")
        evals = data.validation_file
        if isinstance(evals, str):
            evals = {next(iter(spec.eval_files)): evals}
        files = {"train": Path(data.train_file), **{k: Path(v) for k, v in evals.items()}}
    elif data.get("dir"):
        files = _files_in_dir(Path(data.dir), cfg.task.name, spec)
    else:
        return None
    return existing(files)


def _files_in_dir(root: Path, task: str, spec: GlueSpec) -> dict[str, Path]:
    if not root.is_dir():
        raise UserError(f"data.dir={str(root)!r} is not a directory")
    candidates = [root, root / task, root / spec.glue_dir]
    for folder in candidates:
        if (folder / "train.tsv").is_file():
            return {"train": folder / "train.tsv", **{k: folder / v for k, v in spec.eval_files.items()}}
    wanted = ", ".join(["train.tsv", *spec.eval_files.values()])
    looked = ", ".join(str(c) for c in candidates)
    raise UserError(f"data.dir={str(root)!r}: no GLUE {task} files ({wanted}) in any of: {looked}")


def _read_file(path: Path, spec: GlueSpec, task: str) -> Dataset:
    suffix = path.suffix.lower()
    if suffix == ".tsv":
        columns = _read_glue_tsv(path, spec)
    elif suffix in (".json", ".jsonl", ".csv"):
        builder = "csv" if suffix == ".csv" else "json"
        raw = load_dataset(builder, data_files=str(path), split="train")
        missing = [c for c in (*spec.texts, "label") if c not in raw.column_names]
        if missing:
            raise UserError(f"{path}: missing column(s) {missing}; {task} needs {[*spec.texts, 'label']}")
        columns = {c: raw[c] for c in (*spec.texts, "label")}
    else:
        raise UserError(f"{path}: unsupported file type {suffix!r}; allowed: .tsv, .jsonl, .json, .csv")
    columns["label"] = [_label(v, spec, f"{path}, row {i + 1}") for i, v in enumerate(columns["label"])]
    return Dataset.from_dict({**{c: [str(t) for t in columns[c]] for c in spec.texts}, "label": columns["label"]})


def _read_glue_tsv(path: Path, spec: GlueSpec) -> dict[str, list]:
    """GLUE TSVs: tab-separated, quotes are plain text, optional BOM, CoLA without header."""
    lines = path.read_text(encoding="utf-8-sig").splitlines()
    if spec.headerless_fields:
        n_fields, index = spec.headerless_fields, spec.tsv_columns
        body, first_line = lines, 1
    else:
        if not lines:
            raise UserError(f"{path}: empty file (expected a header line)")
        header = lines[0].split("\t")
        missing = [name for name in spec.tsv_columns.values() if name not in header]
        if missing:
            raise UserError(f"{path}: header lacks column(s) {missing}; found {header}")
        n_fields, index = len(header), {c: header.index(name) for c, name in spec.tsv_columns.items()}
        body, first_line = lines[1:], 2
    columns: dict[str, list] = {c: [] for c in index}
    for number, line in enumerate(body, start=first_line):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) != n_fields:
            raise UserError(f"{path}, line {number}: {len(fields)} fields, expected {n_fields}")
        for c, i in index.items():
            columns[c].append(fields[i])
    return columns


def _label(value, spec: GlueSpec, where: str):
    if spec.num_labels == 1:
        try:
            return float(value)
        except (TypeError, ValueError):
            raise UserError(f"{where}: label {value!r} is not a number") from None
    text = str(value).strip()
    if spec.labels and text in spec.labels:
        return spec.labels.index(text)
    if text.lstrip("-").isdigit() and 0 <= int(text) < spec.num_labels:
        return int(text)
    allowed = list(spec.labels or ()) + [str(i) for i in range(spec.num_labels)]
    raise UserError(f"{where}: unknown label {value!r}; allowed: {', '.join(allowed)}")


# ---- preprocess -------------------------------------------------------------------------------

def prepare(cfg: DictConfig, tokenizer, raw: DatasetDict, fingerprint: dict) -> TaskData:
    spec = spec_for(cfg)
    max_length = cfg.trainer.max_length

    def tokenise(batch):
        encoded = tokenizer(*(batch[c] for c in spec.texts), truncation=True, max_length=max_length)
        encoded["labels"] = batch["label"]
        return encoded

    def features(split: str, n: int | None, what: str, shuffle_seed: int | None) -> Dataset:
        rows = limit(raw[split], n, what, shuffle_seed)
        return cached_map(rows, tokenise, cfg.cache_dir, remove_columns=rows.column_names)

    train = features("train", cfg.data.max_train_samples, "data.max_train_samples", cfg.data.subsample_seed)
    evals = {k: features(k, cfg.data.max_eval_samples, "data.max_eval_samples", None) for k in spec.eval_files}
    return TaskData(
        train=train,
        eval_sets=evals,
        collator=DataCollatorWithPadding(tokenizer),
        evaluate=lambda trainer: evaluate(trainer, evals, spec, cfg.task.metric),
    )


# ---- metrics (×100, as in the paper) ------------------------------------------------------------

def glue_metrics(predictions: np.ndarray, labels: np.ndarray, names: tuple[str, ...]) -> dict[str, float]:
    """GLUE metrics ×100 from class ids (or regression scores for STS-B)."""
    compute = {
        "accuracy": lambda: float((predictions == labels).mean()),
        "f1": lambda: float(f1_score(labels, predictions)),
        "matthews": lambda: float(matthews_corrcoef(labels, predictions)),
        "pearson": lambda: float(pearsonr(predictions, labels)[0]),
        "spearman": lambda: float(spearmanr(predictions, labels)[0]),
    }
    # A constant prediction has no correlation: count it as 0, as sklearn does for Matthews.
    return {name: 100.0 * float(np.nan_to_num(compute[name]())) for name in names}


def evaluate(trainer, eval_sets: dict[str, Dataset], spec: GlueSpec, headline: str) -> dict[str, float]:
    metrics: dict[str, float] = {}
    for name, dataset in eval_sets.items():
        output = trainer.predict(dataset, metric_key_prefix=name)
        logits = output.predictions
        predictions = logits.squeeze(-1) if spec.num_labels == 1 else logits.argmax(-1)
        for metric, value in glue_metrics(predictions, output.label_ids, spec.metrics).items():
            metrics[metric if len(eval_sets) == 1 else f"{name}_{metric}"] = value
    if len(eval_sets) > 1:  # MNLI: the paper's column is the mean of matched and mismatched
        metrics[headline] = float(np.mean([metrics[f"{name}_{headline}"] for name in eval_sets]))
    metrics["score"] = metrics[headline]
    return metrics
