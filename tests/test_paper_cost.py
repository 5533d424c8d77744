"""scripts/paper_cost.py: Table 2's runs, optimizer steps and GPU hours, checked against the paper's own numbers
(Table 8 epochs and batch sizes, Full FT / BitFit epochs, Table 9 minutes per QNLI epoch) worked out by hand."""
import importlib.util
import math
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module

from dora_bench.tasks import glue

pytestmark = pytest.mark.slow   # trains end to end (module fixtures): the full tier

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "paper_cost.py"
spec = importlib.util.spec_from_file_location("paper_cost", SCRIPT)
paper_cost = importlib.util.module_from_spec(spec)
spec.loader.exec_module(paper_cost)

LOW_RANK = ("h_adapter", "p_adapter", "lora", "adalora", "dora")  # two budgets each; Full FT and BitFit: none
TABLE9_MINUTES = {"dora": 7.8, "adalora": 7.9, "lora": 7.2, "h_adapter": 6.8, "p_adapter": 6.4, "bitfit": 6.4,
                  "full_ft": 10.3}  # QNLI (104,743 examples), one epoch, RTX 3090


@pytest.fixture(scope="module")
def table2():
    return paper_cost.main(["--experiment", "table2"])


def test_table2_runs_and_rte_steps_at_the_papers_epochs(table2):
    assert table2["total"]["runs"] == 8 * (len(LOW_RANK) * 2 + 2) * 5
    rte = table2["rows"]["rte"]  # Table 8: 80 epochs, batch 16; Full FT 10 epochs, BitFit 20
    per_epoch = math.ceil(2490 / 16)
    assert rte["steps"] == 5 * per_epoch * (len(LOW_RANK) * 2 * 80 + 10 + 20)
    sst2 = table2["rows"]["sst2"]  # Table 8: 60 epochs, batch 64 (for every method)
    assert sst2["steps"] == 5 * math.ceil(67349 / 64) * (len(LOW_RANK) * 2 * 60 + 10 + 20)


def test_table2_gpu_hours_scale_table9_throughput_to_each_run(table2):
    per_example = {m: minutes * 60 / 104743 for m, minutes in TABLE9_MINUTES.items()}
    rte_seconds = 5 * 2490 * (sum(2 * 80 * per_example[m] for m in LOW_RANK)
                              + 10 * per_example["full_ft"] + 20 * per_example["bitfit"])
    assert table2["rows"]["rte"]["gpu_h"] == pytest.approx(rte_seconds / 3600)
    assert table2["total"]["timed"]  # every GLUE task runs at Table 9's sequence length (128)


def test_glue_train_sizes_match_the_real_files(real_data):
    root = real_data("glue")
    tasks = [t for t in glue.GLUE if (root / t / "train.tsv").is_file()]
    assert tasks, f"no GLUE task folder under {root}"
    for task in tasks:
        with initialize_config_module("dora_bench.conf", version_base="1.3"):
            cfg = compose("config", overrides=[f"task={task}", f"data.dir={root}"])
        raw, _ = glue.load(cfg)
        assert len(raw["train"]) == paper_cost.TRAIN_SIZES[task], task


# ----- the figures README quotes are the script's -------------------------------------------------------------------
README = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
PROSE = " ".join(README.split())   # README's text with line breaks as spaces


def test_readmes_table_2_cost_is_the_scripts_output(table2):
    rows = [line for line in table2["text"].splitlines() if line.startswith("|")]
    assert len(rows) == 2 + 8 + 1 and all(line in README.splitlines() for line in rows), rows
    assert f"Table 2 would take about {table2['total']['cpu_days']:,.0f} days" in PROSE
    rte_lora = table2["rows"]["rte"]["epochs"]["lora"] * math.ceil(2490 / 16)      # one LoRA run on RTE
    hours = rte_lora * 16 * paper_cost.CPU_SECONDS_PER_EXAMPLE / 3600
    assert f"LoRA on RTE alone is {rte_lora:,} optimizer steps, about {hours:.0f} hours" in PROSE


def test_readmes_figures_for_tables_3_4_and_the_decoder_experiment_are_the_scripts():
    t3, t4 = (paper_cost.main(["--experiment", name])["total"] for name in ("table3", "table4"))
    assert (f"Tables 3 and 4 add {t3['runs']} runs ({t3['steps'] / 1e6:.1f}M optimizer steps) and {t4['runs']} runs "
            f"({t4['steps'] / 1e6:.1f}M steps)") in PROSE
    llm = paper_cost.main(["--experiment", "llm_gsm8k"])["total"]
    assert f"Cost of `llm_gsm8k` (`scripts/paper_cost.py`: runs and steps from the experiment's sweep and configs): " \
           f"{llm['runs']} runs" in PROSE
    assert f"{llm['steps']:,} optimizer steps in all" in PROSE
