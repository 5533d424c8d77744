"""Every config combination composes; unknown group names fail with the valid names listed."""
import itertools
from importlib.resources import files

import pytest
from helpers import run_cli
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf


def group(name):
    return sorted(p.name.removesuffix(".yaml") for p in files("dora_bench.conf").joinpath(name).iterdir()
                  if p.name.endswith(".yaml"))


def test_groups_hold_the_paper_set():
    assert set(group("task")) >= {"rte", "mrpc", "stsb", "cola", "sst2", "qnli", "qqp", "mnli"}
    assert set(group("method")) >= {"full_ft", "bitfit", "lora"}
    assert set(group("budget")) >= {"large", "small"}


def combinations():
    """Every method x budget on one task, and every task with every method (composition is slow)."""
    yield from (("rte", m, b) for m, b in itertools.product(group("method"), group("budget")))
    yield from ((t, m, "small") for t, m in itertools.product(group("task"), group("method")))


def test_every_task_method_budget_composes_and_resolves():
    with initialize_config_module("dora_bench.conf", version_base="1.3"):
        for task, method, budget in combinations():
            cfg = compose("config", overrides=[f"task={task}", f"method={method}", f"budget={budget}"])
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


@pytest.mark.parametrize("override,valid", [("task=nope", "rte"), ("method=nope", "lora"),
                                            ("budget=huge", "small"), ("model=gpt5", "minilm")])
def test_unknown_group_value_exits_nonzero_listing_valid_names(override, valid, tmp_path):
    out = run_cli(override, cwd=tmp_path)
    assert out.returncode != 0
    message = out.stdout + out.stderr
    assert "Could not find" in message and override.split("=")[1] in message
    assert valid in message
    assert not (tmp_path / "results").exists()
