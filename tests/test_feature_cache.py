"""The tokenised-feature cache is keyed on everything that shapes the features (tasks/cache_key.py): a changed
prompt template, tokenising code (also in a helper it calls), tokenizer or row selection tokenises again; the
same inputs reuse the features, also from another process."""
import itertools
import subprocess
import sys
from functools import partial
from pathlib import Path

import pytest
from datasets import Dataset
from helpers import write_jsonl
from hydra import compose, initialize_config_module

from dora_bench.models import byte_tokenizer
from dora_bench.tasks import cached_map, gsm8k
from dora_bench.tasks.cache_key import feature_key

ROWS = {"question": ["Tom has 3 apples. How many?", "Ann has 5 pens. How many?"], "answer": ["3\n#### 3", "5\n#### 5"]}


def entries(cache_dir: Path) -> set[str]:
    return {p.name for p in (cache_dir / "features").iterdir() if not p.name.startswith(".")}


def prepared(data_dir, cache_dir, *overrides):
    with initialize_config_module("dora_bench.conf", version_base="1.3"):
        cfg = compose("config", overrides=["task=gsm8k", "model=tiny_llama", f"data.dir={data_dir}",
                                           "task.validation_size=1", f"cache_dir={cache_dir}", *overrides])
    raw, fingerprint = gsm8k.load(cfg)
    return gsm8k.prepare(cfg, byte_tokenizer(with_pad=True), raw, fingerprint)


def test_a_changed_prompt_template_tokenises_again_and_the_same_one_is_reused(tmp_path):
    rows = [{"question": q, "answer": a} for q, a in zip(ROWS["question"] * 2, ROWS["answer"] * 2)]
    write_jsonl(tmp_path / "train.jsonl", rows)
    write_jsonl(tmp_path / "test.jsonl", rows[:1])
    cache = tmp_path / "cache"
    first = prepared(tmp_path, cache)
    after_first = entries(cache)
    assert len(after_first) == 3                                     # train, validation, test
    assert entries(cache) == after_first and prepared(tmp_path, cache).train["input_ids"] == first.train["input_ids"]
    other = prepared(tmp_path, cache, "task.prompt='Q: {question}\nA:'")
    assert len(entries(cache) - after_first) == 3                    # every split tokenised again
    assert other.train["input_ids"] != first.train["input_ids"]
    assert other.train["input_ids"][0][:3] == byte_tokenizer(True)("Q: ")["input_ids"]
    prepared(tmp_path, cache, "task.strip_calculator=false")
    assert len(entries(cache) - after_first) == 6                    # another task setting: again
    prepared(tmp_path, cache, "trainer.learning_rate=0.5")
    assert len(entries(cache) - after_first) == 6                    # not a preprocessing setting: reused


def tokenise_v1(batch):
    return {"n": [len(q) for q in batch["question"]]}


def tokenise_v2(batch):
    return {"n": [len(q) + 1 for q in batch["question"]]}


def test_changed_code_changes_the_key(monkeypatch):
    rows = Dataset.from_dict(ROWS)
    tokenizer = byte_tokenizer(with_pad=True)
    fn = partial(gsm8k.tokenise, tokenizer=tokenizer, prompt="Q: {question}", target=" {answer}", strip_calculator=True,
                 max_length=64, keep_overlong=False)
    key = feature_key(rows, fn, {})
    assert feature_key(rows, fn, {}) == key
    renamed = tokenise_v2
    renamed.__name__ = renamed.__qualname__ = "tokenise_v1"     # same name, other body
    assert feature_key(rows, tokenise_v1, {}) != feature_key(rows, renamed, {})
    # a helper the function calls is code that shapes the features too
    monkeypatch.setattr(gsm8k, "strip_calculator_notes", lambda answer: answer.upper())
    assert feature_key(rows, fn, {}) != key
    monkeypatch.undo()
    assert feature_key(rows, fn, {}) == key
    tokenizer.padding_side = "left"
    assert feature_key(rows, fn, {}) != key                    # the tokenizer counts
    assert feature_key(rows.select([0]), fn, {}) != feature_key(rows, fn, {})   # the rows count
    assert feature_key(rows, partial(fn, max_length=32), {}) != feature_key(rows, fn, {})   # lengths count


KEY_SCRIPT = """
from functools import partial
from datasets import Dataset
from dora_bench.models import byte_tokenizer
from dora_bench.tasks import gsm8k
from dora_bench.tasks.cache_key import feature_key
rows = Dataset.from_dict({rows!r})
fn = partial(gsm8k.tokenise, tokenizer=byte_tokenizer(with_pad=True), prompt="Q: {{question}}", target=" {{answer}}",
             strip_calculator=True, max_length=64, keep_overlong=False)
print(feature_key(rows, fn, {{"remove_columns": ["question", "answer"]}}))
"""


@pytest.mark.slow
def test_the_key_is_the_same_in_another_process():
    """No object addresses or per-process hashes in the key: runs share the cache."""
    script = KEY_SCRIPT.format(rows=ROWS)
    keys = {subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout.strip()
            for _ in range(2)}
    assert len(keys) == 1 and len(keys.pop()) == 64


CALLS = itertools.count()   # not data the function reads: not part of the key


def counted(batch):
    next(CALLS)
    return {"n": [len(q) for q in batch["question"]]}


def test_cached_map_reuses_what_it_computed(tmp_path):
    rows = Dataset.from_dict(ROWS)
    first = cached_map(rows, counted, str(tmp_path), remove_columns=rows.column_names)
    second = cached_map(rows, counted, str(tmp_path), remove_columns=rows.column_names)
    assert next(CALLS) == 1 and first["n"] == second["n"] == [27, 25]   # one batch computed, once
