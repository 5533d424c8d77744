"""Checkpoints hold what trains: every method but Full FT checkpoints its trainable parameters (and the method
state), never a frozen weight; resuming loads them strictly into the rebuilt model."""
import re
from pathlib import Path

import pytest
import torch
from cli_runner import run_script
from hydra import compose, initialize_config_module
from safetensors.torch import load_file, save_file
from transformers import set_seed

from dora_bench.checkpoints import TRAINABLES, CheckpointMismatch, load_trainables, save_trainables
from dora_bench.methods import apply_method
from dora_bench.models import load_model
from dora_bench.results import locate
from dora_bench.run import run_seed

REPO = Path(__file__).resolve().parents[1]
RUN_STATE = {"optimizer.pt", "scheduler.pt", "rng_state.pth", "trainer_state.json", "method_state.pt",
             "checkpoint_complete.json"}


def config(tmp_path, glue_dir, method: str):
    with initialize_config_module("dora_bench.conf", version_base="1.3"):
        return compose("config", overrides=["task=rte", "model=tiny_roberta", f"method={method}", "seed=1",
                                            f"data.dir={glue_dir}", f"results_dir={tmp_path}", "trainer.epochs=1",
                                            "trainer.batch_size=8", "trainer.progress_bar=false",
                                            "keep_checkpoints=true"])


def built(cfg, cache_dir):
    """The model a run builds (seeded like run.py), with the method applied."""
    set_seed(1)
    model, _ = load_model(cfg.model, "seq_cls", str(cache_dir), num_labels=2)
    return apply_method(model, cfg, total_steps=3)


def names(handle, trainable: bool) -> set[str]:
    return {n for n, p in handle.model.named_parameters() if p.requires_grad is trainable}


@pytest.mark.parametrize("method", ["lora", "dora", "adalora", "h_adapter", "p_adapter", "bitfit"])
@pytest.mark.slow
def test_a_checkpoint_holds_the_trainables_and_run_state_and_no_frozen_weight(method, tmp_path, glue_dir, cache_dir):
    cfg = config(tmp_path, glue_dir, method)
    assert run_seed(cfg, 1).complete
    [checkpoint] = locate(cfg, 1).checkpoints.iterdir()
    assert {p.name for p in checkpoint.iterdir()} == RUN_STATE | {TRAINABLES}   # no model, adapter or tokenizer files
    saved = load_file(checkpoint / TRAINABLES)
    handle = built(cfg, cache_dir)
    frozen = names(handle, trainable=False)
    assert frozen and not frozen & saved.keys()
    assert saved.keys() == names(handle, trainable=True)
    optimizer = torch.load(checkpoint / "optimizer.pt", weights_only=True)
    assert sum(len(group["params"]) for group in optimizer["param_groups"]) == len(saved)


def test_full_fine_tuning_keeps_the_trainers_whole_model_checkpoint(tmp_path, glue_dir, cache_dir):
    cfg = config(tmp_path, glue_dir, "full_ft")
    assert run_seed(cfg, 1).complete
    [checkpoint] = locate(cfg, 1).checkpoints.iterdir()
    assert not (checkpoint / TRAINABLES).exists()
    handle = built(cfg, cache_dir)
    assert load_file(checkpoint / "model.safetensors").keys() == names(handle, trainable=True)


def test_loading_is_strict_every_trainable_present_nothing_else(tmp_path, glue_dir, cache_dir):
    lora = config(tmp_path, glue_dir, "lora")
    source, target = built(lora, cache_dir), built(lora, cache_dir)
    with torch.no_grad():
        for _, p in source.model.named_parameters():
            p.add_(1.0)
    save_trainables(source.model, tmp_path / "ok")
    load_trainables(target.model, tmp_path / "ok")
    a, b = dict(source.model.named_parameters()), dict(target.model.named_parameters())
    assert all(torch.equal(a[n], b[n]) == b[n].requires_grad for n in a)   # trainables copied, frozen ones left

    saved = load_file(tmp_path / "ok" / TRAINABLES)
    first = sorted(saved)[0]
    cases = {"missing": {k: v for k, v in saved.items() if k != first},
             "unexpected": {**saved, "roberta.embeddings.word_embeddings.weight": torch.zeros(3)},
             "wrong shape": {**saved, first: torch.zeros(1)}}
    for label, tensors in cases.items():
        (tmp_path / label).mkdir()
        save_file(tensors, tmp_path / label / TRAINABLES)
        with pytest.raises(CheckpointMismatch, match=rf"does not hold this model's trainable parameters: {label} "):
            load_trainables(target.model, tmp_path / label)

    save_trainables(built(config(tmp_path, glue_dir, "dora"), cache_dir).model, tmp_path / "dora")
    with pytest.raises(CheckpointMismatch, match="missing .*; unexpected "):   # another method's checkpoint
        load_trainables(target.model, tmp_path / "dora")


@pytest.mark.slow
def test_the_size_script_prints_every_method_smaller_than_the_trainers_checkpoint_but_full_ft(tmp_path):
    out = run_script(REPO / "scripts/checkpoint_sizes.py", "--layers", "1", "--hidden", "32", "--heads", "2",
                     "--intermediate", "64", "--vocab", "300", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    rows = {m[0]: (float(m[1]), float(m[2]), float(m[3]))
            for m in re.findall(r"^\| (\w+) \| [\d,]+ \| [\d,]+ \| ([\d.]+) \| ([\d.]+) \| ([\d.]+) \|$", out.stdout, re.M)}
    assert set(rows) == {"full_ft", "bitfit", "h_adapter", "p_adapter", "lora", "adalora", "dora"}
    for method, (before, after, ratio) in rows.items():
        assert ratio == pytest.approx(after / before, abs=0.02)
        assert (after == before) if method == "full_ft" else (after < before), (method, before, after)


def test_save_steps_adds_step_checkpoints_to_the_epoch_ends(tmp_path, glue_dir, cache_dir, monkeypatch):
    from dora_bench.engine import CheckpointCallback

    saved = []
    on_save = CheckpointCallback.on_save

    def recording(self, args, state, control, **kwargs):
        on_save(self, args, state, control, **kwargs)
        saved.append(sorted(p.name for p in Path(args.output_dir).iterdir()))

    monkeypatch.setattr(CheckpointCallback, "on_save", recording)
    with initialize_config_module("dora_bench.conf", version_base="1.3"):   # rte: 3 steps an epoch, 6 in all
        cfg = compose("config", overrides=["task=rte", "model=tiny_roberta", "method=lora", "seed=1",
                                           f"data.dir={glue_dir}", f"results_dir={tmp_path}", "trainer.epochs=2",
                                           "trainer.batch_size=8", "trainer.progress_bar=false", "trainer.save_steps=2"])
    assert run_seed(cfg, 1).complete
    assert saved == [["checkpoint-2"], ["checkpoint-3"], ["checkpoint-4"], ["checkpoint-6"]]   # only the newest kept
