"""XSum: ROUGE options on hand-made cases, sentence splitting without nltk, loading checks."""
import re
import time

import pytest
from helpers import write_jsonl, write_xsum
from hydra import compose, initialize_config_module

from dora_bench.errors import UserError
from dora_bench.tasks import xsum
from dora_bench.tasks.xsum import rouge_scores, sentence_lines


def cfg(*overrides):
    with initialize_config_module("dora_bench.conf", version_base="1.3"):
        return compose("config", overrides=list(overrides))


def test_table8_row_and_generation_settings_reach_the_config():
    c = cfg("task=xsum", "model=bart_base", "method=lora")
    trainer = c.trainer
    assert (trainer.max_length, trainer.learning_rate, trainer.batch_size, trainer.epochs) == (768, 3.4e-3, 16, 15)
    assert (c.task.reg_coefficient, c.task.prune_interval, c.task.max_target_length) == (0.1, 100, 64)
    assert dict(c.task.generation) == {"generation_num_beams": 3, "generation_max_length": 64}
    assert (c.task.rouge.use_stemmer, c.task.metric) == (False, "rougeL")
    assert cfg("task=xsum", "task.rouge.l_variant=rougeLsum").task.metric == "rougeLsum"


def test_identical_and_disjoint_texts():
    assert rouge_scores(["the cat sat"], ["the cat sat"]) == {"rouge1": 100.0, "rouge2": 100.0, "rougeL": 100.0}
    assert rouge_scores(["dogs bark"], ["the cat sat"]) == {"rouge1": 0.0, "rouge2": 0.0, "rougeL": 0.0}


def test_scores_are_per_example_f_measures_x100_averaged():
    # example 1: unigram P 2/3, R 2/4 -> F 4/7; example 2: identical -> 1
    scores = rouge_scores(["the cat ran", "a b"], ["the cat sat down", "a b"])
    assert scores["rouge1"] == pytest.approx(100 * (4 / 7 + 1) / 2)
    assert scores["rouge2"] == pytest.approx(100 * (2 * (1 / 2) * (1 / 3) / (1 / 2 + 1 / 3) + 1) / 2)


def test_stemming_is_an_option_and_off_by_default():
    plain = rouge_scores(["cats running"], ["cat runs"])
    stemmed = rouge_scores(["cats running"], ["cat runs"], use_stemmer=True)
    assert plain["rouge1"] == 0.0 and stemmed["rouge1"] == 100.0


def test_sentences_are_split_on_newlines_and_end_punctuation():
    assert sentence_lines(" One two. Three four!  Five?\nsix seven \n\n") == "One two.\nThree four!\nFive?\nsix seven"
    assert sentence_lines("3.5 million people") == "3.5 million people"


def test_rougelsum_is_summary_level_and_differs_from_rougel():
    # the same two sentences in the other order: one LCS over the text finds half, per sentence all
    prediction, reference = "c d. a b.", "a b. c d."
    plain = rouge_scores([prediction], [reference], l_variant="rougeL")
    lsum = rouge_scores([prediction], [reference], l_variant="rougeLsum")
    assert (plain["rougeL"], lsum["rougeLsum"]) == (pytest.approx(50.0), pytest.approx(100.0))
    assert set(lsum) == {"rouge1", "rouge2", "rougeLsum"} and lsum["rouge1"] == plain["rouge1"] == 100.0


def test_local_jsonl_files_load_and_empty_documents_are_rejected(tmp_path):
    root = write_xsum(tmp_path / "ok")
    raw, fingerprint = xsum.load(cfg("task=xsum", f"data.dir={root}"))
    assert (len(raw["train"]), len(raw["validation"])) == (16, 6)
    assert raw["train"].column_names == ["id", "document", "summary"]
    assert fingerprint["source"] == "local"
    rows = [{"document": "a b.", "summary": "a."}, {"document": " ", "summary": "b."}]
    bad = write_jsonl(tmp_path / "bad.jsonl", rows)
    with pytest.raises(UserError, match=re.escape(f"{bad}, row 2: document is ' '; every row needs a non-empty")):
        xsum.read_pairs(bad)
    no_summary = write_jsonl(tmp_path / "cols.jsonl", [{"document": "a b.", "highlights": "a."}])
    with pytest.raises(UserError, match=re.escape("missing column(s) ['summary']")):
        xsum.read_pairs(no_summary)
    csv = tmp_path / "pairs.csv"
    csv.write_text('document,summary\n"One. Two.",one\n')
    assert xsum.read_pairs(csv)["summary"] == ["one"]


def test_split_file_names_are_configurable_and_offline_hub_fails_fast(tmp_path):
    root = write_xsum(tmp_path)
    (root / "validation.jsonl").rename(root / "test_1000.jsonl")
    raw, _ = xsum.load(cfg("task=xsum", f"data.dir={root}", "task.data_files.validation=test_1000.jsonl"))
    assert len(raw["validation"]) == 6
    started = time.time()
    with pytest.raises(UserError, match=r"EdinburghNLP/xsum would come from the hub.*data\.dir="):
        xsum.load(cfg("task=xsum"))
    assert time.time() - started < 10
