"""trainer.precision, trainer.tf32: mixed precision through the Trainer's own flags; DoRA's controller and
AdaLoRA's allocator stay fp32, and so do the trainable weights (fp32 masters under autocast)."""
from pathlib import Path

import pytest
import torch
from helpers import TINY, run_cli
from hydra import compose, initialize_config_module
from peft.tuners.adalora.layer import RankAllocator
from safetensors.torch import load_file
from torch import nn

from dora_bench.errors import UserError
from dora_bench.results import locate
from dora_bench.run import _training_arguments, run_seed

METHODS = ("full_ft", "bitfit", "h_adapter", "p_adapter", "lora", "adalora", "dora")


def cfg(tmp_path, glue_dir, *overrides):
    with initialize_config_module("dora_bench.conf", version_base="1.3"):
        return compose("config", overrides=["task=rte", "model=tiny_roberta", f"data.dir={glue_dir}",
                                            f"results_dir={tmp_path / 'results'}", "trainer.epochs=1",
                                            "trainer.batch_size=8", "trainer.progress_bar=false", *overrides])


class LinearOutputDtypes:
    """dtypes of every nn.Linear output while a module trains (a global hook: the runner builds the model)."""

    def __enter__(self):
        self.seen: set[torch.dtype] = set()

        def hook(module, inputs, output):
            if isinstance(module, nn.Linear) and module.training:
                self.seen.add(output.dtype)
        self._handle = nn.modules.module.register_module_forward_hook(hook)
        return self

    def __exit__(self, *exc):
        self._handle.remove()


def checkpoint(seed_folder: Path) -> Path:
    folders = list(seed_folder.glob("checkpoint-*"))
    assert len(folders) == 1, folders
    return folders[0]


def record_allocator_dtypes(monkeypatch) -> set[torch.dtype]:
    """dtypes of AdaLoRA's smoothed importance after every update (it is reset at the final step)."""
    seen: set[torch.dtype] = set()
    update = RankAllocator.update_ipt

    def recording(self, model):
        update(self, model)
        seen.update(v.dtype for v in self.exp_avg_ipt.values())
    monkeypatch.setattr(RankAllocator, "update_ipt", recording)
    return seen


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.slow
def test_bf16_trains_one_epoch_of_every_method_with_fp32_weights(method, tmp_path, glue_dir, cache_dir, monkeypatch):
    run = cfg(tmp_path, glue_dir, f"method={method}", "trainer.precision=bf16", "keep_checkpoints=true")
    allocator_dtypes = record_allocator_dtypes(monkeypatch)
    with LinearOutputDtypes() as dtypes:
        result = run_seed(run, 1)
    assert result.complete, result.error
    assert torch.bfloat16 in dtypes.seen  # autocast really ran the matmuls in bf16
    folder = checkpoint(locate(run, 1).checkpoints)
    weights = {}
    for file in folder.glob("*.safetensors"):
        weights |= load_file(file)
    assert weights and {t.dtype for t in weights.values()} == {torch.float32}  # fp32 master weights
    state = torch.load(folder / "method_state.pt", weights_only=True)
    if method == "dora":
        assert state["scores"].dtype == torch.float32 and torch.isfinite(state["scores"]).all()
        assert state["scores"].abs().sum() > 0 and state["mask"].dtype == torch.bool
        c = torch.stack([weights[f"{name}.c"] for name in state["layer_names"]])
        assert (c[~state["final_mask"]] == 0).all() and (c[state["final_mask"]] != 0).any()
    assert allocator_dtypes == ({torch.float32} if method == "adalora" else set())


def test_a_bf16_job_does_not_make_the_next_job_of_the_process_bf16(tmp_path, glue_dir, cache_dir):
    # TrainingArguments hands precision to accelerate in an environment variable that outlives the job.
    _training_arguments(cfg(tmp_path, glue_dir, "trainer.precision=bf16"), 1, tmp_path / "earlier-job", 1)
    with LinearOutputDtypes() as dtypes:
        result = run_seed(cfg(tmp_path, glue_dir, "method=bitfit"), 1)
    assert result.complete, result.error
    assert dtypes.seen == {torch.float32}


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA: fp16 is allowed here")
def test_fp16_without_cuda_is_refused_in_one_line_before_training(tmp_path, glue_dir, cache_dir):
    out = run_cli("task=rte", "method=dora", "seed=1", "trainer.precision=fp16", f"data.dir={glue_dir}", *TINY,
                  cwd=tmp_path, env={"HYDRA_FULL_ERROR": "0"})
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == ["dora-bench: error: trainer.precision='fp16' is not valid; allowed: "
                                               "fp32, bf16 (fp16 needs a CUDA GPU and none is used here)"]
    assert "Traceback" not in out.stderr and not (tmp_path / "results").exists()


@pytest.mark.parametrize("override,message", [
    ("trainer.precision=fp8", "trainer.precision='fp8' is not valid; allowed: fp32, bf16, fp16"),
    ("trainer.report_to=comet", "trainer.report_to='comet' is not valid; allowed: none, tensorboard, wandb, mlflow"),
])
def test_bad_precision_compile_and_tracker_values_are_named(override, message, tmp_path, glue_dir, cache_dir):
    with pytest.raises(UserError) as err:
        run_seed(cfg(tmp_path, glue_dir, override), 1)
    assert str(err.value) == message
    assert not (tmp_path / "results").exists()


def test_tracker_package_missing_is_named(tmp_path, glue_dir, cache_dir, monkeypatch):
    monkeypatch.setattr("dora_bench.run.get_available_reporting_integrations", lambda: ["tensorboard"])
    with pytest.raises(UserError, match=r"trainer.report_to=wandb needs the wandb package.*pip install wandb"):
        run_seed(cfg(tmp_path, glue_dir, "trainer.report_to=wandb"), 1)


@pytest.fixture
def tf32_flags():
    """TrainingArguments sets torch's global TF32 flags: put them back."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


@pytest.mark.parametrize("hardware_has_tf32", [False, True])
@pytest.mark.parametrize("requested", [False, True])
def test_tf32_reaches_the_trainer_only_where_the_hardware_has_it(requested, hardware_has_tf32, tmp_path, glue_dir,
                                                                 monkeypatch, tf32_flags):
    monkeypatch.setattr("dora_bench.run.is_torch_tf32_available", lambda: hardware_has_tf32)
    monkeypatch.setattr("transformers.training_args.is_torch_tf32_available", lambda: hardware_has_tf32)
    run = cfg(tmp_path, glue_dir, f"trainer.tf32={str(requested).lower()}", "trainer.precision=bf16")
    args = _training_arguments(run, 1, tmp_path / "out", 1)
    assert args.tf32 is (requested if hardware_has_tf32 else None)  # None: the Trainer leaves torch's default
    if hardware_has_tf32:
        assert torch.backends.cuda.matmul.allow_tf32 is requested
    assert args.bf16 and not args.fp16
