"""A big model training on a CPU prints one warning line: planned optimizer steps and the first steps' time
extrapolated. The threshold is lowered here so that a tiny model stands in for RoBERTa-base."""
import math
import re
from types import SimpleNamespace

import torch
from tiny_training import build, toy_dataset, train

from dora_bench import engine
from dora_bench.engine import CpuCostWarning

WARNING = re.compile(r"\[dora-bench\] warning: a \d+M-parameter model is training on a CPU: ([\d,]+) optimizer steps "
                     r"planned, the first (\d+) took [\d.]+ s each, so training takes about [\d,.]+ h")


def warnings_of_a_tiny_run(tmp_path, cache_dir, capfd, samples: int, batch: int, epochs: int) -> list[str]:
    steps = math.ceil(samples / batch) * epochs
    handle, tokenizer = build(["method=lora"], cache_dir, total_steps=steps)
    trainer = train(handle, tokenizer, toy_dataset(tokenizer, samples), tmp_path, epochs=epochs, batch_size=batch)
    assert trainer.state.global_step == steps
    return [line for line in capfd.readouterr().err.splitlines() if "[dora-bench] warning:" in line]


def test_a_big_model_on_a_cpu_warns_once_with_planned_steps_and_extrapolated_time(tmp_path, cache_dir, capfd,
                                                                                   monkeypatch):
    monkeypatch.setattr(CpuCostWarning, "MIN_PARAMS", 0)  # the tiny model counts as big
    lines = warnings_of_a_tiny_run(tmp_path, cache_dir, capfd, samples=40, batch=4, epochs=2)
    assert len(lines) == 1, lines
    planned, measured = WARNING.search(lines[0]).groups()
    assert int(planned.replace(",", "")) == math.ceil(40 / 4) * 2 and int(measured) == CpuCostWarning.MEASURED_STEPS


def drive(monkeypatch, device: str, first_step: int, clock: list[float]) -> None:
    """The callback as the Trainer calls it, on a fake clock; 36,000 steps planned."""
    ticks = iter(clock)
    monkeypatch.setattr(engine.time, "perf_counter", lambda: next(ticks))
    callback = CpuCostWarning()
    args = SimpleNamespace(device=torch.device(device))
    state = SimpleNamespace(global_step=first_step, max_steps=36_000, is_world_process_zero=True)
    callback.on_train_begin(args, state, None, model=torch.nn.Linear(10, 10))
    for _ in range(6):
        state.global_step += 1
        callback.on_step_end(args, state, None)


def test_the_estimate_is_the_time_of_the_first_steps_times_the_steps_to_go(monkeypatch, capsys):
    monkeypatch.setattr(CpuCostWarning, "MIN_PARAMS", 0)
    drive(monkeypatch, "cpu", 0, [100.0, 130.0])  # the first 3 steps took 30 s: 10 s a step, 36,000 steps = 100 h
    drive(monkeypatch, "cpu", 12_000, [0.0, 15.0])  # resumed at step 12,000: 5 s a step for the 24,000 left = 33.3 h
    drive(monkeypatch, "cuda", 0, [0.0, 30.0])  # a GPU: no warning
    assert capsys.readouterr().err.splitlines() == [
        "[dora-bench] warning: a 0M-parameter model is training on a CPU: 36,000 optimizer steps planned, the first 3 "
        "took 10.0 s each, so training takes about 100.0 h (4.2 days; evaluation not included); use a GPU, "
        "or model=minilm on a CPU",
        "[dora-bench] warning: a 0M-parameter model is training on a CPU: 36,000 optimizer steps planned, the first 3 "
        "took 5.0 s each, so training takes about 33.3 h (1.4 days; evaluation not included); use a GPU, "
        "or model=minilm on a CPU"]


def test_a_small_model_trains_on_a_cpu_without_the_warning(tmp_path, cache_dir, capfd):
    assert warnings_of_a_tiny_run(tmp_path, cache_dir, capfd, samples=16, batch=4, epochs=1) == []
