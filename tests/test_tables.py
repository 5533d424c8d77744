"""dora-bench-tables on synthetic result files written here: cells, paper column, gaps, bad files, Figure 2."""
import json
import subprocess
import sys

import pytest
from helpers import write_result_file

from dora_bench import tables
from dora_bench.tables.catalog.paper import GLUE
from dora_bench.tables.views.figure2 import matrix_of

LORA_R2 = 331_776  # LoRA r=2 on RoBERTa-base's 72 matrices: the paper's 0.33M


def put(root, task, method, budget=None, seed=1, score=80.0, *, method_cfg=None, params=LORA_R2, **fields):
    """One result file through the shared factory; `method_cfg` as method.<key>=<value> overrides."""
    overrides = [f"method.{k}={'null' if v is None else v}" for k, v in (method_cfg or {}).items()]
    return write_result_file(root, task, method, budget, seed, score, params=params,
                             overrides=[*overrides, *fields.pop("overrides", ())], **fields)


def render(root, *args):
    assert tables.main(["--results", str(root), *args]) == 0
    return {p.stem: p.read_text() for p in (root / "tables").glob("*.md")}


def row(text, *labels):
    """The markdown row whose first cells are `labels`, split into cells."""
    prefix = "| " + " | ".join(labels) + " |"
    matches = [line for line in text.splitlines() if line.startswith(prefix)]
    assert len(matches) == 1, (prefix, text)
    return [c.strip() for c in matches[0].strip("|").split("|")]


def cell(text, labels, column):
    header = next(line for line in text.splitlines() if line.startswith("| Method") or line.startswith("| Variant")
                  or line.startswith("| Final budget"))
    names = [c.strip() for c in header.strip("|").split("|")]
    return row(text, *labels)[names.index(column)], row(text, *labels)[names.index(column) + 1]


@pytest.mark.slow
def test_table2_cells_paper_column_gaps_and_failed_seeds(tmp_path):
    for seed, score in zip((1, 2, 3), (78.0, 80.0, 82.0)):
        put(tmp_path, "rte", "lora", "small", seed, score)
    put(tmp_path, "rte", "lora", "small", 4, status="failed")
    put(tmp_path, "mrpc", "dora", "small", 1, status="failed")
    for i, task in enumerate(GLUE):
        put(tmp_path, task, "full_ft", None, 1, 80.0 + i, params=124_645_632)
    t2 = render(tmp_path)["table2"]

    assert cell(t2, ("LoRA", "small"), "rte") == ("80.00 ± 1.63 (3, 1 failed)", "78.63 (+1.37)")
    assert cell(t2, ("LoRA", "small"), "mrpc") == ("—", "88.68")             # missing: never invented
    assert row(t2, "LoRA", "small")[2:4] == ["0.33M", "0.33M"]             # params computed vs paper's
    assert cell(t2, ("DoRA", "small"), "mrpc")[0] == "failed (1)"
    assert row(t2, "LoRA", "small")[-2:] == ["—", "85.50"]                 # avg needs all eight tasks
    full = row(t2, "Full FT", "—")
    assert full[2] == "124.65M" and full[-2:] == ["83.50", "85.41 (-1.91)"]  # mean of 80..87
    assert cell(t2, ("DoRA", "large"), "sst2") == ("—", "95.21")            # paper-only rows stay
    assert "mean ± std (ddof=0)" in t2 and "best dev epoch" in t2


def test_aggregation_options_change_cells_and_footnote(tmp_path):
    for seed, score, last in ((1, 70.0, 60.0), (2, 71.0, 61.0), (3, 90.0, 62.0)):
        epochs = [{"epoch": 1.0, "step": 5, "metrics": {"score": score}},
                  {"epoch": 2.0, "step": 10, "metrics": {"score": last}}]
        put(tmp_path, "cola", "lora", "large", seed, score, epochs=epochs)
    t2 = render(tmp_path, "--agg", "median", "--ddof", "1", "--select", "last")["table2"]
    assert cell(t2, ("LoRA", "large"), "cola")[0] == "61.00 ± 1.00 (3)"
    assert "median ± std (ddof=1)" in t2 and "the last evaluated epoch" in t2
    best = render(tmp_path, "--agg", "median")["table2"]
    assert cell(best, ("LoRA", "large"), "cola")[0] == "71.00 ± 9.20 (3)"


def test_corrupt_and_incomplete_files_are_reported_and_the_rest_rendered(tmp_path, capsys):
    put(tmp_path, "rte", "lora", "small", 1, 75.0)
    bad = tmp_path / "runs/roberta_base/rte/dora-small/seed=1.json"
    bad.parent.mkdir(parents=True)
    bad.write_text('{"schema": 1, "status": "compl')                      # cut off mid-write
    other = put(tmp_path, "rte", "bitfit", None, 1, 70.0)
    other.write_text('{"hello": "world"}')
    no_epochs = put(tmp_path, "stsb", "lora", "small", 1, 88.0)
    no_epochs.write_text(json.dumps(json.loads(no_epochs.read_text()) | {"epochs": []}))
    out = render(tmp_path)
    t2 = out["table2"]
    assert cell(t2, ("LoRA", "small"), "rte")[0] == "75.00 ± 0.00 (1)"
    assert f"- {bad}: " in t2 and "unreadable" in t2 and f"- {other}: " in t2 and "not a dora-bench result" in t2
    assert f"skipped {no_epochs}: no evaluated epochs" in t2
    assert cell(t2, ("LoRA", "small"), "stsb")[0] == "—"
    assert str(bad) not in out["table4"]                                    # an rte file is no XSum table's business
    assert str(bad) in capsys.readouterr().err


@pytest.mark.slow
def test_squad_accepts_exact_and_exact_match_and_xsum_rouge(tmp_path):
    put(tmp_path, "squad_v1", "lora", "large", metrics={"exact_match": 85.0, "f1": 91.0})
    put(tmp_path, "squad_v2", "lora", "large", metrics={"exact": 79.0, "f1": 82.0})
    put(tmp_path, "xsum", "dora", "small", model="bart_base", metrics={"rouge1": 39.0, "rouge2": 16.0, "rougeL": 31.0})
    out = render(tmp_path)
    assert cell(out["table3"], ("LoRA", "large"), "squad_v1 EM") == ("85.00 ± 0.00 (1)", "85.13 (-0.13)")
    assert cell(out["table3"], ("LoRA", "large"), "squad_v2 EM") == ("79.00 ± 0.00 (1)", "79.25 (-0.25)")
    assert cell(out["table3"], ("LoRA", "large"), "squad_v2 F1")[0] == "82.00 ± 0.00 (1)"
    assert "## model: bart_base" in out["table4"] and "## model: roberta_base" not in out["table4"]
    assert cell(out["table4"], ("DoRA", "small"), "rougeL") == ("31.00 ± 0.00 (1)", "31.36 (-0.36)")


def test_dem_rows_come_from_the_config_not_the_tag(tmp_path):
    put(tmp_path, "cola", "dora", "large", 1, 65.0, method_cfg={"reg_coefficient": 0.3})
    put(tmp_path, "cola", "dora", "large", 1, 60.0, tag="-noDEM", method_cfg={"reg_coefficient": 0.0})
    put(tmp_path, "cola", "dora", "large", 2, 61.0, tag="-x", method_cfg={"reg_coefficient": 0})  # method.* layout
    out = render(tmp_path)
    assert cell(out["table5"], ("with DEM", "large"), "cola") == ("65.00 ± 0.00 (1)", "65.35 (-0.35)")
    assert cell(out["table5"], ("without DEM", "large"), "cola") == ("60.50 ± 0.50 (2)", "64.17 (-3.67)")
    assert cell(out["table2"], ("DoRA", "large"), "cola")[0] == "65.00 ± 0.00 (1)"  # no-DEM runs stay out


def test_initial_budget_rows_default_to_one_and_a_half_times_final(tmp_path):
    for init in (2, 4):
        put(tmp_path, "mrpc", "dora", "small", 1, 80.0 + init, tag=f"-init{init}",
            method_cfg={"initial_budget": init})
    put(tmp_path, "mrpc", "dora", "small", 1, 83.0, method_cfg={"initial_budget": None})   # Table 2 run
    put(tmp_path, "mrpc", "dora", "small", 1, 99.0, tag="-init3", method_cfg={"initial_budget": 3})
    t6 = render(tmp_path)["table6"]
    assert cell(t6, ("2", "2"), "mrpc") == ("82.00 ± 0.00 (1)", "76.32 (+5.68)")
    assert cell(t6, ("2", "3"), "mrpc")[0] == "83.00 ± 0.00 (1)"             # untagged file wins the seed
    assert "ignored 1 file(s) repeating a seed" in t6 and "dora-small-init3" in t6
    assert cell(t6, ("2", "8"), "mrpc") == ("—", "90.17")
    t2 = render(tmp_path)["table2"]
    assert cell(t2, ("DoRA", "small"), "mrpc")[0] == "83.00 ± 0.00 (1)"      # init 2/4 runs stay out


def test_efficiency_minutes_per_epoch_memory_and_ratios_to_lora(tmp_path):
    epochs = [{"epoch": 1.0, "step": 5, "metrics": {"score": 80}}, {"epoch": 2.0, "step": 10, "metrics": {"score": 80}}]
    dora_timing = {"train_runtime_s": 330.0, "peak_memory_mb": 4400.0}
    put(tmp_path, "qnli", "lora", "large", 1, timing={"train_runtime_s": 600.0, "peak_memory_mb": 4000.0}, epochs=epochs)
    put(tmp_path, "qnli", "dora", "large", 1, tag="-epoch1", timing=dora_timing)
    put(tmp_path, "qnli", "dora", "large", 2, tag="-epoch1", timing=dora_timing, train={"resumed_from": "checkpoint-5"})
    out = render(tmp_path)
    t9 = out["table9"]
    lora, dora = row(t9, "LoRA", "large"), row(t9, "DoRA", "large")
    assert lora[2:4] == ["5.00 ± 0.00 (1)", "7.20 (-2.20)"] and lora[4] == "1.00"
    assert dora[2:8] == ["5.50 ± 0.00 (1)", "7.80 (-2.30)", "1.10", "1.08 (+0.02)", "4400 ± 0 (1)", "4112 (+288)"]
    assert dora[8] == "1.10"
    assert row(t9, "Full FT")[2:4] == ["—", "10.30"]                       # paper-only row
    assert "resumed run" in t9
    assert cell(out["table2"], ("DoRA", "large"), "qnli")[0] == "—"          # tagged 1-epoch runs: not Table 2's
    assert cell(out["table2"], ("LoRA", "large"), "qnli")[0] == "80.00 ± 0.00 (1)"


@pytest.mark.slow
def test_figure2_heatmap_from_rank_patterns(tmp_path):
    def pattern(q, f2):  # RoBERTa-style names as DoRA stores them; AdaLoRA stores boolean masks
        names = {}
        for layer in range(2):
            prefix = f"roberta.encoder.layer.{layer}."
            names |= {prefix + "attention.self.query": q + layer, prefix + "attention.self.key": 1,
                      prefix + "attention.self.value": 1, prefix + "attention.output.dense": 2,
                      prefix + "intermediate.dense": 3, prefix + "output.dense": f2}
        return names
    for seed, q in ((1, 2), (2, 4)):
        put(tmp_path, "sst2", "dora", "small", seed, method_summary={"rank_pattern": pattern(q, 0)})
        put(tmp_path, "sst2", "dora", "b16", seed, method_summary={"rank_pattern": pattern(q + 10, 5)})
    put(tmp_path, "sst2", "adalora", "small", 1, method_summary={"rank_pattern": {
        "base_model.model.roberta.encoder.layer.0.output.dense": [True, False, True], "classifier.dense": 3}})
    put(tmp_path, "cola", "dora", "small", 1, method_summary={"rank_pattern": pattern(9, 9)})  # not SST-2: unused
    render(tmp_path)
    png = tmp_path / "tables/figure2.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    md = (tmp_path / "tables/figure2.md").read_text()
    assert "## DoRA, final budget 2: sst2, roberta_base, seeds [1, 2]" in md
    assert "| Wq | 3.0 | 4.0 | 7.0 |" in md and "| Wf2 | 0.0 | 0.0 | 0.0 |" in md  # mean over seeds, per layer
    assert "## DoRA, final budget 16" in md and "| Wq | 13.0 | 14.0 | 27.0 |" in md
    assert "| Wf2 | 2.0 |" in md and "classifier.dense" in md and "9.0" not in md


def test_figure2_falls_back_to_other_tasks_and_maps_bart_names(tmp_path):
    assert matrix_of("model.encoder.layers.3.self_attn.k_proj") == ("enc Wk", 3)
    assert matrix_of("model.decoder.layers.0.encoder_attn.out_proj") == ("cross Wo", 0)
    assert matrix_of("model.decoder.layers.5.fc2") == ("dec Wf2", 5)
    assert matrix_of("roberta.encoder.layer.11.attention.output.dense") == ("Wo", 11)
    assert matrix_of("roberta.encoder.layer.11.output.dense") == ("Wf2", 11)
    assert matrix_of("classifier.out_proj") is None
    put(tmp_path, "xsum", "dora", "small", model="bart_base",
        method_summary={"rank_pattern": {"model.decoder.layers.0.encoder_attn.q_proj": 3}})
    render(tmp_path)
    md = (tmp_path / "tables/figure2.md").read_text()
    assert "fell back to xsum" in md and "| cross Wq | 3.0 | 3.0 |" in md


@pytest.mark.parametrize("args,code", [((), 0), (("--model", "nope"), 0)])
@pytest.mark.slow
def test_console_module_runs(tmp_path, args, code):
    put(tmp_path, "rte", "lora", "small", 1, 77.0)
    out = subprocess.run([sys.executable, "-m", "dora_bench.tables", "--results", str(tmp_path),
                          "--out", str(tmp_path / "t"), *args], capture_output=True, text=True, timeout=120)
    assert out.returncode == code, out.stderr
    table2 = (tmp_path / "t/table2.md").read_text()
    assert ("77.00" in table2) == (not args) and (tmp_path / "t/figure2.png").exists()


def test_missing_results_directory_is_an_error(tmp_path, capsys):
    assert tables.main(["--results", str(tmp_path / "nowhere")]) == 2
    assert "no results under" in capsys.readouterr().err


def sections(text):
    """{section title: its text} of one rendered table."""
    parts = text.split("\n## ")[1:]
    return {part.splitlines()[0]: part for part in parts}


@pytest.mark.slow
def test_a_learning_rate_sweep_shows_its_best_configuration_and_other_keys_get_sections(tmp_path, capsys):
    for rate, scores in (("0.001", (70.0, 72.0)), ("0.01", (80.0, 78.0))):
        for seed, score in zip((1, 2), scores):
            put(tmp_path, "rte", "lora", "small", seed, score, overrides=[f"trainer.learning_rate={rate}"])
    put(tmp_path, "rte", "lora", "small", 1, 99.0, overrides=["trainer.learning_rate=0.1", "data.max_train_samples=32"])
    t2 = render(tmp_path, "--sweeps")["table2"]
    found = sections(t2)
    assert set(found) == {"model: roberta_base", "model: roberta_base — data.max_train_samples=32"}
    main, small_data = found["model: roberta_base"], found["model: roberta_base — data.max_train_samples=32"]
    assert cell(main, ("LoRA", "small"), "rte")[0] == "79.00 ± 1.00 (2)†"           # 0.01 beats 0.001: the grid's edge
    assert "- LoRA small · rte: trainer.learning_rate=0.01, best mean dev score 79.00 (n=2) of 2 configurations" in main
    assert cell(small_data, ("LoRA", "small"), "rte")[0] == "99.00 ± 0.00 (1)"       # never merged into the cell
    assert "of 2 configurations" not in small_data

    sweeps = (tmp_path / "tables/sweeps.md").read_text()
    assert sweeps in capsys.readouterr().out
    listed = [line for line in sweeps.splitlines() if line.startswith("| LoRA | small | rte |")]
    assert len(listed) == 3
    assert [line.split(" | ")[3:5] for line in listed[:2]] == [["✓", "0.01"], ["", "0.001"]]
    assert "| 79.00 ± 1.00 (2) | 0 |" in listed[0] and "| 71.00 ± 1.00 (2) | 0 |" in listed[1]
    assert "lora-small/trainer.learning_rate=0.01 |" in listed[0]

    unsearched = sections(render(tmp_path, "--searched", "")["table2"])      # nothing searched: nothing merged
    assert {"model: roberta_base — trainer.learning_rate=0.001", "model: roberta_base — trainer.learning_rate=0.01",
            "model: roberta_base — data.max_train_samples=32, trainer.learning_rate=0.1"} == set(unsearched)


def test_a_failed_configuration_never_hides_a_completed_one(tmp_path):
    put(tmp_path, "mrpc", "lora", "small", 1, status="failed", overrides=["trainer.learning_rate=0.1"])
    put(tmp_path, "mrpc", "lora", "small", 1, 70.0, overrides=["trainer.learning_rate=0.01"])
    t2 = render(tmp_path)["table2"]
    assert cell(t2, ("LoRA", "small"), "mrpc")[0] == "70.00 ± 0.00 (1)†"      # the smaller of 0.01 and 0.1 tried
    assert "- LoRA small · mrpc: trainer.learning_rate=0.01, best mean dev score 70.00 (n=1) of 2 configurations" in t2


def test_schema_1_files_are_read_or_listed_with_the_reason(tmp_path):
    path = put(tmp_path, "cola", "lora", "large", 1, 55.0)
    data = json.loads(path.read_text())
    for key in ("identity", "fingerprint", "final_structure_step"):
        data.pop(key)
    old = tmp_path / "runs/roberta_base/cola/lora-large/seed=2.json"                # the layout of schema 1
    old.write_text(json.dumps(data | {"schema": 1, "seed": 2, "selected": {"after_step": 0, "score": 1.0}}))
    cut = tmp_path / "runs/roberta_base/cola/lora-large/seed=3.json"
    cut.write_text(json.dumps(data | {"schema": 1, "seed": 3}))
    t2 = render(tmp_path)["table2"]
    assert cell(t2, ("LoRA", "large"), "cola")[0] == "55.00 ± 0.00 (2)"              # seeds 1 (v2) and 2 (v1)
    assert f"- {cut}: schema 1 result, no selected.after_step" in t2


def test_rows_come_from_what_each_run_recorded(tmp_path):
    """DoRA records its initial budget and DEM weight, AdaLoRA its init_r (method_summary): the tables read those,
    not a rule of their own, even where the config says otherwise (null = the default start)."""
    put(tmp_path, "mrpc", "dora", "small", 1, 81.0, method_summary={"initial_budget": 4, "reg_coefficient": 0.3})
    put(tmp_path, "stsb", "dora", "large", 1, 70.0, method_summary={"initial_budget": 12, "reg_coefficient": 0.0})
    put(tmp_path, "mrpc", "adalora", "small", 1, 79.0, method_summary={"init_r": 5})
    put(tmp_path, "mrpc", "adalora", "large", 1, 78.0, method_summary={"init_r": 12})
    out = render(tmp_path)
    assert cell(out["table6"], ("2", "4"), "mrpc")[0] == "81.00 ± 0.00 (1)"       # recorded 4, config null (3)
    assert cell(out["table2"], ("DoRA", "small"), "mrpc")[0] == "—"
    assert cell(out["table5"], ("without DEM", "large"), "stsb")[0] == "70.00 ± 0.00 (1)"
    assert cell(out["table2"], ("AdaLoRA", "small"), "mrpc")[0] == "—"             # started at 5, not 3
    assert cell(out["table2"], ("AdaLoRA", "large"), "mrpc")[0] == "78.00 ± 0.00 (1)"


def test_a_tie_in_mean_dev_score_goes_to_more_seeds_then_to_the_first_folder_by_path(tmp_path):
    # rte: 0.01 has two seeds (75, 80), 0.001 one seed (75): on the seed both have they tie at 75, and the one
    # with more seeds wins (judged on its own mean, 77.5, it would have won anyway; the tie is on seed 1).
    for seed, score in ((1, 75.0), (2, 80.0)):
        put(tmp_path, "rte", "lora", "small", seed, score, overrides=["trainer.learning_rate=0.01"])
    put(tmp_path, "rte", "lora", "small", 1, 75.0, overrides=["trainer.learning_rate=0.001"])
    # mrpc: two seeds each, mean 75 each: the first folder by path wins ("…=0.001" sorts before "…=0.01").
    for rate, scores in (("0.01", (70.0, 80.0)), ("0.001", (74.0, 76.0))):
        for seed, score in zip((1, 2), scores):
            put(tmp_path, "mrpc", "lora", "small", seed, score, overrides=[f"trainer.learning_rate={rate}"])
    t2 = render(tmp_path)["table2"]
    assert cell(t2, ("LoRA", "small"), "rte")[0] == "77.50 ± 2.50 (2)†"          # two rates: the pick is at an edge
    assert ("- LoRA small · rte: trainer.learning_rate=0.01, best mean dev score on seed(s) 1, which all have: 75.00; "
            "over its own 77.50 (n=2) of 2 configurations") in t2
    assert cell(t2, ("LoRA", "small"), "mrpc")[0] == "75.00 ± 1.00 (2)†"
    assert "- LoRA small · mrpc: trainer.learning_rate=0.001, best mean dev score 75.00 (n=2) of 2 configurations" in t2
