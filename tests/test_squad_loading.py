"""SQuAD loading: the official JSON files, checks that name the bad record, failing fast offline."""
import json
import random
import re
import time
from pathlib import Path

import pytest
from helpers import squad_articles, write_squad
from hydra import compose, initialize_config_module

from dora_bench.errors import UserError
from dora_bench.tasks import squad


def cfg(*overrides):
    with initialize_config_module("dora_bench.conf", version_base="1.3"):
        return compose("config", overrides=list(overrides))


def test_table8_rows_reach_the_config():
    for task, lr in (("squad_v1", 5e-3), ("squad_v2", 3.4e-3)):
        c = cfg(f"task={task}", "method=lora")
        t = c.task
        assert (t.max_length, c.trainer.learning_rate, c.trainer.batch_size, c.trainer.epochs) == (384, lr, 16, 14)
        assert (t.reg_coefficient, t.prune_interval, t.head, t.doc_stride, t.n_best) == (0.1, 100, "qa", 128, 20)
        assert (t.max_answer_length, t.null_threshold, t.version_2) == (30, 0.0, task == "squad_v2")


def test_official_v1_dev_file_loads_with_its_question_count(real_data):
    v1 = squad.read_squad_json(real_data("squad_v1/dev.json"), version_2=False)
    assert len(v1) == 10570 and v1[0]["answers"]["text"][0] == "Denver Broncos"


def test_v2_dev_half_loads_with_its_question_and_unanswerable_counts(real_data):
    v2 = squad.read_squad_json(real_data("squad_v2/dev_half.json"), version_2=True)
    assert len(v2) == 6078 and sum(not a["text"] for a in v2["answers"]) == 3168  # unanswerable


def test_data_dir_with_official_names_and_explicit_files(tmp_path):
    root = write_squad(tmp_path, version_2=True)
    raw, fingerprint = squad.load(cfg("task=squad_v2", f"data.dir={root}"))
    assert (len(raw["train"]), len(raw["validation"])) == (24, 12)
    assert raw["train"].column_names == ["id", "title", "context", "question", "answers"]
    assert len(fingerprint["files"]["validation"]["sha256"]) == 64
    explicit, _ = squad.load(cfg("task=squad_v2", f"data.train_file={root}/dev-v2.0.json",
                                 f"data.validation_file={root}/dev-v2.0.json"))
    assert len(explicit["train"]) == 12


def write(tmp_path, content) -> Path:
    path = tmp_path / "bad.json"
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return path


def with_first_qa(change, version_2=False):
    data = squad_articles(random.Random(0), 3, version_2)
    change(data["data"][0]["paragraphs"][0]["qas"][0])
    return data


@pytest.mark.parametrize("content,version_2,message", [
    (with_first_qa(lambda qa: qa["answers"][0].update(answer_start=qa["answers"][0]["answer_start"] + 1)), False,
     "question id 'q0': answer"),
    (with_first_qa(lambda qa: qa.update(answers=[])), False, "question id 'q0': no answers"),
    (with_first_qa(lambda qa: qa.pop("question")), False, "question id 'q0': field 'question' is missing"),
    (with_first_qa(lambda qa: qa.update(is_impossible=True)), False,
     "question id 'q0': is_impossible=true is SQuAD v2.0 data; use task=squad_v2"),
    ({"version": "1.1"}, False, "not an official SQuAD JSON file"),
    ("{not json", False, "not an official SQuAD JSON file"),
])
def test_bad_records_name_the_file_the_question_and_what_is_allowed(tmp_path, content, version_2, message):
    path = write(tmp_path, content)
    with pytest.raises(UserError, match=re.escape(message)) as err:
        squad.read_squad_json(path, version_2)
    assert str(path) in str(err.value)


def test_offline_without_local_data_fails_fast_naming_the_overrides():
    started = time.time()
    with pytest.raises(UserError, match=r"rajpurkar/squad_v2 would come from the hub.*data\.dir=.*dev-v2\.0\.json"):
        squad.load(cfg("task=squad_v2"))
    assert time.time() - started < 10


def test_data_dir_without_the_official_names_says_which_names_and_overrides(tmp_path):
    (tmp_path / "dev-v1.1.json").write_text("{}")
    with pytest.raises(UserError, match=re.escape("has no train-v1.1.json; expected train-v1.1.json, dev-v1.1.json "
                                                  "(other names: task.data_files.<split>=")):
        squad.load(cfg("task=squad_v1", f"data.dir={tmp_path}"))
