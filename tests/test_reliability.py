"""Bad input, non-finite losses, crashes and multi-process runs: clear errors, nothing lost."""
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import TINY, run_cli, write_tsv
from hydra import compose, initialize_config_module
from safetensors.torch import load_file

from dora_bench.errors import UserError
from dora_bench.run import run_seed

REPO = Path(__file__).resolve().parents[1]


def cfg(tmp_path, glue_dir, *overrides):
    with initialize_config_module("dora_bench.conf", version_base="1.3"):
        return compose("config", overrides=["task=rte", "method=lora", "model=tiny_roberta", f"data.dir={glue_dir}",
                                            f"results_dir={tmp_path / 'results'}", "trainer.epochs=1",
                                            "trainer.progress_bar=false", *overrides])


def header_only_dir(tmp_path):
    folder = tmp_path / "rte"
    folder.mkdir()
    write_tsv(folder / "train.tsv", ["index", "sentence1", "sentence2", "label"], [["0", "a", "b", "entailment"]])
    write_tsv(folder / "dev.tsv", ["index", "sentence1", "sentence2", "label"], [])
    return folder


def weightless_model_dir(tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "roberta"}))
    return folder


# (overrides, pieces of the message: the field, the bad value, what is allowed)
BAD_INPUT = {
    "dora initial < final": (["method=dora", "method.initial_budget=1"], ["initial_budget", "1", ">= final_budget=2"]),
    "dora budget <= 0": (["method=dora", "budget.rank=0"], ["final_budget", "0", ">= 1"]),
    "t_init + t_final >= 1": (["method=dora", "method.t_init=0.6"], ["t_init + t_final", "1.1", "< 1"]),
    "dora prune interval <= 0": (["method=dora", "method.prune_interval=0"], ["prune_interval", "0", "positive"]),
    "adalora prune interval <= 0": (["method=adalora", "method.delta_t=0"], ["delta_t", "0", "positive"]),
    "learning rate <= 0": (["trainer.learning_rate=0"], ["learning_rate", "0", "> 0"]),
    "missing data dir": (["data.dir=/no/such/dir"], ["data.dir", "/no/such/dir", "not a directory"]),
    "missing data file": (["data.train_file=/no/train.jsonl", "data.validation_file=/no/dev.jsonl"],
                          ["/no/train.jsonl", "does not exist"]),
    "no train samples": (["data.max_train_samples=0"], ["max_train_samples", "0", "positive"]),
    "max_length above model limit": (["trainer.max_length=4096"], ["max_length", "4096", "512"]),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUT))
def test_bad_input_is_named_and_leaves_no_result(case, tmp_path, glue_dir, cache_dir):
    overrides, pieces = BAD_INPUT[case]
    with pytest.raises(UserError) as err:
        run_seed(cfg(tmp_path, glue_dir, *overrides), 1)
    for piece in pieces:
        assert piece in str(err.value), (case, str(err.value))
    assert not list((tmp_path / "results").rglob("*.json"))


def test_empty_dev_split(tmp_path, cache_dir):
    with pytest.raises(UserError, match="validation.*empty|empty"):
        run_seed(cfg(tmp_path, header_only_dir(tmp_path)), 1)


def test_model_dir_without_weights(tmp_path, glue_dir, cache_dir):
    with pytest.raises(UserError, match="has no safetensors weights"):
        run_seed(cfg(tmp_path, glue_dir, "model=roberta_base", f"model.name_or_path={weightless_model_dir(tmp_path)}"), 1)


def test_results_dir_not_writable(tmp_path, glue_dir, cache_dir):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with initialize_config_module("dora_bench.conf", version_base="1.3"):
        bad = compose("config", overrides=["task=rte", "model=tiny_roberta", f"data.dir={glue_dir}",
                                           f"results_dir={blocker}/results"])
    with pytest.raises(UserError, match="results_dir=.*is not writable"):
        run_seed(bad, 1)


def test_cli_prints_one_line_and_exits_2(tmp_path, glue_dir, cache_dir):
    out = run_cli("task=rte", "method=dora", "method.initial_budget=1", "seed=1", f"data.dir={glue_dir}", *TINY,
                  cwd=tmp_path)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines()[-1] == (
        "dora-bench: error: method.initial_budget=1 must be >= final_budget=2")
    assert not (tmp_path / "results/runs").exists()


def test_non_finite_loss_fails_the_seed_and_the_others_still_run(tmp_path, glue_dir, cache_dir):
    out = run_cli("task=rte", "method=full_ft", "seeds=[1,2]", "trainer.learning_rate=1e12", f"data.dir={glue_dir}",
                  *TINY, cwd=tmp_path)
    assert out.returncode == 1
    for seed in (1, 2):
        record = json.loads((tmp_path / f"results/runs/tiny_roberta/rte/full_ft/seed={seed}.json").read_text())
        assert record["status"] == "failed"
        assert re.search(r"non-finite loss .* at optimizer step \d+ \(learning rate [\d.e+-]+\)", record["error"])
    assert "FAILED seeds: [1, 2]" in out.stdout + out.stderr or "no seed completed" in out.stdout


def _result_and_adapter(root: Path):
    run = root / "results/runs/tiny_roberta/stsb/dora-small"
    return json.loads((run / "seed=1.json").read_text()), load_file(run / "seed=1.adapter/adapter_model.safetensors")


def test_sigkill_at_a_random_point_then_rerun_matches_an_uninterrupted_run(tmp_path, glue_dir, cache_dir):
    args = ["task=stsb", "method=dora", "seed=1", f"data.dir={glue_dir}", *TINY, "trainer.epochs=4",
            "method.prune_interval=1"]
    clean, killed = tmp_path / "clean", tmp_path / "killed"
    clean.mkdir(), killed.mkdir()
    assert run_cli(*args, cwd=clean).returncode == 0
    delay = random.Random(os.getpid()).uniform(0.0, 2.0)
    proc = subprocess.Popen([sys.executable, "-m", "dora_bench", *args], cwd=killed, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoints = killed / "results/checkpoints/tiny_roberta/stsb/dora-small/seed=1"
    deadline = time.time() + 300
    while not list(checkpoints.glob("checkpoint-*/checkpoint_complete.json")) and proc.poll() is None:
        assert time.time() < deadline
        time.sleep(0.05)
    time.sleep(delay)  # somewhere in the following epochs, or while a checkpoint is being written
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    rerun = run_cli(*args, cwd=killed)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    results = list((killed / "results/runs").rglob("seed=*.json"))
    assert len(results) == 1, results
    (a, wa), (b, wb) = _result_and_adapter(clean), _result_and_adapter(killed)
    assert [e["metrics"] for e in a["epochs"]] == [e["metrics"] for e in b["epochs"]], f"killed after +{delay:.2f}s"
    assert a["method_summary"]["rank_pattern"] == b["method_summary"]["rank_pattern"]
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def test_no_remote_code_no_pickles_no_callables_from_the_command_line():
    source = "\n".join(p.read_text() for p in (REPO / "dora_bench").rglob("*.py"))
    assert "trust_remote_code=True" not in source
    assert "instantiate(" not in source and not re.search(r"[\"']_target_[\"']", source)
    for call in re.findall(r"torch\.load\([^)]*\)", source):
        assert "weights_only=True" in call, call
    assert "use_safetensors=True" in source


def test_task_and_model_heads_must_match(tmp_path, glue_dir, cache_dir):
    with initialize_config_module("dora_bench.conf", version_base="1.3"):
        bad = compose("config", overrides=["task=xsum", "model=tiny_roberta", f"results_dir={tmp_path}"])
    with pytest.raises(UserError, match="task=xsum needs a seq2seq model but model=tiny_roberta has seq_cls, qa heads; "
                                        "models with one: bart_base, tiny_bart"):
        run_seed(bad, 1)
