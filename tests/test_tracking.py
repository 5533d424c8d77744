"""trainer.report_to: trackers get loss, learning rate, dev metrics and the method's own signals at every
logging step; TensorBoard (offline) is the one checked, by reading its event files back."""
import pytest
from hydra import compose, initialize_config_module
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from dora_bench.run import logs_dir, run_seed


def cfg(tmp_path, glue_dir, *overrides):
    with initialize_config_module("dora_bench.conf", version_base="1.3"):
        return compose("config", overrides=["task=rte", "model=tiny_roberta", f"data.dir={glue_dir}",
                                            f"results_dir={tmp_path / 'results'}", "trainer.batch_size=8",
                                            "trainer.logging_steps=1", "trainer.progress_bar=false", *overrides])


def scalars(folder) -> dict[str, dict[int, float]]:
    events = list(folder.rglob("events.out.tfevents.*"))
    assert events, f"no TensorBoard event file under {folder}"
    merged: dict[str, dict[int, float]] = {}
    for file in events:
        accumulator = EventAccumulator(str(file))
        accumulator.Reload()
        for tag in accumulator.Tags()["scalars"]:
            merged.setdefault(tag, {}).update({e.step: e.value for e in accumulator.Scalars(tag)})
    return merged


def kept_after(step: int, trajectory: list[dict], all_components: int) -> int:
    """Components kept after optimizer step `step`: those of the latest pruning event up to it."""
    events = [e["kept"] for e in trajectory if e["step"] <= step]
    return events[-1] if events else all_components


def test_tensorboard_holds_doras_kept_components_at_every_logging_step(tmp_path, glue_dir, cache_dir):
    run = cfg(tmp_path, glue_dir, "method=dora", "trainer.epochs=3", "method.prune_interval=1",
              "trainer.report_to=tensorboard")
    result = run_seed(run, 1)
    assert result.complete, result.error
    logged = scalars(logs_dir(run, 1))

    steps = result.train.optimizer_steps
    kept = logged["train/dora_kept_components"]
    assert sorted(kept) == list(range(1, steps + 1))  # logging_steps=1: every optimizer step
    summary = result.method_summary
    trajectory, initial = summary["trajectory"], len(summary["rank_pattern"]) * summary["initial_budget"]
    assert [kept[t] for t in kept] == [kept_after(t, trajectory, initial) for t in kept]
    assert len(set(kept.values())) > 2  # pruning happened while logging
    assert kept[steps] == sum(summary["rank_pattern"].values())
    assert logged["train/dora_budget"][steps] == pytest.approx(summary["final_budget"])
    assert all(v > 0 for v in logged["train/dora_dem"].values())
    assert sorted(logged["train/loss"]) == sorted(kept) and logged["train/learning_rate"]
    epochs = result.epochs
    assert sorted(logged["eval/score"]) == [e.step for e in epochs]  # dev metrics, once per epoch
    assert [logged["eval/score"][e.step] for e in epochs] == pytest.approx([e.metrics["score"] for e in epochs])


def test_adalora_logs_its_rank_budget(tmp_path, glue_dir, cache_dir):
    run = cfg(tmp_path, glue_dir, "method=adalora", "trainer.epochs=4", "method.delta_t=1",
              "trainer.report_to=tensorboard")
    result = run_seed(run, 1)
    assert result.complete, result.error
    budget = scalars(logs_dir(run, 1))["train/adalora_budget"]
    summary = result.method_summary
    matrices = len(summary["rank_pattern"])
    assert budget[1] == matrices * summary["init_r"]  # before pruning: every initial rank
    assert budget[max(budget)] == matrices * summary["target_r"]  # the final phase: the target
    assert list(budget.values()) == sorted(budget.values(), reverse=True)


def test_no_tracker_writes_no_log_files(tmp_path, glue_dir, cache_dir):
    run = cfg(tmp_path, glue_dir, "method=bitfit", "trainer.epochs=1")
    assert run_seed(run, 1).complete
    assert not logs_dir(run, 1).exists()
