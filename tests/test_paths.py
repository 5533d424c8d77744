"""Paths stay where they belong: config values that become folder names are refused unless they are one safe
name (exit 2, one line, nothing written), and every path of a run is checked to lie under results_dir."""
import os
from pathlib import Path

import pytest
from helpers import run_cli
from hydra import compose, initialize_config_module

from dora_bench import results
from dora_bench.errors import UserError
from dora_bench.schema import validate

ALLOWED = "letters, digits, '.', '_', '+', '-' (it names a folder: no '/', not '.' or '..')"


def every_file(root: Path) -> set[Path]:
    return {p for p in root.rglob("*")}


def test_a_traversing_tag_exits_2_in_one_line_and_writes_nothing(tmp_path):
    """Before, `tag=/../../../escape` put the result under results/runs/escape and Hydra's folder in ./escape."""
    cwd = tmp_path / "a" / "b" / "c"   # three levels down: an escape would still land inside tmp_path
    cwd.mkdir(parents=True)
    before = every_file(tmp_path)
    out = run_cli("tag=/../../../escape", "model=tiny_roberta", cwd=cwd, env={"HYDRA_FULL_ERROR": None})
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [f"dora-bench: error: tag='/../../../escape' is not valid; allowed: "
                                               f"{ALLOWED}, or empty"]
    assert every_file(tmp_path) == before   # not Hydra's run folder, not a result, not a checkpoint


def test_a_multirun_with_a_traversing_tag_writes_only_under_its_sweep_folder(tmp_path):
    cwd = tmp_path / "a" / "b" / "c"
    cwd.mkdir(parents=True)
    out = run_cli("-m", "tag=/../../../escape", "model=tiny_roberta", cwd=cwd, env={"HYDRA_FULL_ERROR": None})
    assert out.returncode == 2
    assert out.stderr.strip().splitlines()[-1].startswith("dora-bench: error: tag='/../../../escape' is not valid")
    assert [p.name for p in tmp_path.iterdir()] == ["a"] and [p.name for p in cwd.iterdir()] == ["multirun"]
    job_folders = [p.name for p in (cwd / "multirun").iterdir() if p.is_dir()]
    assert job_folders == ["model=tiny_roberta,tag=%2F..%2F..%2F..%2Fescape"]   # one folder name, no path


def compose_config(*overrides: str):
    with initialize_config_module("dora_bench.conf", version_base="1.3"):
        return compose("config", overrides=["model=tiny_roberta", *overrides])


@pytest.mark.parametrize("key,value", [
    ("tag", "-a/b"), ("tag", "/../../x"), ("tag", ".."), ("model.name", "../roberta"), ("model.name", ".."),
    ("task.name", "r/te"), ("task.name", ""), ("method.name", "lora/../../x"), ("method.name", "."),
    ("budget.name", "sm all"), ("budget.name", "small\\x"),
])
def test_the_schema_refuses_every_value_that_would_name_a_path(key, value):
    with pytest.raises(UserError) as refused:
        validate(compose_config(f"{key}='{value}'"))
    assert str(refused.value) == f"{key}={value!r} is not valid; allowed: {ALLOWED}" + (", or empty" if key == "tag" else "")


@pytest.mark.parametrize("key,value", [("tag", ""), ("tag", "-epoch1"), ("tag", "-init3"), ("tag", "+dem.0_1"),
                                       ("model.name", "tiny_roberta"), ("budget.name", "b16")])
def test_names_the_configs_use_are_accepted(key, value):
    validate(compose_config(f"{key}='{value}'"))


def test_every_path_of_a_run_is_checked_to_lie_under_results_dir(tmp_path, monkeypatch):
    """Whatever builds a name (here a run name the schema never saw), locate refuses a path outside results_dir."""
    cfg = compose_config(f"results_dir={tmp_path / 'results'}")
    assert results.locate(cfg, 1).result.is_relative_to(tmp_path / "results")
    monkeypatch.setattr(results, "run_name", lambda cfg: "../../../../escape")
    with pytest.raises(UserError, match=r"^the result path .*escape.* of this run lies outside results_dir=.*; "
                                        r"nothing was written$"):
        results.locate(cfg, 1)
    assert list(tmp_path.iterdir()) == []


def test_a_results_dir_reached_through_a_symlink_is_still_inside(tmp_path):
    (tmp_path / "scratch").mkdir()
    os.symlink(tmp_path / "scratch", tmp_path / "results")
    where = results.locate(compose_config(f"results_dir={tmp_path / 'results'}"), 1)
    assert where.checkpoints.is_relative_to(tmp_path / "results")


def test_hydra_sweep_folder_names_are_one_name():
    assert results.folder_name("results_dir=/scratch/r,tag=-x") == "results_dir=%2Fscratch%2Fr,tag=-x"
    assert "/" not in results.folder_name("a=" + "/.." * 200)
