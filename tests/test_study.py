"""The committed CPU study (results/, README): its tables are what `dora-bench-tables` renders from its result
files, the README quotes them, and one of its seeds trains again to the same per-epoch scores."""
import re
import subprocess
from pathlib import Path

import pytest
from helpers import run_cli

from dora_bench import tables
from dora_bench.results import compose_config, locate, read_result

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "results"
TABLES_ARGS = ("--sweeps",)   # results/README.md: `dora-bench-tables --sweeps`
# The seed re-run (README "Reproducing a committed run"): the study's fastest run, at the experiment's own rate.
REPRODUCED = ("+experiment=cpu_glue", "method=bitfit", "seed=1")
README_BLOCK = re.compile(r"<!-- cpu-study -->\n(.*?)<!-- /cpu-study -->", re.S)


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
             if not re.fullmatch(r"results/(README\.md|tables/[^/]+\.(md|png)|runs/.+/seed=\d+\.json)", p)]
    assert not extra, extra


def test_dora_bench_tables_reproduces_the_committed_markdown_byte_for_byte(tmp_path):
    assert tables.main(["--results", str(RESULTS), "--out", str(tmp_path), *TABLES_ARGS]) == 0
    committed = sorted(p.name for p in (RESULTS / "tables").glob("*.md"))
    assert committed == sorted(p.name for p in tmp_path.glob("*.md"))
    for name in committed:
        assert (tmp_path / name).read_bytes() == (RESULTS / "tables" / name).read_bytes(), name
    assert (RESULTS / "tables" / "figure2.png").stat().st_size > 0


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


def test_a_committed_seed_trains_again_to_its_scores(tmp_path, real_data, cache_dir, monkeypatch):
    """On the machine type that made the study, a CPU run with a fixed seed is deterministic."""
    data = real_data("glue/stsb/train.tsv").parents[2]
    monkeypatch.setenv("DORA_BENCH_DATA", str(data))
    committed = locate(compose_config([*REPRODUCED, f"results_dir={RESULTS}"]), 1)
    expected = read_result(committed.result)
    assert expected.fingerprint == committed.fingerprint        # the same configuration, data and seed
    out = run_cli(*REPRODUCED, cwd=tmp_path, env={"DORA_BENCH_DATA": str(data)})
    assert out.returncode == 0, out.stderr[-3000:]
    again = read_result(next((tmp_path / "results/runs").rglob("seed=1.json")))
    assert again.fingerprint == expected.fingerprint
    rounded = lambda result: [{k: round(v, 2) for k, v in e.metrics.items()} for e in result.epochs]  # noqa: E731
    assert rounded(again) == rounded(expected)
