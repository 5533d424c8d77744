"""What a clone and an install hold: every config in the wheel, `dora-bench --help` from a non-editable install,
and a results/ folder that commits result files and tables but never checkpoints, adapters or predictions."""
import re
import shutil
import site
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module

from dora_bench import results

REPO = Path(__file__).resolve().parents[1]
BUILD_INPUTS = ("pyproject.toml", "README.md", "dora_bench", "conf")  # what setuptools reads to build the wheel


def run(*command, **kwargs) -> subprocess.CompletedProcess:
    out = subprocess.run([str(c) for c in command], capture_output=True, text=True, timeout=300, **kwargs)
    assert out.returncode == 0, f"{command}: {(out.stdout + out.stderr)[-3000:]}"
    return out


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel, built without network from a copy of the sources (setuptools' build/ cache stays out of it)."""
    source = tmp_path_factory.mktemp("source")
    for name in BUILD_INPUTS:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(REPO / name, source / name)
    out = tmp_path_factory.mktemp("wheel")
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
        "-w", out, source)
    return next(out.glob("dora_bench-*.whl"))


@pytest.mark.slow
def test_wheel_holds_every_config_of_conf_and_nothing_else(wheel):
    expected = {"dora_bench/conf/" + p.relative_to(REPO / "conf").as_posix() for p in (REPO / "conf").rglob("*.yaml")}
    assert len(expected) >= 30  # 11 tasks, 7 methods, 4 budgets, 5 models, 8 experiments, config.yaml
    names = set(zipfile.ZipFile(wheel).namelist())
    in_wheel = {n for n in names if n.startswith("dora_bench/conf/") and n.endswith(".yaml")}
    assert in_wheel == expected
    assert {"dora_bench/conf/__init__.py", "dora_bench/paper.yaml", "dora_bench/cli.py"} <= names


@pytest.mark.slow
def test_help_of_a_non_editable_install_lists_every_config_group(wheel, tmp_path):
    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", "--without-pip", venv)
    python = venv / "bin" / "python"
    purelib = Path(run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])").stdout.strip())
    # This environment's packages (torch, hydra, pip, ...) as plain paths: the .pth files there, which hold the
    # editable install of this checkout, are not run for paths added this way.
    host = [*site.getsitepackages(), site.getusersitepackages(), sysconfig.get_paths()["purelib"]]
    (purelib / "host_packages.pth").write_text("\n".join(dict.fromkeys(host)) + "\n")
    run(python, "-m", "pip", "install", "--no-deps", "--no-index", "-q", wheel)
    env = {"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "HOME": str(tmp_path), "HF_HUB_OFFLINE": "1"}
    where = run(python, "-c", "import dora_bench.conf; print(dora_bench.conf.__file__)", cwd=tmp_path, env=env)
    assert Path(where.stdout.strip()).is_relative_to(purelib)  # the installed copy, not the checkout

    help_text = run(venv / "bin" / "dora-bench", "--help", cwd=tmp_path, env=env).stdout
    for group in sorted(p for p in (REPO / "conf").iterdir() if p.is_dir() and p.name != "__pycache__"):
        assert re.search(rf"\b{group.name}\b", help_text), group.name
        for option in sorted(p.stem for p in group.glob("*.yaml")):
            assert re.search(rf"\b{option}\b", help_text), f"{group.name}={option}"


def results_paths() -> dict[str, Path]:
    """What lands in results/: run files where the code puts them (default results_dir), and the other files."""
    with initialize_config_module("dora_bench.conf", version_base="1.3"):
        cfg = compose("config", overrides=["model=minilm", "task=squad_v1", "method=dora"])
        where = results.locate(cfg, 1)
    result = where.result
    return {"result": result, "adapter": result.with_suffix(".adapter") / "adapter_model.safetensors",
            "predictions": result.with_suffix(".predictions") / "validation.json",
            "result being written": result.parent / f".{result.name}.x1y2.tmp",
            "checkpoint": where.checkpoints / "checkpoint-20" / "model.safetensors",
            "readme": Path("results/README.md"), "table": Path("results/tables/table2.md"),
            "figure": Path("results/tables/figure2.png"), "benchmark": Path("results/bench_methods.json"),
            "scratch": Path("results/scratch/notes.txt")}


COMMITTED = ("result", "readme", "table", "figure")


@pytest.mark.parametrize("kind", ["result", "readme", "table", "figure", "adapter", "predictions",
                                  "result being written", "checkpoint", "benchmark", "scratch"])
def test_results_commits_result_files_and_tables_and_ignores_the_rest(kind):
    if not (REPO / ".git").exists() or shutil.which("git") is None:
        pytest.skip(reason="not a git checkout: its .gitignore rules cannot be asked")
    path = results_paths()[kind]
    assert path.parts[0] == "results"
    check = subprocess.run(["git", "check-ignore", "--no-index", "-q", path.as_posix()], cwd=REPO)
    assert check.returncode == (1 if kind in COMMITTED else 0), f"{kind} {path}: committed is {kind in COMMITTED}"


def test_top_level_layout_of_the_design_card():
    for name in ("pyproject.toml", "dora_bench", "conf", "scripts", "results", "tests", "README.md"):
        assert (REPO / name).exists(), name
    assert (REPO / "results" / "README.md").is_file()
    assert not (REPO / "dora_bench" / "conf").exists()  # one copy of each YAML: conf/ is installed as dora_bench.conf
