"""GLUE loading from the original TSV layouts, JSONL/CSV files, and failing fast offline."""
import re
import time

import pytest
from helpers import run_cli, write_jsonl
from hydra import compose, initialize_config_module

from dora_bench.errors import UserError
from dora_bench.tasks import glue


def cfg(*overrides):
    with initialize_config_module("dora_bench.conf", version_base="1.3"):
        return compose("config", overrides=list(overrides))


def test_real_glue_files_load_with_official_counts(real_data):
    root = real_data("glue")
    expected = {"cola": (8551, 1043, {0, 1}), "mrpc": (3668, 408, {0, 1}), "rte": (2490, 277, {0, 1})}
    for task, (n_train, n_dev, labels) in expected.items():
        raw, fingerprint = glue.load(cfg(f"task={task}", f"data.dir={root}"))
        assert (len(raw["train"]), len(raw["validation"])) == (n_train, n_dev)
        assert set(raw["train"]["label"]) == labels
        assert len(fingerprint["files"]["train"]["sha256"]) == 64
    stsb, _ = glue.load(cfg("task=stsb", f"data.dir={root}"))
    assert len(stsb["validation"]) == 1500 and isinstance(stsb["train"]["label"][0], float)
    mrpc, _ = glue.load(cfg("task=mrpc", f"data.dir={root}/mrpc"))  # the task folder itself works too
    assert mrpc["train"][0]["sentence1"].startswith("Amrozi accused his brother")


def tsv_column(path, column: int, header: bool = True) -> list[str]:
    lines = path.read_text(encoding="utf-8").splitlines()[int(header):]
    return [line.split("\t")[column] for line in lines]


# The class ids of the GLUE datasets on the hub (and of the paper's models): label names in this order.
RTE_IDS = {"entailment": 0, "not_entailment": 1}
MNLI_IDS = {"entailment": 0, "neutral": 1, "contradiction": 2}


def test_cola_headerless_and_rte_string_labels(glue_dir):
    cola, _ = glue.load(cfg("task=cola", f"data.dir={glue_dir}"))
    assert len(cola["train"]) == 24 and cola.column_names["train"] == ["sentence", "label"]
    assert cola["train"]["label"] == [int(v) for v in tsv_column(glue_dir / "cola/train.tsv", 1, header=False)]
    assert cola["train"]["sentence"] == tsv_column(glue_dir / "cola/train.tsv", 3, header=False)
    rte, _ = glue.load(cfg("task=rte", f"data.dir={glue_dir}"))
    assert rte["train"]["label"] == [RTE_IDS[v] for v in tsv_column(glue_dir / "rte/train.tsv", 3)]
    assert set(rte["train"]["label"]) == {0, 1}                      # both classes occur in the written file
    mnli, _ = glue.load(cfg("task=mnli", f"data.dir={glue_dir}"))
    assert set(mnli) == {"train", "matched", "mismatched"}
    assert mnli["mismatched"]["label"] == [MNLI_IDS[v] for v in tsv_column(glue_dir / "mnli/dev_mismatched.tsv", 11)]


def test_jsonl_files_with_hf_column_names(tmp_path):
    rows = [{"sentence1": "a b", "sentence2": "c d", "label": lab} for lab in ("entailment", "not_entailment", 1)]
    train = write_jsonl(tmp_path / "train.jsonl", rows)
    dev = write_jsonl(tmp_path / "dev.jsonl", rows[:2])
    raw, _ = glue.load(cfg("task=rte", f"data.train_file={train}", f"data.validation_file={dev}"))
    assert raw["train"]["label"] == [0, 1, 1] and len(raw["validation"]) == 2


@pytest.mark.parametrize("content,message", [
    ("index\tsentence1\tsentence2\tlabel\n0\ta\tb\tentailment\n1\ta\tb\n", "line 3: 3 fields, expected 4"),
    ("index\tsentence1\tsentence2\tlabel\n0\ta\tb\tmaybe\n", "unknown label 'maybe'; allowed: entailment"),
    ("index\tsentence1\tlabel\n0\ta\tentailment\n", "header lacks column(s) ['sentence2']"),
])
def test_bad_tsv_names_the_problem(tmp_path, content, message):
    (tmp_path / "train.tsv").write_text(content)
    (tmp_path / "dev.tsv").write_text(content)
    with pytest.raises(UserError, match=re.escape(message)):
        glue.load(cfg("task=rte", f"data.dir={tmp_path}"))


def test_offline_without_local_data_fails_fast_naming_the_overrides(tmp_path):
    started = time.time()
    out = run_cli("task=rte", "method=lora", "seed=1", cwd=tmp_path)
    assert out.returncode == 2 and time.time() - started < 60
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("dora-bench: error:") and "data.dir=" in last
    assert not (tmp_path / "results").exists()


def test_offline_hub_model_fails_fast_naming_the_override(tmp_path, glue_dir):
    out = run_cli("task=rte", "method=lora", "seed=1", f"data.dir={glue_dir}", cwd=tmp_path)
    assert out.returncode == 2
    assert "model.name_or_path=" in out.stderr.strip().splitlines()[-1]
