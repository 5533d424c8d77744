"""The committed decoder study (+experiment=llm_cpu; results/README.md): every run of its sweep is committed and found
done by today's code, every method learns (its mean validation answer NLL below the zero-shot base model's by more
than twice its std), no method's rate sits at the edge of its search, and the README quotes the committed table.
That `dora-bench-tables` renders the committed decoder.md byte for byte is test_study.py's (every table)."""
import re
from pathlib import Path

import pytest
from test_study import RESULTS, cells_by_row

from dora_bench.results import locate

REPO = Path(__file__).resolve().parents[1]
DECODER = RESULTS / "tables" / "decoder.md"
README_BLOCK = re.compile(r"<!-- llm-study -->\n(.*?)<!-- /llm-study -->", re.S)
CELL = re.compile(r"^(?P<mean>-?[\d.]+) ± (?P<std>[\d.]+) \((?P<n>\d+)\)(?P<marks>.*)$")
METHODS = {"Full FT", "H-Adapter", "P-Adapter", "LoRA", "AdaLoRA", "DoRA"}


def parsed(cell: str) -> tuple[float, float, int, str]:
    found = CELL.match(cell)
    assert found, cell
    return float(found["mean"]), float(found["std"]), int(found["n"]), found["marks"]


@pytest.mark.slow
def test_every_run_of_the_decoder_study_is_committed_and_found_done(real_data, monkeypatch):
    from hydra import initialize_config_module

    from dora_bench.status import expected_runs

    monkeypatch.setenv("DORA_BENCH_DATA", str(real_data("gsm8k/train.jsonl").parents[1]))
    with initialize_config_module("dora_bench.conf", version_base="1.3"):
        expected = expected_runs(["+experiment=llm_cpu", f"results_dir={RESULTS}"])
    missing = [(job, seed) for job, cfg, seed in expected if locate(cfg, seed).existing() is None]
    trained = {(cfg.method.name, seed) for _, cfg, seed in expected if cfg.method.name != "none"}
    assert {name for name, _ in trained} == {"full_ft", "h_adapter", "p_adapter", "lora", "adalora", "dora"}
    assert {seed for _, seed in trained} == {1, 2, 3} and not missing, missing[:3]


def test_every_method_learns_over_three_seeds_and_no_rate_sits_at_the_edge_of_its_search():
    rows = cells_by_row(DECODER.read_text())
    base_nll, _, base_n, _ = parsed(rows[("Base model", "—")]["val NLL"][0])
    assert base_n >= 1
    methods = {method for method, _ in rows if method != "Base model"}
    assert methods == METHODS, methods
    for (method, _), columns in rows.items():
        if method == "Base model":
            continue
        mean, std, n, marks = parsed(columns["val NLL"][0])
        assert n == 3 and mean + 2 * std < base_nll, (method, mean, std, base_nll)
        assert "†" not in marks, (method, columns["val NLL"][0])                 # each pick is bracketed


def test_the_readme_quotes_the_committed_decoder_table():
    quoted = cells_by_row(README_BLOCK.search((REPO / "README.md").read_text()).group(1))
    committed = cells_by_row(DECODER.read_text())
    assert set(quoted) == set(committed)
    for key, columns in quoted.items():
        for column, (cell,) in columns.items():
            assert committed[key][column] == [cell], (key, column, cell)
