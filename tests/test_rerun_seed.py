"""scripts/rerun_seed.py, the study's "train a committed seed again" check: what it counts as reproduced, on the
machine that made the result (exact to the digits asked) and elsewhere (within the tolerance), and its refusal when
the overrides name no committed result. The full re-run itself is test_study.py's (one STS-B seed)."""
import copy
import importlib.util
from pathlib import Path

import pytest

from dora_bench.results import read_result

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "rerun_seed.py"
spec = importlib.util.spec_from_file_location("rerun_seed", SCRIPT)
rerun_seed = importlib.util.module_from_spec(spec)
spec.loader.exec_module(rerun_seed)


@pytest.fixture
def committed():
    first = sorted((REPO / "results" / "runs").rglob("seed=1.json"))[0]
    return read_result(first)


def test_a_result_compared_with_itself_is_reproduced(committed):
    assert rerun_seed.same_machine(copy.deepcopy(committed), committed) == (committed.env.get("cpu") is not None)
    assert rerun_seed.differences(copy.deepcopy(committed), committed, 2, 0.5, exact=True) == []


def test_a_moved_metric_is_reported_exactly_at_the_digits_and_loosely_within_the_tolerance(committed):
    ours = copy.deepcopy(committed)
    key = sorted(ours.epochs[-1].metrics)[0]
    ours.epochs[-1].metrics[key] += 0.01                              # the second decimal moves
    found = rerun_seed.differences(ours, committed, 2, 0.5, exact=True)
    assert len(found) == 1 and f"epoch {ours.epochs[-1].epoch} {key}" in found[0]
    assert rerun_seed.differences(ours, committed, 1, 0.5, exact=True) in ([], found)   # rounding may carry
    assert rerun_seed.differences(ours, committed, 2, 0.5, exact=False) == []
    ours.epochs[-1].metrics[key] += 0.6
    assert len(rerun_seed.differences(ours, committed, 2, 0.5, exact=False)) == 1
    del ours.epochs[0]
    assert "epochs" in rerun_seed.differences(ours, committed, 2, 0.5, exact=False)[0]


def test_another_thread_count_is_another_machine(committed):
    ours = copy.deepcopy(committed)
    ours.env["threads"] = (committed.env.get("threads") or 1) + 1
    assert not rerun_seed.same_machine(ours, committed)


def test_overrides_without_a_committed_result_exit_2(tmp_path, capsys):
    assert rerun_seed.main(["task=stsb", "method=lora", "seed=1", "--results", str(tmp_path)]) == 2
    assert "no committed result for task=stsb method=lora seed=1" in capsys.readouterr().err
