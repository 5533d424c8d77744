"""Every config combination composes and passes its schemas; `dora-bench --help` reads like the tool."""
import itertools
from importlib.resources import files

import pytest
from helpers import run_cli
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

from dora_bench.schema import validate


def options(name):
    return sorted(p.name.removesuffix(".yaml") for p in files("dora_bench.conf").joinpath(name).iterdir()
                  if p.name.endswith(".yaml"))


def test_groups_hold_the_paper_set():
    assert set(options("task")) >= {"rte", "mrpc", "stsb", "cola", "sst2", "qnli", "qqp", "mnli"}
    assert set(options("method")) >= {"full_ft", "bitfit", "lora"}
    assert set(options("budget")) >= {"large", "small"}


def combinations():
    """Every method x budget on one task, and every task with every method (composition is slow)."""
    yield from (("rte", m, b) for m, b in itertools.product(options("method"), options("budget")))
    yield from ((t, m, "small") for t, m in itertools.product(options("task"), options("method")))


@pytest.mark.slow
def test_every_task_method_budget_composes_and_passes_the_schemas():
    with initialize_config_module("dora_bench.conf", version_base="1.3"):
        for task, method, budget in combinations():
            model = {"xsum": "bart_base", "gsm8k": "tiny_llama"}.get(task, "roberta_base")  # with the task's head
            cfg = compose("config", overrides=[f"task={task}", f"method={method}", f"budget={budget}", f"model={model}"])
            validate(cfg)
            resolved = OmegaConf.to_container(cfg, resolve=True)
            trainer = resolved["trainer"]
            assert trainer["learning_rate"] > 0 and trainer["epochs"] >= 1, (task, method)
            assert resolved["method"]["name"] == method


def test_table8_values_reach_the_trainer_and_methods_override_them():
    with initialize_config_module("dora_bench.conf", version_base="1.3"):
        lora = compose("config", overrides=["task=sst2", "method=lora", "budget=large"])
        assert (lora.trainer.learning_rate, lora.trainer.batch_size, lora.trainer.epochs) == (8.0e-4, 64, 60)
        assert lora.method.r == 8
        full = compose("config", overrides=["task=sst2", "method=full_ft"])
        assert full.trainer.learning_rate == full.method.learning_rate != lora.trainer.learning_rate
        assert compose("config", overrides=["trainer.learning_rate=0.1"]).trainer.learning_rate == 0.1


def test_help_names_the_tool_opens_with_examples_and_lists_the_groups(tmp_path):
    out = run_cli("--help", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith("Usage: dora-bench ") and "cli" not in out.stdout.split()
    examples = [line.split("#")[0].split() for line in lines[1:6] if line.strip()]
    assert len(examples) == 3 and all(words[0] == "dora-bench" and len(words) > 1 for words in examples)
    for group in ("task", "method", "budget", "model", "experiment"):
        listed = next(line for line in lines if line.startswith(f"{group}: "))
        assert set(listed.removeprefix(f"{group}: ").split(", ")) == set(options(group)), listed
    assert "schema" not in out.stdout  # the schemas are no config group to choose


def test_cfg_job_still_prints_the_composed_config(tmp_path):
    out = run_cli("--cfg", "job", "method=dora", "method.initial_budget=6", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    printed = OmegaConf.create(out.stdout)
    assert printed.method.name == "dora" and printed.method.initial_budget == 6
    assert printed.trainer.precision == "fp32" and "hydra" not in printed
