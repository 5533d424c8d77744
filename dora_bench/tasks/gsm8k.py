"""GSM8K on a decoder: official JSONL or hub → prompt + answer features (loss on the answer only) → greedy
generation → exact match of the final number; teacher-forced answer NLL and token accuracy.

GSM8K has no dev split: a fixed slice of the training questions (task.validation_size, drawn with
task.validation_seed, the same for every run seed) is held out for choosing epochs and rates; the test split is
evaluated beside it every epoch and recorded with a `test_` prefix, never chosen on.
"""
from __future__ import annotations

import json
import re
from functools import partial
from pathlib import Path

import numpy as np
from datasets import Dataset, DatasetDict
from omegaconf import DictConfig

from dora_bench.errors import UserError
from dora_bench.tasks import TaskData, cached_map, limit, load_hub, local_files, read_local, write_predictions
from dora_bench.tasks.causal_lm import PadCollator, answer_likelihood, encode, generate

ANSWER_MARK = "####"                    # the official answers end in "#### <final number>"
CALCULATOR = re.compile(r"<<[^<>]*>>")  # calculator annotations <<48/2=24>>
# A number: a minus only where it is not a hyphen after a word ("2024-01-05" is 2024, 01, 05), commas only between
# groups of three digits ("1,234" is one number, "1,2,3" three).
SIGN = r"(?:(?<![\w.])-)?\$?"
NUMBER = re.compile(SIGN + r"(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.\d+)?|" + SIGN + r"\.\d+")
# Where the answer is, in order: the official mark, then a stated "The answer is 42" / "Answer: 42"
MARKERS = (re.compile(re.escape(ANSWER_MARK)), re.compile(r"\banswer\s*(?:is|:|=)", re.IGNORECASE))
EVAL_SETS = {"validation": "", "test": "test_"}  # eval set -> metric prefix (the score is the validation slice's)
COLUMNS = ("question", "answer")


def model_kwargs(cfg: DictConfig) -> dict:
    return {}


# ---- load -------------------------------------------------------------------------------------

def data_files(cfg: DictConfig) -> dict[str, Path] | None:
    """The local files this run reads ({split: path}; data.validation_file is the test file); None for hub data."""
    files = local_files(cfg, {"train": cfg.task.data_files.train, "test": cfg.task.data_files.test})
    if files is not None and "validation" in files:
        files = {"train": files["train"], "test": files["validation"]}
    return files


def load(cfg: DictConfig) -> tuple[DatasetDict, dict]:
    """Raw "train" (without the validation slice), "validation" (the slice) and "test", and a data fingerprint."""
    t = cfg.task
    files = data_files(cfg)
    if files is None:
        hint = (f"pass data.dir=<folder with the official GSM8K {t.data_files.train} and {t.data_files.test}> "
                "(or data.train_file= / data.validation_file=, JSONL with question and answer)")
        raw, fingerprint = load_hub(t.hub_id, t.hub_config, {"train": "train", "test": "test"}, hint)
        raw = DatasetDict({split: Dataset.from_list(checked_rows(rows, f"{t.hub_id} {split}"))
                           for split, rows in raw.items()})
    else:
        raw, fingerprint = read_local(files, read_jsonl)
    train, validation = carve_validation(raw["train"], t.validation_size, t.validation_seed)
    return DatasetDict({"train": train, "validation": validation, "test": raw["test"]}), fingerprint


def read_jsonl(path: Path) -> Dataset:
    """One {"question": ..., "answer": "... #### <number>"} per line (the official layout), checked row by row."""
    if path.suffix.lower() != ".jsonl":
        raise UserError(f"{path}: unsupported file type {path.suffix!r}; allowed: .jsonl (the official GSM8K files)")
    records = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as err:
            raise UserError(f"{path}, line {number}: not JSON ({err.msg})") from None
    return Dataset.from_list(checked_rows(records, str(path)))


def checked_rows(records, where: str) -> list[dict]:
    rows = []
    for number, record in enumerate(records, start=1):
        if not isinstance(record, dict) or any(not isinstance(record.get(c), str) or not record[c].strip()
                                               for c in COLUMNS):
            raise UserError(f"{where}, row {number}: needs non-empty text fields {list(COLUMNS)}")
        if gold_answer(record["answer"]) is None:
            raise UserError(f"{where}, row {number}: the answer does not end in '{ANSWER_MARK} <number>' "
                            f"({record['answer'][-40:]!r})")
        rows.append({c: record[c] for c in COLUMNS})
    return rows


def carve_validation(train: Dataset, size: int, seed: int) -> tuple[Dataset, Dataset]:
    """`size` training questions drawn with `seed` (independent of the run's seed) as the validation slice, and
    the others, in their file order, as the training split."""
    if size >= len(train):
        raise UserError(f"task.validation_size={size} leaves no training question (the train split has {len(train)}); "
                        f"allowed: < {len(train)}")
    order = np.random.default_rng(seed).permutation(len(train))
    return train.select(sorted(order[size:].tolist())), train.select(sorted(order[:size].tolist()))


# ---- preprocess -------------------------------------------------------------------------------

def strip_calculator_notes(answer: str) -> str:
    return CALCULATOR.sub("", answer)


def tokenise(batch, tokenizer, prompt: str, target: str, strip_calculator: bool, max_length: int,
             keep_overlong: bool):
    prompts = [prompt.format(question=q) for q in batch["question"]]
    answers = [strip_calculator_notes(a) if strip_calculator else a for a in batch["answer"]]
    return encode(tokenizer, prompts, [target.format(answer=a) for a in answers], max_length, keep_overlong)


def prepare(cfg: DictConfig, tokenizer, raw: DatasetDict, fingerprint: dict) -> TaskData:
    t, max_length = cfg.task, cfg.trainer.max_length
    fn = partial(tokenise, tokenizer=tokenizer, prompt=t.prompt, target=t.target, strip_calculator=t.strip_calculator,
                 max_length=max_length)

    train_rows = limit(raw["train"], cfg.data.max_train_samples, "data.max_train_samples", cfg.data.subsample_seed)
    train = cached_map(train_rows, partial(fn, keep_overlong=False), cfg.cache_dir,
                       remove_columns=train_rows.column_names).remove_columns("prompt_ids")
    if len(train) < len(train_rows):
        print(f"[dora-bench] {len(train_rows) - len(train)} of {len(train_rows)} training examples are longer than "
              f"trainer.max_length={max_length} tokens: left out (every trained answer ends in EOS)")
    if len(train) == 0:
        raise UserError(f"no training example fits in trainer.max_length={max_length} tokens; raise it")
    rows = {name: limit(raw[name], cfg.data.max_eval_samples, "data.max_eval_samples") for name in EVAL_SETS}
    features = {name: cached_map(r, partial(fn, keep_overlong=True), cfg.cache_dir, remove_columns=r.column_names)
                for name, r in rows.items()}
    return TaskData(
        train=train,
        eval_sets=features,
        collator=PadCollator(tokenizer.pad_token_id, "right"),
        evaluate=lambda trainer: evaluate(trainer, cfg, tokenizer, rows, features),
    )


# ---- metrics ------------------------------------------------------------------------------------

def normalise_number(text: str) -> str:
    """'$1,234.50' -> '1234.5', '18.0' -> '18', '7.' -> '7', '05' -> '5': commas, dollar signs, leading and
    trailing zeros removed."""
    number = text.replace(",", "").replace("$", "").rstrip(".")
    if "." in number:
        number = number.rstrip("0").rstrip(".")
    number = re.sub(r"^(-?)0+(?=\d)", r"\1", number)
    return "0" if number in ("-0", "") else number


def gold_answer(answer: str) -> str | None:
    """The number after the last '####' of an official answer."""
    if ANSWER_MARK not in answer:
        return None
    found = NUMBER.findall(answer.rsplit(ANSWER_MARK, 1)[1])
    return normalise_number(found[0]) if found else None


def extract_answer(generation: str) -> str | None:
    """The final number of a generated solution: the first number after the first '####' when the model wrote
    the mark (it may go on after it), else the first number after the first "answer is" / "answer:" (a check
    that follows it is not the answer), else the last number in the text; None when there is no number."""
    for marker in MARKERS:
        parts = marker.split(generation, 1)
        if len(parts) == 2 and (found := NUMBER.findall(parts[1])):
            return normalise_number(found[0])
    found = NUMBER.findall(generation)
    return normalise_number(found[-1]) if found else None


def exact_match(generations: list[str], golds: list[str]) -> tuple[float, list[str | None]]:
    """×100 share of generations whose extracted number equals the gold one, and the extracted numbers."""
    extracted = [extract_answer(g) for g in generations]
    return 100.0 * sum(e == g for e, g in zip(extracted, golds)) / len(golds), extracted


def evaluate(trainer, cfg: DictConfig, tokenizer, rows: dict[str, Dataset], features: dict[str, Dataset]) -> dict:
    """Per eval set: answer NLL and token accuracy (teacher-forced), exact match of greedy generations (on the
    first task.generate_samples questions); the generations go to <predictions>/<eval set>.jsonl. The score is the
    validation slice's task.metric; the test split's metrics carry a `test_` prefix."""
    metrics: dict[str, float] = {}
    for name, prefix in EVAL_SETS.items():
        scored = answer_likelihood(trainer, features[name], tokenizer.pad_token_id)
        n = len(features[name])
        asked = features[name].select(range(min(cfg.task.generate_samples or n, n)))
        generations = generate(trainer, tokenizer, asked["prompt_ids"], cfg.task.max_new_tokens,
                               cfg.model.max_positions)
        golds = [gold_answer(a) for a in rows[name]["answer"][:len(asked)]]
        scored["exact_match"], extracted = exact_match(generations, golds)
        metrics |= {prefix + key: value for key, value in scored.items()}
        lines = (json.dumps({"question": q, "generation": g, "extracted": e, "gold": gold, "correct": e == gold},
                            ensure_ascii=False)
                 for q, g, e, gold in zip(rows[name]["question"], generations, extracted, golds))
        write_predictions(trainer, f"{name}.jsonl", "\n".join(lines) + "\n")
    if trainer.is_world_process_zero():
        print("[dora-bench] GSM8K " + ", ".join(f"{k} {v:.3f}" for k, v in metrics.items()))
    metrics["score"] = metrics[cfg.task.metric]
    return metrics
