"""The committed CPU study (results/, README): its tables are what `dora-bench-tables` renders from its result
files, the README quotes them, and one of its seeds trains again to the same per-epoch scores."""
import importlib.util
import re
import subprocess
from pathlib import Path

import pytest
import torch
from helpers import run_cli

from dora_bench import tables
from dora_bench.results import compose_config, locate, read_result
from dora_bench.run import environment
from dora_bench.tables.catalog.paper import GLUE

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "rerun_seed.py"
_spec = importlib.util.spec_from_file_location("rerun_seed", SCRIPT)
rerun_seed = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(rerun_seed)     # the comparison scripts/rerun_seed.py makes for any committed seed

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "results"
TABLES_ARGS = ("--sweeps", "--format", "md,csv")   # results/README.md: `dora-bench-tables --sweeps --format md,csv`
# The seed re-run: README's first run (without its data and results folders), one committed seed of the study.
REPRODUCED = ("+experiment=cpu_glue", "method=dora", "trainer.learning_rate=6e-3", "seed=1")
README_BLOCK = re.compile(r"<!-- cpu-study -->\n(.*?)<!-- /cpu-study -->", re.S)
FIRST_RUN = re.compile(r"<!-- first-run -->\n(.*?)<!-- /first-run -->", re.S)


def study_runs():
    return sorted((RESULTS / "runs" / "minilm").rglob("seed=*.json"))


def test_the_study_is_committed_in_the_result_format():
    runs = study_runs()
    assert len(runs) >= 2 * 7 * 3, len(runs)          # two tasks, seven methods, three seeds (and a rate pair)
    for path in runs:
        result = read_result(path)
        assert result.complete and result.model == "minilm", path
    tracked = subprocess.run(["git", "ls-files", "results"], cwd=REPO, capture_output=True, text=True)
    if tracked.returncode != 0:
        pytest.skip(reason="not a git checkout: which files are committed cannot be told")
    extra = [p for p in tracked.stdout.splitlines()           # no checkpoints, adapters, predictions or logs
             if not re.fullmatch(r"results/(README\.md|tables/[^/]+\.(md|png|csv)|runs/.+/seed=\d+\.json)", p)]
    assert not extra, extra


@pytest.mark.slow
def test_every_run_of_the_study_is_found_done_by_todays_code(real_data, monkeypatch):
    """The study command skips every committed seed: a config key added since (at the value that does what the code
    did before it existed) must not move a committed result's identity, or the study would silently retrain."""
    from hydra import initialize_config_module

    from dora_bench.status import expected_runs

    monkeypatch.setenv("DORA_BENCH_DATA", str(real_data("glue/stsb/train.tsv").parents[2]))
    with initialize_config_module("dora_bench.conf", version_base="1.3"):
        expected = expected_runs(["+experiment=cpu_glue", f"results_dir={RESULTS}"])
    missing = [(job, seed) for job, cfg, seed in expected if locate(cfg, seed).existing() is None]
    assert len(expected) >= 2 * 7 * 2 * 3 and not missing, missing[:3]


@pytest.mark.slow
def test_dora_bench_tables_reproduces_the_committed_markdown_byte_for_byte(tmp_path):
    assert tables.main(["--results", str(RESULTS), "--out", str(tmp_path), *TABLES_ARGS]) == 0
    committed = sorted(p.name for p in (RESULTS / "tables").iterdir() if p.suffix in (".md", ".csv"))
    assert committed == sorted(p.name for p in tmp_path.iterdir() if p.suffix in (".md", ".csv"))
    for name in committed:
        assert (tmp_path / name).read_bytes() == (RESULTS / "tables" / name).read_bytes(), name
    pictures = sorted(p.name for p in tmp_path.glob("*.png"))
    assert pictures == sorted(p.name for p in (RESULTS / "tables").glob("*.png"))   # the same pictures, re-rendered
    assert all((RESULTS / "tables" / name).stat().st_size > 0 for name in pictures)


def test_every_committed_study_section_has_its_cost_scatter():
    """One PNG per table section and task with results, linked from cost.md (PNG bytes differ with matplotlib's
    version, so they are compared by name, not content)."""
    table2 = (RESULTS / "tables" / "table2.md").read_text()
    cost = (RESULTS / "tables" / "cost.md").read_text()
    sections = table2.split("\n## ")[1:]
    assert sections
    for number, section in enumerate(sections, 1):
        columns = cells_by_row(section).values()
        tasks = {task for row in columns for task, cells in row.items() if task in GLUE and cells != ["—"]}
        assert tasks, section[:200]
        for task in tasks:
            name = f"cost-table2-{number}-{task}.png"
            assert f"]({name})" in cost and (RESULTS / "tables" / name).stat().st_size > 10_000, name


def cells_by_row(markdown: str) -> dict[tuple[str, str], dict[str, list[str]]]:
    """{(method, budget): {column: [cell per table section]}} of a markdown document's tables."""
    out: dict[tuple[str, str], dict[str, list[str]]] = {}
    header: list[str] = []
    for line in markdown.splitlines():
        if not line.startswith("|") or line.startswith("|---"):
            header = header if line.startswith("|---") else []
            continue
        cells = [c.strip() for c in line.strip("|").split("|")]
        if not header:
            header = cells
            continue
        row = out.setdefault((cells[0], cells[1]), {})
        for column, cell in zip(header, cells):
            row.setdefault(column, []).append(cell)
    return out


def test_the_readme_quotes_the_committed_table():
    quoted = cells_by_row(README_BLOCK.search((REPO / "README.md").read_text()).group(1))
    committed = cells_by_row((RESULTS / "tables" / "table2.md").read_text())
    assert len(quoted) == 7
    for key, columns in quoted.items():
        for column, (cell,) in columns.items():
            found = {c for c in committed[key][column] if c != "—"} or {"—"}
            assert found == {cell}, (key, column, cell, found)


def test_the_readmes_first_run_is_a_committed_seed_and_quotes_its_numbers(real_data, monkeypatch):
    """The first run README shows is REPRODUCED (re-run below), and every figure it quotes is its committed result's."""
    block = FIRST_RUN.search((REPO / "README.md").read_text()).group(1)
    command = re.search(r"^dora-bench (.*)$", block, re.M).group(1).split()
    assert [o for o in command if not o.startswith(("data.dir=", "results_dir="))] == list(REPRODUCED)
    monkeypatch.setenv("DORA_BENCH_DATA", str(real_data("glue/stsb/train.tsv").parents[2]))
    result = locate(compose_config([*REPRODUCED, f"results_dir={RESULTS}"]), 1).existing()
    assert result is not None                                          # committed, by this very configuration
    prose = " ".join(block.split())
    pearson = [f"{e.metrics['pearson']:.1f}" for e in result.epochs]
    assert f"Dev Pearson {pearson[0]} after the first epoch and {pearson[1]} after the second" in prose
    assert f"({result.train.optimizer_steps} optimizer steps" in prose
    assert f"{result.train.train_samples:,} training pairs for {len(result.epochs)} epochs" in prose
    assert f"The run took {result.timing.wall_s:.0f} s" in prose


@pytest.mark.slow
def test_a_committed_seed_trains_again_to_its_scores(tmp_path, real_data, cache_dir, monkeypatch):
    """On the CPU model that made the study, with as many threads, a CPU run with a fixed seed is deterministic:
    every epoch's metrics equal to 2 decimals. On another CPU model or thread count, or against a result that does
    not record its CPU, within scripts/rerun_seed.py's CROSS_CPU_TOLERANCE (its basis is beside it)."""
    data = real_data("glue/stsb/train.tsv").parents[2]
    monkeypatch.setenv("DORA_BENCH_DATA", str(data))
    committed = locate(compose_config([*REPRODUCED, f"results_dir={RESULTS}"]), 1)
    expected = read_result(committed.result)
    assert expected.fingerprint == committed.fingerprint        # the same configuration, data and seed
    threads = expected.env.get("threads")     # as many as the committed run: the exact comparison needs them
    out = run_cli(*REPRODUCED, cwd=tmp_path, env={"DORA_BENCH_DATA": str(data),
                                                   **({"OMP_NUM_THREADS": str(threads)} if threads else {})})
    assert out.returncode == 0, out.stderr[-3000:]
    again = read_result(next((tmp_path / "results/runs").rglob("seed=1.json")))
    assert again.fingerprint == expected.fingerprint
    exact = rerun_seed.same_machine(again, expected)                 # threads too: they set the summation order
    assert rerun_seed.differences(again, expected, 2, rerun_seed.CROSS_CPU_TOLERANCE, exact) == []


def test_each_result_records_the_cpu_model_and_gpu():
    """What the exact comparison above keys on: /proc/cpuinfo's model name, vendor, family and model (read here
    independently), and the GPU's name where there is one."""
    env = environment()
    assert env["gpu"] == (torch.cuda.get_device_name() if torch.cuda.is_available() else None)
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.exists():
        assert env["cpu"]["model_name"]
        return
    first = cpuinfo.read_text().split("\n\n")[0]
    fields = dict(re.findall(r"^(model name|vendor_id|cpu family|model)\s*:\s*(.*)$", first, re.M))
    assert env["cpu"]["model_name"] == fields["model name"] and env["cpu"]["vendor"] == fields["vendor_id"]
    assert env["cpu"]["family"] == fields["cpu family"] and env["cpu"]["model"] == fields["model"]
