"""The honest-comparison views of dora-bench-tables on made-up result files: the edge-of-grid mark (grids and Optuna
spaces), the metric's direction, differences with hand-computed intervals, the cost scatter and its Pareto front, the
CSV export against the markdown, and `dora-bench-status --extend`."""
import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from test_tables import cell, put, render, row, sections

from dora_bench import status
from dora_bench.search_space import space_of
from dora_bench.tables.edges import Edge, next_value
from dora_bench.tables.views.cost import Point, pareto_front


def patch(path, **fields):
    """Change top-level fields of a written result file (a metric's name, a recorded search space)."""
    path.write_text(json.dumps(json.loads(path.read_text()) | fields))
    return path


def grid(root, task, method, budget, rates, scores_by_rate, extra=(), **kwargs):
    """One configuration per learning rate, seeds 1.. with the given scores."""
    for rate, scores in zip(rates, scores_by_rate):
        for seed, score in enumerate(scores, 1):
            put(root, task, method, budget, seed, score, overrides=[f"trainer.learning_rate={rate}", *extra], **kwargs)


# ----- edge of the grid -------------------------------------------------------------------------------------
@pytest.mark.slow
def test_a_grid_marks_a_chosen_value_at_its_edge_and_not_one_inside(tmp_path, capsys):
    grid(tmp_path, "rte", "lora", "small", (1e-3, 1e-2, 1e-1), ((70, 72), (80, 78), (60, 61)))   # best inside
    grid(tmp_path, "mrpc", "lora", "small", (1e-3, 1e-2), ((70, 72), (80, 78)))                  # best at the top
    grid(tmp_path, "cola", "lora", "small", (1e-3,), ((50, 52),))                                # one value: not searched
    grid(tmp_path, "qnli", "lora", "small", (1e-3, 1e-2), ((70, 72), (80, 78)))
    put(tmp_path, "qnli", "lora", "small", 1, status="failed", overrides=["trainer.learning_rate=0.1"])  # tried too
    for rate, batch, score in ((1e-3, 16, 70), (1e-2, 16, 75), (1e-1, 16, 71), (1e-2, 32, 80)):  # 2 keys: batch at edge
        put(tmp_path, "sst2", "lora", "small", 1, score,
            overrides=[f"trainer.learning_rate={rate}", f"trainer.batch_size={batch}"])
    t2 = render(tmp_path, "--sweeps")["table2"]
    assert cell(t2, ("LoRA", "small"), "rte")[0] == "79.00 ± 1.00 (2)"
    assert cell(t2, ("LoRA", "small"), "mrpc")[0] == "79.00 ± 1.00 (2)†"
    assert cell(t2, ("LoRA", "small"), "cola")[0] == "51.00 ± 1.00 (2)"
    assert cell(t2, ("LoRA", "small"), "qnli")[0] == "79.00 ± 1.00 (2)"          # the failed 0.1 brackets it
    assert cell(t2, ("LoRA", "small"), "sst2")[0] == "80.00 ± 0.00 (1)†"
    notes = [line for line in t2.splitlines() if line.startswith("- LoRA small")]
    assert ("- LoRA small · mrpc: trainer.learning_rate=0.01, best mean dev score 79.00 (n=2) of 2 configurations; "
            "† trainer.learning_rate=0.01 is the largest of the 2 values tried (0.001, 0.01)") in notes
    sst2 = next(line for line in notes if "· sst2" in line)
    assert "† trainer.batch_size=32 is the largest of the 2 values tried (16, 32)" in sst2
    assert "trainer.learning_rate=0.01 is" not in sst2                           # 0.01 lies between 0.001 and 0.1
    assert not any("· rte" in line and "†" in line for line in notes)
    assert "†: the chosen value of a searched key is the smallest or largest" in t2
    sweeps = (tmp_path / "tables/sweeps.md").read_text()
    edge_list = sweeps.split("## At the edge of the search")[1]
    assert "LoRA small · mrpc: trainer.learning_rate=0.01 is the largest" in edge_list
    assert "LoRA small · sst2: trainer.batch_size=32 is the largest" in edge_list
    assert "· rte" not in edge_list and "· qnli" not in edge_list and "· cola" not in edge_list
    listed = next(line for line in sweeps.splitlines() if line.startswith("| LoRA | small | mrpc | ✓"))
    assert "| † trainer.learning_rate high |" in listed


@pytest.mark.slow
def test_an_optuna_trial_is_judged_against_its_recorded_search_space(tmp_path):
    space = {"trainer.learning_rate": {"interval": [5e-4, 5e-3], "log": True, "text": "tag(log, interval(5e-4, 5e-3))"},
             "trainer.epochs": {"interval": [10, 80], "log": False, "text": "int(interval(10, 80))"},
             "trainer.batch_size": {"choice": [16, 32, 64], "text": "choice(16, 32, 64)"}}
    trials = {"rte": ((1e-3, 20, 32, 70.0), (4.2e-3, 20, 32, 80.0)),     # best: log position 0.92 -> upper end
              "mrpc": ((1e-3, 20, 32, 70.0), (1.6e-3, 20, 32, 80.0)),    # best is the largest tried, but mid-space
              "stsb": ((1e-3, 75, 32, 80.0), (1e-3, 20, 32, 70.0)),      # epochs 75 of [10, 80]: linear 0.93
              "cola": ((1e-3, 20, 64, 60.0), (1e-3, 20, 32, 50.0))}      # batch 64: the last choice
    for task, runs in trials.items():
        for rate, epochs, batch, score in runs:
            path = put(tmp_path, task, "dora", "small", 1, score, overrides=[
                f"trainer.learning_rate={rate}", f"trainer.epochs={epochs}", f"trainer.batch_size={batch}"])
            patch(path, search_space=space)
    t2 = render(tmp_path)["table2"]
    assert cell(t2, ("DoRA", "small"), "rte")[0].endswith("†")
    assert "trainer.learning_rate=0.0042 is at the upper end of the search space tag(log, interval(5e-4, 5e-3))" in t2
    assert not cell(t2, ("DoRA", "small"), "mrpc")[0].endswith("†")          # a grid rule would have marked it
    assert "trainer.epochs=75 is at the upper end of the search space int(interval(10, 80))" in t2
    assert "trainer.batch_size=64 is at the upper end of the search space choice(16, 32, 64)" in t2
    # the same values without a recorded space follow the grid rule: 1.6e-3 is then the largest value tried
    for path in (tmp_path / "runs").rglob("seed=*.json"):
        patch(path, search_space=None)
    assert cell(render(tmp_path)["table2"], ("DoRA", "small"), "mrpc")[0].endswith("†")


def test_the_search_space_merges_the_command_line_over_the_experiment():
    params = {"trainer.learning_rate": "tag(log, interval(5e-4, 5e-3))", "trainer.batch_size": "choice(16, 32, 64)",
              "trainer.epochs": "int(interval(10, 80))"}
    space = space_of(params, ["task=rte", "trainer.epochs=20", "trainer.learning_rate=tag(log,interval(1e-3,3e-3))",
                              "method.delta_t=range(10,40,10)"])
    assert space == {"trainer.learning_rate": {"interval": [1e-3, 3e-3], "log": True,
                                               "text": "tag(log,interval(1e-3,3e-3))"},
                     "trainer.batch_size": {"choice": [16, 32, 64], "text": "choice(16, 32, 64)"},
                     "method.delta_t": {"choice": [10, 20, 30], "text": "range(10,40,10)"}}


def test_the_next_value_out_keeps_the_grids_ratio():
    assert next_value(Edge("trainer.learning_rate", "high", 3e-3, (5e-4, 3e-3))) == 0.018
    assert next_value(Edge("trainer.learning_rate", "low", 1e-3, (1e-3, 5e-3))) == 2e-4
    assert next_value(Edge("trainer.batch_size", "low", 16, (16, 32, 64))) == 8
    assert next_value(Edge("trainer.epochs", "high", 20, (10, 20))) == 40
    assert next_value(Edge("method.reg_coefficient", "low", 0, (0, 0.3))) is None     # nothing below 0


@pytest.mark.slow
def test_status_extend_prints_the_next_value_and_the_command(tmp_path, capsys):
    grid(tmp_path, "rte", "lora", "small", (1e-3, 1e-2), ((70, 72), (80, 78)))
    grid(tmp_path, "mrpc", "lora", "small", (1e-3, 1e-2, 1e-1), ((70, 72), (80, 78), (60, 60)))
    sweep = ["task=rte,mrpc", "method=lora", "trainer.learning_rate=1e-3,1e-2,1e-1", "seed=1,2",
             f"results_dir={tmp_path}"]
    assert status.main(["--extend", *sweep]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == ("rte lora-small: trainer.learning_rate=0.01 is the largest of the 2 values tried (0.001, 0.01); "
                        "next out: trainer.learning_rate=0.1")
    assert lines[1].split() == ["dora-bench", "-m", "method=lora", f"results_dir={tmp_path}", "task=rte",
                                "trainer.learning_rate=0.1", "seed=1,2"]
    assert lines[-1] == "1 searched value(s) at the edge of their grid in 2 cell(s) with results"


# ----- the metric's direction -------------------------------------------------------------------------------
@pytest.mark.slow
def test_a_lower_is_better_metric_picks_the_lowest_mean_everywhere(tmp_path):
    for rate, scores in (("0.001", (2.0, 2.2, 2.1)), ("0.01", (1.0, 1.2, 1.1)), ("0.1", (3.0, 3.2, 3.1))):
        for seed, score in enumerate(scores, 1):
            epochs = [{"epoch": 1.0, "step": 5, "metrics": {"score": score + 0.5}},   # the best epoch is the lower
                      {"epoch": 2.0, "step": 10, "metrics": {"score": score}}]
            patch(put(tmp_path, "rte", "lora", "small", seed, overrides=[f"trainer.learning_rate={rate}"], epochs=epochs),
                  metric="answer_nll")
    for seed, score in ((1, 0.5), (2, 0.6), (3, 0.5)):
        patch(put(tmp_path, "rte", "dora", "small", seed, score), metric="answer_nll")
    out = render(tmp_path, "--format", "md,csv", "--sweeps")
    t2 = out["table2"]
    assert cell(t2, ("LoRA", "small"), "rte")[0] == "1.10 ± 0.08 (3)"      # 0.01 lies between 0.001 and 0.1: no †
    assert "trainer.learning_rate=0.01, best (lowest) mean dev score 1.10 (n=3) of 3 configurations" in t2
    assert cell(t2, ("DoRA", "small"), "rte")[0] == "0.53 ± 0.05 (3) ▲"    # lower than LoRA: better
    csv = pd.read_csv(tmp_path / "tables/cells.csv")
    lora = csv[(csv.table == "table2") & (csv.key1 == "lora") & (csv.key2 == "small") & (csv.column == "rte")].iloc[0]
    assert lora.value == 1.1 and bool(lora.lower_is_better) and "trainer.learning_rate=0.01" in lora.chosen
    dora = csv[(csv.table == "table2") & (csv.key1 == "dora") & (csv.key2 == "small") & (csv.column == "rte")].iloc[0]
    assert dora.verdict == "better" and dora.difference < 0
    shown = [line for line in out["sweeps"].splitlines() if line.startswith("| LoRA | small | rte |")]
    assert [line.split(" | ")[3:5] for line in shown] == [["✓", "0.01"], ["", "0.001"], ["", "0.1"]]


# ----- differences with their uncertainty -----------------------------------------------------------------
@pytest.mark.slow
def test_the_paired_interval_equals_the_hand_computed_one(tmp_path):
    lora, dora, bitfit = (80.0, 82.0, 84.0), (82.0, 84.0, 87.0), (81.0, 85.0, 86.0)
    for seed in (1, 2, 3):
        put(tmp_path, "rte", "lora", "large", seed, lora[seed - 1])
        put(tmp_path, "rte", "dora", "large", seed, dora[seed - 1])
        put(tmp_path, "rte", "bitfit", None, seed, bitfit[seed - 1])
    out = render(tmp_path, "--format", "md,csv")
    t975 = stats.t.ppf(0.975, 2)
    assert abs(t975 - 4.3027) < 1e-4                                    # the t-table's value at 2 degrees of freedom
    d = np.array(dora) - np.array(lora)                                 # 2, 2, 3
    mean, sd = d.sum() / 3, math.sqrt(((d - d.sum() / 3) ** 2).sum() / 2)
    low, high = mean - t975 * sd / math.sqrt(3), mean + t975 * sd / math.sqrt(3)
    assert low > 0                                                       # 0.90 .. 3.77: excludes 0
    csv = pd.read_csv(tmp_path / "tables/cells.csv")
    got = csv[(csv.table == "table2") & (csv.key1 == "dora") & (csv.key2 == "large") & (csv.column == "rte")].iloc[0]
    assert got.test == "paired" and got.reference == "lora large"
    assert abs(got.difference - mean) < 1e-9
    assert abs(got.difference_low - low) < 1e-9 and abs(got.difference_high - high) < 1e-9
    assert cell(out["table2"], ("DoRA", "large"), "rte")[0] == "84.33 ± 2.05 (3) ▲"
    # BitFit (no budget) against LoRA large: differences 1, 3, 2 -> 2 ± 4.30 / sqrt(3): includes 0, no mark
    assert cell(out["table2"], ("BitFit", "—"), "rte")[0] == "84.00 ± 2.16 (3)"
    compare = out["compare"]
    assert row(compare, "DoRA", "large", "rte")[3:] == ["84.33", "LoRA large", "paired, n=3", f"{mean:+.2f}",
                                                        f"[{low:+.2f}, {high:+.2f}]", "▲ better"]
    half = t975 * 1.0 / math.sqrt(3)
    assert row(compare, "BitFit", "—", "rte")[5:8] == ["paired, n=3", "+2.00", f"[{2 - half:+.2f}, {2 + half:+.2f}]"]


def test_different_seeds_give_welchs_interval(tmp_path):
    for seed, score in zip((1, 2, 3), (80.0, 82.0, 84.0)):
        put(tmp_path, "mrpc", "lora", "small", seed, score)
    for seed, score in zip((1, 2, 4, 5), (85.0, 86.0, 90.0, 88.0)):
        put(tmp_path, "mrpc", "dora", "small", seed, score)
    render(tmp_path, "--format", "csv")
    a, b = np.array([85.0, 86.0, 90.0, 88.0]), np.array([80.0, 82.0, 84.0])
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))   # Welch-Satterthwaite
    half = stats.t.ppf(0.975, df) * math.sqrt(va + vb)
    got = pd.read_csv(tmp_path / "tables/cells.csv").query(
        "table == 'table2' and key1 == 'dora' and key2 == 'small' and column == 'mrpc'")
    got = got.iloc[0]
    assert got.test == "Welch" and abs(got.difference - (a.mean() - b.mean())) < 1e-9
    assert abs(got.difference_low - (a.mean() - b.mean() - half)) < 1e-9
    assert abs(got.difference_high - (a.mean() - b.mean() + half)) < 1e-9


@pytest.mark.slow
def test_the_comparison_view_lists_every_cell_against_the_reference(tmp_path, capsys):
    cells = [("rte", "lora", "small"), ("rte", "lora", "large"), ("rte", "dora", "small"), ("rte", "full_ft", None),
             ("mrpc", "lora", "small"), ("mrpc", "h_adapter", "large"), ("mrpc", "bitfit", None), ("cola", "dora", "large")]
    for i, (task, method, budget) in enumerate(cells):
        for seed in (1, 2):
            put(tmp_path, task, method, budget, seed, 70.0 + i + seed)
    out = render(tmp_path, "--compare", "lora")
    assert "# Differences to LoRA" in capsys.readouterr().out                   # asked for by name: printed
    compare = next(part for part in out["compare"].split("\n## ") if part.startswith("Table 2"))
    listed = {(r[0], r[1], r[2]): r[4] for r in (line.strip("|").split("|") for line in compare.splitlines()
                                                  if line.startswith("| ") and not line.startswith("| Method"))
              for r in [[c.strip() for c in r]]}
    label = {"lora": "LoRA", "dora": "DoRA", "full_ft": "Full FT", "h_adapter": "H-Adapter", "bitfit": "BitFit"}
    assert set(listed) == {(label[m], b or "—", t) for t, m, b in cells}         # every cell with results, once
    assert listed["LoRA", "small", "rte"] == listed["LoRA", "large", "rte"] == "(reference)"
    assert listed["DoRA", "small", "rte"] == "LoRA small"                        # the same budget
    assert listed["Full FT", "—", "rte"] == "LoRA large"                         # budget-free: the large one
    assert listed["H-Adapter", "large", "mrpc"] == "LoRA small"                  # LoRA has only small there
    assert listed["BitFit", "—", "mrpc"] == "LoRA small"
    assert listed["DoRA", "large", "cola"] == "no LoRA cell"
    assert render(tmp_path, "--compare", "dora")["compare"].startswith("# Differences to DoRA")
    assert (tmp_path / "tables").is_dir()


def test_an_unknown_reference_is_refused_in_one_line(tmp_path, capsys):
    put(tmp_path, "rte", "lora", "small", 1, 70.0)
    from dora_bench import tables

    assert tables.main(["--results", str(tmp_path), "--compare", "lorra"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["dora-bench-tables: error: --compare lorra: no results of that method; the results hold: lora "
                   "(or 'none')"]
    with pytest.raises(SystemExit) as exit_info:
        tables.main(["--results", str(tmp_path), "--format", "md,xlsx"])
    assert exit_info.value.code == 2
    assert "'xlsx' is not a format; allowed: md, csv, json" in capsys.readouterr().err


# ----- cost against accuracy --------------------------------------------------------------------------------
@pytest.mark.slow
def test_cost_scatter_per_section_and_task_with_its_pareto_front(tmp_path):
    points = {("bitfit", None): (100_000, 70.0, 0.10), ("lora", "small"): (331_776, 75.0, 0.20),
              ("lora", "large"): (1_327_104, 74.0, 0.30), ("full_ft", None): (124_645_632, 80.0, 0.50)}
    for (method, budget), (params, score, step) in points.items():
        for seed in (1, 2):
            put(tmp_path, "rte", method, budget, seed, score + seed - 1.5, params=params,
                timing={"train_runtime_s": 60.0, "peak_memory_mb": 1000.0 + params / 1e5, "step_time_median_s": step,
                        "peak_memory_scope": "run"})
    put(tmp_path, "rte", "lora", "small", 1, 60.0, params=1, overrides=["data.max_train_samples=32"])  # 2nd section
    # A CPU result with only its process's lifetime peak (written before peaks were reset per run) has no memory point
    put(tmp_path, "rte", "dora", "small", 1, 71.0, timing={"peak_memory_mb": 5000.0, "step_time_median_s": 0.2})
    out = render(tmp_path)
    cost = out["cost"]
    found = sections(cost)
    assert set(found) == {"Table 2: GLUE dev (paper: RoBERTa-base) — model: roberta_base — rte",
                          "Table 2: GLUE dev (paper: RoBERTa-base) — model: roberta_base — data.max_train_samples=32 — rte"}
    main = found["Table 2: GLUE dev (paper: RoBERTa-base) — model: roberta_base — rte"]
    assert "(cost-table2-1-rte.png)" in main
    for number in (1, 2):
        png = tmp_path / f"tables/cost-table2-{number}-rte.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    assert row(main, "LoRA", "large")[2:] == ["74.00 ± 0.50 (2)", "1.33M", "1013", "0.300", "—"]   # dominated
    assert row(main, "BitFit", "—")[-1] == "params, memory, step"
    assert row(main, "LoRA", "small")[-1] == "params, memory, step"
    assert row(main, "Full FT", "—")[-1] == "params, memory, step"
    assert row(main, "DoRA", "small")[4] == "—"
    assert "cost.md" in out["table2"]


def test_the_pareto_front_follows_the_metric_direction():
    def point(cost, score):
        return Point((f"m{cost}",), "", score, 0.0, None, {"params": cost})
    pts = [point(1, 5.0), point(2, 3.0), point(3, 4.0), point(4, 1.0), point(4, 2.0)]
    assert [p.costs["params"] for p in pareto_front(pts, "params", lower_better=True)] == [1, 2, 4]
    assert [p.score for p in pareto_front(pts, "params", lower_better=True)] == [5.0, 3.0, 1.0]
    assert [p.score for p in pareto_front(pts, "params", lower_better=False)] == [5.0]


# ----- machine-readable cells --------------------------------------------------------------------------------
@pytest.mark.slow
def test_the_csv_holds_the_numbers_of_the_markdown(tmp_path):
    for seed, score in zip((1, 2, 3), (78.0, 80.0, 83.0)):
        put(tmp_path, "rte", "lora", "small", seed, score)
        put(tmp_path, "rte", "dora", "small", seed, score + 3 + seed / 10)
    grid(tmp_path, "mrpc", "lora", "small", (1e-3, 1e-2), ((70, 72), (80, 78)))
    put(tmp_path, "mrpc", "dora", "small", 1, status="failed")
    put(tmp_path, "cola", "dora", "large", 1, 60.0, tag="-noDEM", method_cfg={"reg_coefficient": 0.0})
    for i, task in enumerate(("rte", "mrpc", "stsb", "cola", "sst2", "qnli", "qqp", "mnli")):
        put(tmp_path, task, "full_ft", None, 1, 80.0 + i, params=124_645_632)
    out = render(tmp_path, "--format", "md,csv,json")
    csv = pd.read_csv(tmp_path / "tables/cells.csv", keep_default_na=False, na_values=[""])
    as_json = pd.read_json(tmp_path / "tables/cells.json")
    assert list(as_json.columns) == list(csv.columns) and len(as_json) == len(csv)
    assert np.allclose(as_json.value.astype(float), csv.value.astype(float), equal_nan=True)
    labels = {"lora": "LoRA", "dora": "DoRA", "full_ft": "Full FT", "with_dem": "with DEM", "without_dem": "without DEM"}
    checked = 0
    for record in csv.itertuples():
        text = out[record.table]
        if record.table == "table9":
            continue   # ratios and measurements: covered by test_tables
        labels_of_row = (labels.get(record.key1, str(record.key1)),
                         "—" if not isinstance(record.key2, str) else record.key2)
        found = [line for line in sections(text)[record.section].splitlines()
                 if line.startswith("| " + " | ".join(labels_of_row) + " |")]
        if not found:
            continue   # a paper-only row of another section's key layout
        shown, paper = cell(sections(text)[record.section], labels_of_row, record.column)
        if record.kind == "avg":
            assert shown == ("—" if math.isnan(record.value) else f"{record.value:.2f}")
        elif record.n == 0:
            assert shown in ("—", f"failed ({int(record.failed)})")
        else:
            expected = f"{record.value:.2f} ± {record.std:.2f} ({int(record.n)}" + (
                f", {int(record.failed)} failed)" if record.failed else ")")
            expected += "†" if isinstance(record.edge, str) else ""
            expected += {"better": " ▲", "worse": " ▼"}.get(record.verdict, "")
            assert shown == expected, (record, shown)
            checked += 1
        if not math.isnan(record.paper):
            assert paper.startswith(f"{record.paper:.2f}")
    assert checked >= 12
    assert set(csv.table) == {"table2", "table5", "table6", "table9"}                   # the tables with results
    assert csv.query("table == 'table2' and key1 == 'full_ft' and kind == 'avg'").value.iloc[0] == 83.5
    assert row(out["table9"], "Full FT", "—")[2:5] == ["1.00 ± 0.00 (1)", "10.30 (-9.30)", "—"]   # no LoRA: no ratio
