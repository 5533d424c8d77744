"""One (task, method, budget, seed): skip if done, build, train, evaluate, write the result file."""
from __future__ import annotations

import hashlib
import importlib.resources
import json
import os
import platform
import resource
import shutil
import subprocess
import time
import traceback
from statistics import median
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
import yaml
from omegaconf import DictConfig, OmegaConf
from transformers import TrainingArguments, set_seed

from dora_bench import results
from dora_bench.engine import (BenchSeq2SeqTrainer, BenchTrainer, latest_checkpoint, load_method_state,
                               optimizer_steps)
from dora_bench.errors import UserError
from dora_bench.methods import apply_method
from dora_bench.models import load_model
from dora_bench.tasks import get_task

PACKAGES = ("torch", "transformers", "peft", "adapters", "datasets", "hydra-core", "accelerate",
            "scikit-learn", "scipy", "rouge-score", "dora-bench")


def world() -> tuple[int, int]:
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def validate(cfg: DictConfig) -> None:
    """Checks that would otherwise fail deep inside training, or silently."""
    if cfg.task.head not in cfg.model.heads:
        raise UserError(f"task={cfg.task.name} needs a {cfg.task.head} model but model={cfg.model.name} has "
                        f"{', '.join(cfg.model.heads)} heads; models with one: {', '.join(models_with_head(cfg.task.head))}")
    t = cfg.trainer
    if not t.learning_rate > 0:
        raise UserError(f"trainer.learning_rate={t.learning_rate} must be > 0")
    for field in ("epochs", "batch_size", "grad_accum", "max_length"):
        if not int(t[field]) >= 1:
            raise UserError(f"trainer.{field}={t[field]} must be >= 1")
    if t.max_length > cfg.model.max_positions:
        raise UserError(f"trainer.max_length={t.max_length} exceeds model {cfg.model.name}'s limit "
                        f"of {cfg.model.max_positions} positions")
    if cfg.report not in ("best", "last"):
        raise UserError(f"report={cfg.report!r} is not valid; allowed: best, last")
    _, world_size = world()
    if t.batch_size % world_size:
        raise UserError(f"trainer.batch_size={t.batch_size} is not divisible by the {world_size} processes")
    _check_writable(Path(cfg.results_dir))


def models_with_head(head: str) -> list[str]:
    folder = importlib.resources.files("dora_bench.conf") / "model"
    configs = (yaml.safe_load(p.read_text()) for p in folder.iterdir() if p.name.endswith(".yaml"))
    return sorted(c["name"] for c in configs if head in c.get("heads", ()))


def _check_writable(folder: Path) -> None:
    """Fail before training, not after hours of it, when results cannot be saved (nothing is created)."""
    existing = folder.absolute()
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK):
        raise UserError(f"results_dir={str(folder)!r} is not writable ({existing} is not a writable folder)")


def run_seed(cfg: DictConfig, seed: int) -> results.RunResult:
    """Train and evaluate one seed; returns the result (read from disk if this configuration's seed is done)."""
    validate(cfg)  # also before reusing a result: `report` is applied to it
    where = results.locate(cfg, seed)
    if (done := where.existing()) and not cfg.force:
        print(f"[dora-bench] seed {seed}: complete result exists, skipping ({where.result})")
        return done
    started = time.time()
    try:
        result = _train(cfg, seed, where)
    except UserError:
        raise
    except Exception as err:  # one seed failing must not lose the others: record it and go on
        result = results.RunResult(status="failed", **_base_record(cfg, seed, where),
                                   error=f"{type(err).__name__}: {err}", traceback=traceback.format_exc(limit=20))
    result.timing.wall_s = time.time() - started
    if world()[0] == 0:
        results.write_result(where.result, result)
    return result


def _train(cfg: DictConfig, seed: int, where: results.RunLocation) -> results.RunResult:
    task = get_task(cfg.task.family)
    raw, fingerprint = task.load(cfg)
    set_seed(seed)  # before the head and the adapters are initialised
    model, tokenizer = load_model(cfg.model, cfg.task.head, cfg.cache_dir, **task.model_kwargs(cfg))
    data = task.prepare(cfg, tokenizer, raw, fingerprint)
    _, world_size = world()
    t = cfg.trainer
    total_steps = optimizer_steps(len(data.train), t.batch_size, world_size, t.grad_accum, t.epochs)
    handle = apply_method(model, cfg, total_steps)

    out_dir = where.checkpoints
    args = _training_arguments(cfg, seed, out_dir, world_size)
    trainer_cls = BenchSeq2SeqTrainer if cfg.task.head == "seq2seq" else BenchTrainer
    trainer = trainer_cls(model=handle.model, args=args, train_dataset=data.train, eval_dataset=data.eval_sets,
                          data_collator=data.collator,
                          processing_class=tokenizer, **data.trainer_kwargs)
    trainer.setup_bench(handle, data.evaluate, where.fingerprint)
    resume = None if cfg.force else latest_checkpoint(out_dir, where.fingerprint)
    if resume is None and out_dir.exists():  # unfinished checkpoints (or force=true): start afresh
        shutil.rmtree(out_dir, ignore_errors=True)
    elif resume:
        print(f"[dora-bench] seed {seed}: resuming from {resume}")
        load_method_state(handle, resume)  # the Trainer restores weights, optimizer and schedule itself
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    train_output = trainer.train(resume_from_checkpoint=resume)
    if trainer.state.global_step != total_steps:
        raise RuntimeError(f"planned {total_steps} optimizer steps but the trainer took {trainer.state.global_step}")

    agreement = ranks_agree(handle) if world_size > 1 else None
    record = results.RunResult(
        status="complete",
        **_base_record(cfg, seed, where),
        metric=cfg.task.metric,
        epochs=_epoch_metrics(trainer.state.log_history),
        final_structure_step=int(handle.final_structure_step),
        params=results.Params(trainable_paper=int(handle.paper_trainable_params()),
                              trainable_with_head=int(handle.trainable_params(include_head=True)),
                              total=int(sum(p.numel() for p in handle.model.parameters()))),
        method_summary=handle.summary(),
        train=results.TrainInfo(optimizer_steps=total_steps, train_samples=len(data.train),
                                eval_samples={k: len(v) for k, v in data.eval_sets.items()},
                                resumed_from=resume, world_size=world_size, rank_agreement=agreement),
        timing=results.Timing(train_runtime_s=train_output.metrics.get("train_runtime"),
                              step_time_median_s=median(trainer.step_timer.step_times() or [float("nan")]),
                              eval_runtime_s=trainer.eval_seconds[-1] if trainer.eval_seconds else None,
                              train_samples_per_s=train_output.metrics.get("train_samples_per_second"),
                              peak_memory_mb=peak_memory_mb()),
        data=fingerprint,
    )
    try:
        record.select(cfg.report)
    except ValueError as err:
        raise RuntimeError(f"no usable evaluation: {err}") from None
    if world()[0] == 0:
        if handle.export is not None and cfg.get("save_adapter", True):
            adapter_dir = where.result.with_suffix(".adapter")
            adapter_dir.mkdir(parents=True, exist_ok=True)
            handle.export(str(adapter_dir))
            record.adapter_dir = str(adapter_dir)
        if not cfg.keep_checkpoints:
            shutil.rmtree(out_dir, ignore_errors=True)
    return record


def ranks_agree(handle) -> dict[str, Any]:
    """Every process must end with the same trainable weights and method state (masks, ranks)."""
    import torch.distributed as dist

    digest = hashlib.sha256()
    for name, parameter in sorted(handle.model.named_parameters()):
        if parameter.requires_grad:
            digest.update(name.encode() + parameter.detach().cpu().float().numpy().tobytes())
    digest.update(json.dumps(handle.summary(), sort_keys=True, default=str).encode())
    digests = [None] * dist.get_world_size()
    dist.all_gather_object(digests, digest.hexdigest())
    if len(set(digests)) != 1:
        raise RuntimeError(f"processes diverged: weight/mask digests per rank {digests}")
    return {"digests": digests, "identical": True}


def _training_arguments(cfg: DictConfig, seed: int, out_dir: Path, world_size: int) -> TrainingArguments:
    t = cfg.trainer
    kwargs = dict(
        output_dir=str(out_dir),
        num_train_epochs=t.epochs,
        learning_rate=t.learning_rate,
        per_device_train_batch_size=t.batch_size // world_size,
        per_device_eval_batch_size=t.eval_batch_size,
        gradient_accumulation_steps=t.grad_accum,
        weight_decay=t.weight_decay,
        warmup_ratio=t.warmup_ratio,
        max_grad_norm=t.max_grad_norm,
        lr_scheduler_type=t.lr_scheduler,
        optim="adamw_torch",
        eval_strategy="epoch",
        save_strategy="epoch",
        logging_strategy="steps",
        logging_steps=t.logging_steps,
        logging_nan_inf_filter=False,  # a non-finite loss must surface, not be averaged away
        group_by_length=t.group_by_length,
        dataloader_num_workers=t.dataloader_workers,
        seed=seed,
        data_seed=seed,
        use_cpu=t.use_cpu,
        disable_tqdm=not t.progress_bar,
        report_to="none",
        save_safetensors=True,
        ddp_find_unused_parameters=False,
    )
    if cfg.task.head == "seq2seq":
        from transformers import Seq2SeqTrainingArguments

        return Seq2SeqTrainingArguments(predict_with_generate=True, **kwargs,
                                        **OmegaConf.to_container(cfg.task.generation, resolve=True))
    return TrainingArguments(**kwargs)


def _epoch_metrics(log_history: list[dict]) -> list[results.Epoch]:
    """Per-epoch evaluation entries, as logged (and restored on resume) by the engine."""
    return [results.Epoch(epoch=round(entry["epoch"], 4), step=entry["step"],
                          metrics={k.removeprefix("eval_"): v for k, v in entry.items() if k.startswith("eval_")})
            for entry in log_history if "eval_score" in entry]


def peak_memory_mb() -> float:
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def _base_record(cfg: DictConfig, seed: int, where: results.RunLocation) -> dict[str, Any]:
    """The fields every record has, complete or failed."""
    return {
        "task": cfg.task.name,
        "method": cfg.method.name,
        "budget": cfg.budget.name if cfg.method.uses_budget else None,
        "model": cfg.model.name,
        "tag": cfg.tag,
        "seed": seed,
        "identity": where.identity,
        "fingerprint": where.fingerprint,
        "config": OmegaConf.to_container(cfg, resolve=True),
        "env": environment(),
    }


def environment() -> dict[str, Any]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "versions": versions,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
        "threads": torch.get_num_threads(),
        "world_size": world()[1],
        "git_commit": _git_commit(),
    }


def _git_commit() -> str | None:
    try:
        here = Path(__file__).resolve().parent
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "") if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None
