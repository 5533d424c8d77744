"""SQuAD v1.1 / v2.0 on an encoder: official JSON or hub → windowed features → n-best spans → official EM/F1."""
from __future__ import annotations

import json
import re
import string
from collections import Counter, defaultdict
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Iterator

import numpy as np
from datasets import Dataset, DatasetDict, Features, List, Value
from omegaconf import DictConfig
from transformers import DataCollatorWithPadding

from dora_bench.errors import UserError
from dora_bench.tasks import TaskData, cached_map, limit, load_hub, local_files, read_local, write_predictions

FEATURES = Features({
    "id": Value("string"), "title": Value("string"), "context": Value("string"), "question": Value("string"),
    "answers": {"text": List(Value("string")), "answer_start": List(Value("int32"))},
})
CLS = 0  # BERT's [CLS] and RoBERTa's <s> come first (right padding): the no-answer position
PUNCTUATION = frozenset(string.punctuation)


def model_kwargs(cfg: DictConfig) -> dict:
    return {}


# ---- load -------------------------------------------------------------------------------------

def data_files(cfg: DictConfig) -> dict[str, Path] | None:
    """The local files this run reads ({split: path}); None when the data comes from the hub."""
    return local_files(cfg, dict(cfg.task.data_files))


def load(cfg: DictConfig) -> tuple[DatasetDict, dict]:
    """Raw examples ("train", "validation") in the hub's column layout, and a fingerprint of the data."""
    t = cfg.task
    files = data_files(cfg)
    if files is None:
        names = " / ".join(t.data_files.values())
        hint = (f"pass data.dir=<folder with the official {names}> "
                "(or data.train_file= / data.validation_file=)")
        return load_hub(t.hub_id, None, {"train": "train", "validation": "validation"}, hint)
    return read_local(files, lambda path: read_squad_json(path, t.version_2))


def read_squad_json(path: Path, version_2: bool) -> Dataset:
    """The official layout {"data": [{"title", "paragraphs": [{"context", "qas": [...]}]}]}, checked."""
    try:
        articles = json.loads(Path(path).read_text(encoding="utf-8"))["data"]
        if not isinstance(articles, list):
            raise TypeError
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as err:
        raise UserError(f"{path}: not an official SQuAD JSON file ({type(err).__name__}); expected "
                        '{"data": [{"title": ..., "paragraphs": [{"context": ..., "qas": [...]}]}]}') from None
    rows = [row for article in articles for row in _article_rows(article, path, version_2)]
    repeated = [qid for qid, n in Counter(row["id"] for row in rows).items() if n > 1]
    if repeated:  # predictions and scores are keyed by question id
        raise UserError(f"{path}: question id(s) {repeated[:5]} occur more than once; ids must be unique")
    return Dataset.from_list(rows, features=FEATURES)


def _field(record: dict, key: str, kind: type, where: str):
    if not isinstance(record, dict) or not isinstance(record.get(key), kind):
        raise UserError(f"{where}: field {key!r} is missing or not a {kind.__name__}")
    return record[key]


def _article_rows(article: dict, path: Path, version_2: bool) -> Iterator[dict]:
    title = str(article.get("title", "")) if isinstance(article, dict) else ""
    in_article = f"{path}, article {title!r}"
    for paragraph in _field(article, "paragraphs", list, in_article):
        context = _field(paragraph, "context", str, in_article)
        for qa in _field(paragraph, "qas", list, in_article):
            where = f"{path}, question id {qa.get('id')!r}" if isinstance(qa, dict) else in_article
            qid, question = _field(qa, "id", str, where), _field(qa, "question", str, where)
            answers = _answers(qa, context, where, version_2)
            yield {"id": qid, "title": title, "context": context, "question": question,
                   "answers": {"text": [a[0] for a in answers], "answer_start": [a[1] for a in answers]}}


def _answers(qa: dict, context: str, where: str, version_2: bool) -> list[tuple[str, int]]:
    """(text, answer_start) pairs; [] for a v2 unanswerable question. Offsets must match the context."""
    if qa.get("is_impossible"):
        if not version_2:
            raise UserError(f"{where}: is_impossible=true is SQuAD v2.0 data; use task=squad_v2")
        return []
    answers = []
    for answer in _field(qa, "answers", list, where):
        text, start = _field(answer, "text", str, where), _field(answer, "answer_start", int, where)
        if context[start:start + len(text)] != text or not text:
            raise UserError(f"{where}: answer {text!r} at answer_start={start} does not match the context "
                            f"there ({context[start:start + len(text)]!r}); answer_start must be the character "
                            "offset of a non-empty answer text in the context")
        answers.append((text, start))
    if not answers:
        allowed = "answers, or is_impossible=true (SQuAD v2.0)" if version_2 else "at least one answer"
        raise UserError(f"{where}: no answers; each question needs {allowed}")
    return answers


# ---- preprocess -------------------------------------------------------------------------------

def _windows(tokenizer, batch, max_length: int, stride: int):
    """Question + context windows overlapping by `stride` tokens; only the context is ever truncated."""
    fix = f"raise trainer.max_length={max_length} or lower task.doc_stride={stride}"
    try:
        encoded = tokenizer([q.lstrip() for q in batch["question"]], batch["context"], truncation="only_second",
                            max_length=max_length, stride=stride, return_overflowing_tokens=True,
                            return_offsets_mapping=True)
    except Exception as err:  # the Rust tokenizer raises a bare Exception
        if "Truncation error" not in str(err):
            raise
        raise UserError(f"a question leaves no room for its context in a window ({err}); {fix}") from None
    # With too little room next to the question, the tokenizer silently drops the rest of the context.
    covered = defaultdict(int)
    for i, sample in enumerate(encoded["overflow_to_sample_mapping"]):
        ends = [o[1] for o, s in zip(encoded["offset_mapping"][i], encoded.sequence_ids(i)) if s == 1]
        covered[sample] = max(covered[sample], max(ends, default=0))
    for sample, end in covered.items():
        if end < len(batch["context"][sample].rstrip()):
            raise UserError(f"question id {batch['id'][sample]!r}: its windows cover only {end} of "
                            f"{len(batch['context'][sample])} context characters; {fix}")
    return encoded


def answer_token_span(offsets, sequence_ids, start_char: int, end_char: int) -> tuple[int, int] | None:
    """Token positions of the answer [start_char, end_char) in one window; None unless wholly inside it."""
    context = [i for i, s in enumerate(sequence_ids) if s == 1]
    if not context or offsets[context[0]][0] > start_char or offsets[context[-1]][1] < end_char:
        return None
    start = max(i for i in context if offsets[i][0] <= start_char)
    end = min(i for i in context if offsets[i][1] >= end_char)
    return start, end


def train_features(batch, tokenizer, max_length: int, stride: int):
    """Windows labelled with the first answer's token span, or CLS where the window lacks the answer."""
    encoded = _windows(tokenizer, batch, max_length, stride)
    samples = encoded.pop("overflow_to_sample_mapping")
    encoded["start_positions"], encoded["end_positions"] = [], []
    for i, offsets in enumerate(encoded.pop("offset_mapping")):
        answers = batch["answers"][samples[i]]
        span = None
        if answers["text"]:
            start = answers["answer_start"][0]
            span = answer_token_span(offsets, encoded.sequence_ids(i), start, start + len(answers["text"][0]))
        start_token, end_token = span or (CLS, CLS)
        encoded["start_positions"].append(start_token)
        encoded["end_positions"].append(end_token)
    return encoded


def eval_features(batch, tokenizer, max_length: int, stride: int):
    """Windows with their example id and character offsets of context tokens (None elsewhere)."""
    encoded = _windows(tokenizer, batch, max_length, stride)
    samples = encoded.pop("overflow_to_sample_mapping")
    encoded["example_id"] = [batch["id"][s] for s in samples]
    encoded["offset_mapping"] = [[o if s == 1 else None for o, s in zip(offsets, encoded.sequence_ids(i))]
                                 for i, offsets in enumerate(encoded["offset_mapping"])]
    return encoded


def prepare(cfg: DictConfig, tokenizer, raw: DatasetDict, fingerprint: dict) -> TaskData:
    t, max_length = cfg.task, cfg.trainer.max_length  # doc_stride and metric: checked by the schema
    settings = SpanSettings(t.n_best, t.max_answer_length, t.version_2, t.null_threshold)

    def features(split: str, rows: Dataset, fn) -> Dataset:
        return cached_map(rows, partial(fn, tokenizer=tokenizer, max_length=max_length, stride=t.doc_stride),
                          cfg.cache_dir, remove_columns=rows.column_names)

    train_rows = limit(raw["train"], cfg.data.max_train_samples, "data.max_train_samples", cfg.data.subsample_seed)
    # max_eval_samples counts questions; every window of a kept question is evaluated
    eval_rows = limit(raw["validation"], cfg.data.max_eval_samples, "data.max_eval_samples")
    windows = features("validation", eval_rows, eval_features)
    model_inputs = windows.select_columns([c for c in tokenizer.model_input_names if c in windows.column_names])
    return TaskData(
        train=features("train", train_rows, train_features),
        eval_sets={"validation": model_inputs},
        collator=DataCollatorWithPadding(tokenizer),
        evaluate=lambda trainer: evaluate(trainer, cfg, eval_rows, windows, model_inputs, settings),
    )


# ---- postprocess: logits of every window → one answer per question ------------------------------

@dataclass(frozen=True)
class SpanSettings:
    n_best: int = 20
    max_answer_length: int = 30
    version_2: bool = False
    null_threshold: float = 0.0


def candidate_spans(start_logits, end_logits, offsets, n_best: int, max_answer_length: int):
    """(score, start_char, end_char) of valid spans among the n-best starts × n-best ends of one window."""
    n = len(offsets)  # logits beyond it are batch padding
    top = lambda logits: np.argsort(logits[:n])[::-1][:n_best]  # noqa: E731
    for i in top(start_logits):
        for j in top(end_logits):
            if offsets[i] is None or offsets[j] is None or j < i or j - i + 1 > max_answer_length:
                continue
            yield float(start_logits[i] + end_logits[j]), offsets[i][0], offsets[j][1]


def postprocess(example_ids, contexts, window_example_ids, window_offsets, start_logits, end_logits,
                settings: SpanSettings) -> tuple[dict[str, str], dict[str, float | None]]:
    """Best span of each question over all its windows; v2 answers "" when null − best > threshold.

    Returns predictions {id: text} and null odds {id: null − best score} (None: no valid span).
    """
    windows = defaultdict(list)
    for w, example_id in enumerate(window_example_ids):
        windows[example_id].append(w)
    predictions, null_odds = {}, {}
    for example_id, context in zip(example_ids, contexts):
        null_score, best = float("inf"), None
        for w in windows[example_id]:
            null_score = min(null_score, float(start_logits[w][CLS] + end_logits[w][CLS]))
            for span in candidate_spans(start_logits[w], end_logits[w], window_offsets[w],
                                        settings.n_best, settings.max_answer_length):
                best = span if best is None or span[0] > best[0] else best
        null_odds[example_id] = None if best is None else null_score - best[0]
        answer_wins = best is not None and not (settings.version_2 and null_odds[example_id] > settings.null_threshold)
        predictions[example_id] = context[best[1]:best[2]] if answer_wins else ""
    return predictions, null_odds


# ---- metric: the official evaluation scripts (v1.1 and v2.0), ×100 ----------------------------

def normalize_answer(text: str) -> str:
    """Lower-case, drop punctuation and articles, collapse whitespace (official SQuAD normalisation)."""
    text = "".join(ch for ch in text.lower() if ch not in PUNCTUATION)
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def exact_match(prediction: str, gold: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(gold))


def token_f1(prediction: str, gold: str, version_2: bool = False) -> float:
    """Bag-of-tokens F1; the v2.0 script scores two empty answers as 1, the v1.1 script as 0."""
    pred, ref = normalize_answer(prediction).split(), normalize_answer(gold).split()
    if version_2 and not (pred and ref):
        return float(pred == ref)
    same = sum((Counter(pred) & Counter(ref)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred), same / len(ref)
    return 2 * precision * recall / (precision + recall)


def squad_scores(predictions: dict[str, str], golds: dict[str, list[str]], version_2: bool) -> dict[str, float]:
    """exact and f1 ×100, max over gold answers; v2 also HasAns_*/NoAns_* (for the parts that exist)."""
    exact, f1, has_answer = {}, {}, {}
    for qid, answers in golds.items():
        has_answer[qid] = bool(answers)
        if version_2:  # the v2.0 script: answers that normalise to nothing do not count; none → ""
            answers = [a for a in answers if normalize_answer(a)] or [""]
        exact[qid] = max(exact_match(predictions[qid], a) for a in answers)
        f1[qid] = max(token_f1(predictions[qid], a, version_2) for a in answers)
    parts = {"": list(golds)}
    if version_2:
        parts |= {"HasAns_": [q for q in golds if has_answer[q]], "NoAns_": [q for q in golds if not has_answer[q]]}
    return {f"{prefix}{name}": 100.0 * float(np.mean([scores[q] for q in qids]))
            for prefix, qids in parts.items() if qids for name, scores in (("exact", exact), ("f1", f1))}


def evaluate(trainer, cfg: DictConfig, examples: Dataset, windows: Dataset, model_inputs: Dataset,
             settings: SpanSettings) -> dict[str, float]:
    start_logits, end_logits = trainer.predict(model_inputs, metric_key_prefix="validation").predictions
    # Plain lists once per evaluation: indexing Arrow columns row by row is much slower.
    ex, win = examples.to_dict(), windows.select_columns(["example_id", "offset_mapping"]).to_dict()
    predictions, null_odds = postprocess(ex["id"], ex["context"], win["example_id"], win["offset_mapping"],
                                         start_logits, end_logits, settings)
    golds = {qid: answers["text"] for qid, answers in zip(ex["id"], ex["answers"])}
    metrics = squad_scores(predictions, golds, settings.version_2)
    # The official layout {id: answer}; with null odds the v2.0 script can also tune the threshold.
    write_predictions(trainer, "validation.json", json.dumps(predictions, indent=1, ensure_ascii=False))
    if settings.version_2:
        write_predictions(trainer, "validation.null_odds.json", json.dumps(null_odds, indent=1))
    metrics["score"] = metrics[cfg.task.metric]
    return metrics
