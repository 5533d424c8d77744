"""Bad input over every config group, every cross-field rule and every data family: the CLI stops before training
with one line naming the key (or file) and what is allowed, exit code 2, no traceback, nothing under results/."""
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest
from helpers import run_cli, write_jsonl, write_squad, write_tsv, write_xsum

RTE_HEADER = ["index", "sentence1", "sentence2", "label"]


def rte_rows(n: int) -> list[list[str]]:
    return [[str(i), "a cat sat.", "a cat.", "entailment" if i % 2 else "not_entailment"] for i in range(n)]


LATIN1_TSV = ("\t".join(RTE_HEADER) + "\n0\ta\tb\tentailment\n1\tcaf\xe9\tb\tentailment\n").encode("latin-1")
BINARY_JSONL = b'{"sentence1": "a", "sentence2": "b", "label": 1}\n\x00\x00\x01\x02'


def where(content: bytes, bad: bytes) -> str:
    """How the refusal names the first bad byte, counted here on the bytes the test writes."""
    at = content.index(bad)
    line = content[:at].count(b"\n") + 1
    return f"byte {at} (line {line})"


def glue_tsv_not_utf8(tmp: Path) -> dict:
    """Issue row 3: a Latin-1 byte on line 3 of a GLUE train.tsv."""
    folder = tmp / "glue" / "rte"
    folder.mkdir(parents=True)
    write_tsv(folder / "dev.tsv", RTE_HEADER, rte_rows(4))
    (folder / "train.tsv").write_bytes(LATIN1_TSV)
    return {"data.dir": str(folder)}


def glue_jsonl_binary(tmp: Path) -> dict:
    records = [{"sentence1": "a", "sentence2": "b", "label": 1}] * 4
    write_jsonl(tmp / "dev.jsonl", records)
    (tmp / "train.jsonl").write_bytes(BINARY_JSONL)
    return {"data.dir": "null", "data.train_file": str(tmp / "train.jsonl"), "data.validation_file": str(tmp / "dev.jsonl")}


def glue_csv_empty(tmp: Path) -> dict:
    (tmp / "train.csv").write_text("sentence1,sentence2,label\na,b,1\nc,d,0\n", encoding="utf-8")
    (tmp / "dev.csv").write_bytes(b"")
    return {"data.dir": "null", "data.train_file": str(tmp / "train.csv"), "data.validation_file": str(tmp / "dev.csv")}


def squad_json_not_utf8(tmp: Path) -> dict:
    folder = write_squad(tmp / "squad", version_2=False)
    text = (folder / "dev-v1.1.json").read_text(encoding="utf-8")
    (folder / "dev-v1.1.json").write_bytes(text[:40].encode() + b"\xff\xfe" + text[40:].encode())
    return {"task": "squad_v1", "data.dir": str(folder)}


def xsum_jsonl_binary(tmp: Path) -> dict:
    folder = write_xsum(tmp / "xsum")
    (folder / "train.jsonl").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    return {"task": "xsum", "model": "tiny_bart", "data.dir": str(folder)}


def gsm8k_answer_without_mark(tmp: Path) -> dict:
    folder = tmp / "gsm8k"
    folder.mkdir()
    good = {"question": "What is 2 + 3?", "answer": "2 + 3 = 5\n#### 5"}
    write_jsonl(folder / "train.jsonl", [good] * 60 + [{"question": "And 4 + 4?", "answer": "It is 8."}])
    write_jsonl(folder / "test.jsonl", [good] * 4)
    return {"task": "gsm8k", "model": "tiny_llama", "data.dir": str(folder)}


def header_only_dev(tmp: Path) -> dict:
    folder = tmp / "rte"
    folder.mkdir()
    write_tsv(folder / "train.tsv", RTE_HEADER, rte_rows(4))
    write_tsv(folder / "dev.tsv", RTE_HEADER, [])
    return {"data.dir": str(folder)}


def weightless_model(tmp: Path) -> dict:
    folder = tmp / "model"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "roberta"}))
    return {"model": "roberta_base", "model.name_or_path": str(folder)}


def unwritable_results(tmp: Path) -> dict:
    (tmp / "file").write_text("not a folder")
    return {"results_dir": str(tmp / "file" / "results")}


@dataclass
class Case:
    overrides: dict[str, str]                      # key -> value, on top of BASE
    says: tuple[str, ...]                          # pieces of the one line: the key or file, value, what is allowed
    files: Callable[[Path], dict] | None = None    # writes bad files under tmp_path, returns more overrides
    extra: tuple[str, ...] = field(default=())     # arguments that are not key=value (+key, ~key)


CASES = {
    # the five rows of issue 12's table
    "lora rank 0": Case({"method": "lora", "budget.rank": "0"}, ("budget.rank=0", ">= 1")),
    "adalora init_r below target_r": Case({"method": "adalora", "budget": "small", "method.init_r": "1"},
                                          ("method.init_r=1", ">= target_r=2")),
    "glue tsv not utf-8": Case({}, ("train.tsv", "not UTF-8", where(LATIN1_TSV, b"\xe9"), "0xe9"), glue_tsv_not_utf8),
    "warmup ratio 2": Case({"trainer.warmup_ratio": "2"}, ("trainer.warmup_ratio=2", "[0, 1]")),
    "lora dropout 1.5": Case({"method.lora_dropout": "1.5"}, ("method.lora_dropout=1.5", "[0, 1)")),
    # top level
    "seed not an integer": Case({"seed": "abc"}, ("seed='abc'", "an integer")),
    "no seeds": Case({"seed": "null", "seeds": "[]"}, ("seeds=[]", "non-empty")),
    "report unknown": Case({"report": "median"}, ("report='median'", "best, last")),
    "force not a bool": Case({"force": "maybe"}, ("force='maybe'", "true or false")),
    "unknown top-level key": Case({}, ("foo=1 is not a config key", "seeds"), extra=("+foo=1",)),
    "interpolation to no key": Case({"trainer.epochs": "${nope.x}"}, ("trainer.epochs", "'nope.x' not found")),
    "group removed": Case({}, ("task has no value",), extra=("~task",)),
    "old dora block": Case({"dora.initial_budget": "3"}, ("dora.initial_budget", "method.initial_budget")),
    "results dir not writable": Case({}, ("results_dir=", "not writable"), unwritable_results),
    "gsm8k answer without its final number": Case({}, ("train.jsonl", "row 61", "#### <number>"),
                                                  gsm8k_answer_without_mark),
    "lock choice unknown": Case({"lock.when_held": "never"}, ("lock.when_held='never'", "wait, skip")),
    # group choices
    "unknown task": Case({"task": "nope"}, ("task=nope", "rte", "squad_v1")),
    "unknown method": Case({"method": "nope"}, ("method=nope", "lora", "dora")),
    "unknown budget": Case({"budget": "huge"}, ("budget=huge", "small", "large")),
    "unknown model": Case({"model": "gpt5"}, ("model=gpt5", "minilm")),
    "unknown experiment": Case({}, ("experiment=nope", "table2"), extra=("+experiment=nope",)),
    # task
    "task head unknown": Case({"task.head": "vision"}, ("task.head='vision'", "seq_cls, qa, seq2seq")),
    "task learning rate not a number": Case({"task.learning_rate": "fast"}, ("task.learning_rate='fast'", "a number")),
    "glue metric the task does not report": Case({"task.metric": "f1"}, ("task.metric='f1'", "accuracy")),
    "squad metric unknown": Case({"task": "squad_v1", "task.metric": "bleu"}, ("task.metric='bleu'", "exact, f1")),
    "squad stride not below max_length": Case({"task": "squad_v1", "task.doc_stride": "384"},
                                              ("task.doc_stride=384", "< trainer.max_length=384")),
    "xsum rouge variant": Case({"task": "xsum", "model": "tiny_bart", "task.rouge.l_variant": "rouge3"},
                               ("task.rouge.l_variant='rouge3'", "rougeL, rougeLsum")),
    "xsum target above model positions": Case({"task": "xsum", "model": "tiny_bart", "task.max_target_length": "2000"},
                                              ("task.max_target_length=2000", "<= 1024")),
    "task head the model lacks": Case({"task": "xsum"}, ("task=xsum needs a seq2seq model", "model=tiny_roberta",
                                                         "bart_base, tiny_bart")),
    # methods: every implementation
    "lora r 0": Case({"method.r": "0"}, ("method.r=0", ">= 1")),
    "none with another implementation": Case({"method": "none", "method.impl": "lora"},
                                             ("method.impl='lora'", "allowed: none")),
    "unknown method key": Case({}, ("method.foo=1 is not a config key", "lora_dropout"), extra=("+method.foo=1",)),
    "adalora t_init + t_final": Case({"method": "adalora", "method.t_init": "0.6"}, ("method.t_init + t_final=1.1", "< 1")),
    "adalora delta_t 0": Case({"method": "adalora", "method.delta_t": "0"}, ("method.delta_t=0", ">= 1")),
    "adalora beta1 1": Case({"method": "adalora", "method.beta1": "1"}, ("method.beta1=1", "[0, 1)")),
    "dora initial below final budget": Case({"method": "dora", "method.initial_budget": "1"},
                                            ("method.initial_budget=1", ">= final_budget=2")),
    "dora t_init + t_final": Case({"method": "dora", "method.t_init": "0.6"}, ("method.t_init + t_final=1.1", "< 1")),
    "dora dropout 1": Case({"method": "dora", "method.lora_dropout": "1"}, ("method.lora_dropout=1", "[0, 1)")),
    "dora schedule unknown": Case({"method": "dora", "method.schedule": "cubic"}, ("method.schedule='cubic'", "paper")),
    "dora adapter dtype unknown": Case({"method": "dora", "method.adapter_dtype": "bf16"},
                                       ("method.adapter_dtype='bf16'", "fp32", "base")),
    "dora prune interval 0": Case({"method": "dora", "method.prune_interval": "0"}, ("method.prune_interval=0", "positive")),
    "dora budget 0": Case({"method": "dora", "budget.rank": "0"}, ("budget.rank=0", ">= 1")),
    "adapter config unknown": Case({"method": "h_adapter", "method.adapter_config": "lora"},
                                   ("method.adapter_config='lora'", "double_seq_bn, seq_bn")),
    "adapter bottleneck 0": Case({"method": "p_adapter", "method.bottleneck": "0"}, ("method.bottleneck=0", ">= 1")),
    "full ft learning rate negative": Case({"method": "full_ft", "method.learning_rate": "-1"},
                                           ("method.learning_rate=-1", "> 0")),
    "bitfit epochs 0": Case({"method": "bitfit", "method.epochs": "0"}, ("method.epochs=0", ">= 1")),
    "method impl of another schema": Case({"method": "dora", "method.impl": "lora"}, ("method.impl='lora'", "dora")),
    # budget
    "budget bottleneck negative": Case({"method": "h_adapter", "budget.houlsby_bottleneck": "-1"},
                                       ("budget.houlsby_bottleneck=-1", ">= 1")),
    "budget rank not an integer": Case({"budget.rank": "two"}, ("budget.rank='two'", "an integer")),
    # model
    "model positions 0": Case({"model.max_positions": "0"}, ("model.max_positions=0", ">= 1")),
    "model head unknown": Case({"model.heads": "[vision]"}, ("model.heads=['vision']", "seq_cls, qa, seq2seq")),
    "model regex broken": Case({"model.adapted_modules": "'a(b'"}, ("model.adapted_modules='a(b'", "regular expression")),
    "model folder without weights": Case({}, ("has no safetensors weights",), weightless_model),
    # data
    "max train samples 0": Case({"data.max_train_samples": "0"}, ("data.max_train_samples=0", ">= 1")),
    "validation file not a path": Case({"data.validation_file": "[1]"}, ("data.validation_file=[1]", "a path")),
    "missing data dir": Case({"data.dir": "/no/such/dir"}, ("data.dir='/no/such/dir'", "not a directory")),
    "missing data file": Case({"data.dir": "null", "data.train_file": "/no/train.jsonl",
                               "data.validation_file": "/no/dev.jsonl"}, ("/no/train.jsonl", "does not exist")),
    "dev file without examples": Case({}, ("validation file", "dev.tsv", "no examples"), header_only_dev),
    # trainer
    "learning rate 0": Case({"trainer.learning_rate": "0"}, ("trainer.learning_rate=0", "> 0")),
    "epochs 0": Case({"trainer.epochs": "0"}, ("trainer.epochs=0", ">= 1")),
    "epochs fractional": Case({"trainer.epochs": "1.5"}, ("trainer.epochs=1.5", "an integer")),
    "batch size 0": Case({"trainer.batch_size": "0"}, ("trainer.batch_size=0", ">= 1")),
    "grad accum 0": Case({"trainer.grad_accum": "0"}, ("trainer.grad_accum=0", ">= 1")),
    "max length 0": Case({"trainer.max_length": "0"}, ("trainer.max_length=0", ">= 1")),
    "max length above model positions": Case({"trainer.max_length": "4096"}, ("trainer.max_length=4096", "<= 512")),
    "lr scheduler unknown": Case({"trainer.lr_scheduler": "exponential"}, ("trainer.lr_scheduler='exponential'", "cosine")),
    "precision unknown": Case({"trainer.precision": "fp8"}, ("trainer.precision='fp8'", "fp32, bf16, fp16")),
    "fp16 without cuda": Case({"trainer.precision": "fp16", "trainer.use_cpu": "true"},
                              ("trainer.precision='fp16'", "fp32, bf16", "CUDA")),
    "report_to unknown": Case({"trainer.report_to": "comet"}, ("trainer.report_to='comet'", "tensorboard, wandb, mlflow")),
    "tf32 not a bool": Case({"trainer.tf32": "maybe"}, ("trainer.tf32='maybe'", "true or false")),
    "compile not a bool": Case({"trainer.compile": "sometimes"}, ("trainer.compile='sometimes'", "true or false")),
    # data files of every family that are not text
    "glue jsonl binary": Case({}, ("train.jsonl", where(BINARY_JSONL, b"\x00"), "NUL"), glue_jsonl_binary),
    "glue csv empty": Case({}, ("validation file", "dev.csv", "is empty"), glue_csv_empty),
    "squad json not utf-8": Case({}, ("dev-v1.1.json", "byte 40 (line 1)", "0xff"), squad_json_not_utf8),
    "xsum jsonl binary": Case({}, ("train.jsonl", "byte 0 (line 1)", "0x89"), xsum_jsonl_binary),
}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_is_refused_in_one_line_with_nothing_written(name, tmp_path, glue_dir, cache_dir):
    case = CASES[name]
    base = {"task": "rte", "method": "lora", "model": "tiny_roberta", "seed": "1", "data.dir": str(glue_dir),
            "trainer.epochs": "1", "trainer.progress_bar": "false"}
    chosen = base | case.overrides | (case.files(tmp_path) if case.files else {})
    args = [f"{key}={value}" for key, value in chosen.items()] + list(case.extra)
    out = run_cli(*args, cwd=tmp_path, env={"HYDRA_FULL_ERROR": "0"}, timeout=300)
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2, (out.returncode, out.stderr[-2000:])
    assert len(lines) == 1 and lines[0].startswith("dora-bench: error: "), out.stderr[-2000:]
    for piece in case.says:
        assert piece in lines[0], (piece, lines[0])
    assert "Traceback" not in out.stdout + out.stderr
    assert not (tmp_path / "results").exists()  # no result file and no checkpoint (results/checkpoints)
    assert not (tmp_path / "file" / "results").exists()


def test_the_matrix_covers_every_config_group_method_and_data_family(tmp_path):
    """Checked against the configs, not against this table: a config group, a method or a task family added
    without a refusal case here fails."""
    import yaml
    from omegaconf import OmegaConf

    from dora_bench.results import compose_config

    conf = Path(__file__).resolve().parents[1] / "conf"
    family = {p.stem: yaml.safe_load(p.read_text())["family"] for p in (conf / "task").glob("*.yaml")}
    settings = {}
    for name, case in CASES.items():
        (tmp_path / name).mkdir()
        settings[name] = {"task": "rte", "method": "lora"} | case.overrides | (case.files(tmp_path / name) if case.files
                                                                              else {})
    touched = {key.lstrip("+~").split("=")[0].split(".")[0] for name, case in CASES.items()
               for key in [*settings[name], *case.extra]}
    groups = {k for k, v in OmegaConf.to_container(compose_config([])).items() if isinstance(v, dict)}
    assert groups <= touched, groups - touched
    assert {p.stem for p in (conf / "method").glob("*.yaml")} <= {s["method"] for s in settings.values()}
    files_refused = {family[settings[name]["task"]] for name, case in CASES.items() if case.files}
    assert set(family.values()) <= files_refused, set(family.values()) - files_refused


def test_with_hydra_full_error_the_traceback_comes_too(tmp_path, glue_dir):
    out = run_cli("model=tiny_roberta", "seed=abc", f"data.dir={glue_dir}", cwd=tmp_path, env={"HYDRA_FULL_ERROR": "1"})
    assert out.returncode == 2
    assert "Traceback" in out.stderr
    assert out.stderr.strip().splitlines()[-1] == "dora-bench: error: seed='abc' is not valid; allowed: an integer or null"


def test_a_bad_job_stops_a_multirun_with_the_same_line(tmp_path, glue_dir):
    out = run_cli("-m", "model=tiny_roberta", "budget.rank=0,2", f"data.dir={glue_dir}", cwd=tmp_path,
                  env={"HYDRA_FULL_ERROR": "0"})
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == ["dora-bench: error: budget.rank=0 is not valid; allowed: >= 1"]
    assert not (tmp_path / "results").exists()
