"""One (task, method, budget, seed): skip if done, build, train, evaluate, write the result file."""
from __future__ import annotations

import errno
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import time
import traceback
from statistics import median
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from transformers import TrainingArguments, set_seed
from transformers.integrations import get_available_reporting_integrations
from transformers.utils import is_torch_bf16_gpu_available, is_torch_tf32_available

from dora_bench import engine, locks, memory, results, schema, search_space
from dora_bench.engine import latest_checkpoint, load_method_state, optimizer_steps
from dora_bench.errors import UserError
from dora_bench.heads import head
from dora_bench.methods import apply_method, check_method
from dora_bench.models import load_model
from dora_bench.preemption import Preempted, PreemptionWatch
from dora_bench.storage import StorageError, writing
from dora_bench.tasks import get_task

PACKAGES = ("torch", "transformers", "peft", "adapters", "datasets", "hydra-core", "accelerate",
            "scikit-learn", "scipy", "rouge-score", "dora-bench")
# A write that failed for want of space, wherever it happened (a feature cache, a log): the run stops, it is no
# failed seed (the checkpoint, prediction, adapter and result writers name EACCES and the rest themselves)
FULL_OR_READ_ONLY = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS})
ACCELERATE_PRECISION = {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}
ACCELERATE_DYNAMO = ("ACCELERATE_DYNAMO_BACKEND", "ACCELERATE_DYNAMO_MODE", "ACCELERATE_DYNAMO_USE_FULLGRAPH",
                     "ACCELERATE_DYNAMO_USE_DYNAMIC")


def world() -> tuple[int, int]:
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def validate(cfg: DictConfig) -> None:
    """Every schema rule (dora_bench/schema.py), then what schemas cannot know: the processes and the file system."""
    schema.validate(cfg)
    t = cfg.trainer
    _check_hardware(t)
    _, world_size = world()
    if t.batch_size % world_size:
        raise UserError(f"trainer.batch_size={t.batch_size} is not divisible by the {world_size} processes")
    _check_writable(Path(cfg.results_dir))


def _check_hardware(t: DictConfig) -> None:
    """What the schema cannot know: this machine's GPU and installed trackers (the Trainer fails later and vaguely)."""
    on_gpu = torch.cuda.is_available() and not t.use_cpu
    if t.precision == "bf16" and on_gpu and not is_torch_bf16_gpu_available():
        raise UserError(f"trainer.precision=bf16 needs a GPU with bf16 (Ampere or newer), not "
                        f"{torch.cuda.get_device_name()}; allowed here: fp32, fp16")
    if t.report_to != "none" and t.report_to not in get_available_reporting_integrations():
        raise UserError(f"trainer.report_to={t.report_to} needs the {t.report_to} package, which is not installed "
                        f"(pip install {t.report_to})")


def _check_writable(folder: Path) -> None:
    """Fail before training, not after hours of it, when results cannot be saved (nothing is created)."""
    existing = folder.absolute()
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK):
        raise UserError(f"results_dir={str(folder)!r} is not writable ({existing} is not a writable folder)")


def run_seeds(cfg: DictConfig, seeds: list[int], watch: PreemptionWatch | None = None) -> list[results.RunResult]:
    """A job's seeds, each trained by one process only. A seed that another process trains now is named in one
    line and put last: then waited for (lock.when_held=wait: its holder's result is read, or the seed trained
    here if the holder stopped without one) or left to its holder (skip: not in the returned list). Processes
    of a multi-process run take the seeds in order and always wait (they must agree on what they train)."""
    multi_process = world()[1] > 1   # its processes must agree on what they train: in order, always waiting
    wait_now = multi_process or (len(seeds) == 1 and cfg.lock.when_held == "wait")
    outcomes: dict[int, results.RunResult | None] = {}
    for seed in seeds:
        outcomes[seed] = run_seed(cfg, seed, watch, wait=wait_now)
    if cfg.lock.when_held == "wait":
        for seed in [s for s, outcome in outcomes.items() if outcome is None]:
            outcomes[seed] = run_seed(cfg, seed, watch, wait=True)
    if watch is not None:   # a signal during the last evaluation or the result's write: the sweep stops here
        watch.check("this job's seeds are done (their results written); stopping before the next job")
    return [outcome for outcome in outcomes.values() if outcome is not None]


def run_seed(cfg: DictConfig, seed: int, watch: PreemptionWatch | None = None,
             wait: bool = True) -> results.RunResult | None:
    """Train and evaluate one seed; returns the result (read from disk if this configuration's seed is done), or
    None when another process trains it now and `wait` is false. Raises Preempted after a preemption signal
    (the checkpoint saved, no result written) and StorageError when a write fails (nothing partial left)."""
    validate(cfg)  # also before reusing a result: `report` is applied to it
    where = results.locate(cfg, seed)   # every path checked to lie under results_dir
    if (done := where.existing()) and not cfg.force:
        print(f"[dora-bench] seed {seed}: complete result exists, skipping ({where.result})")
        return done
    check = watch.check if watch is not None else lambda: None
    check()
    with locks.one_trainer(where, seed, cfg.lock, cfg.force, wait, check, *world()) as lock:
        if lock is None:
            return None
        if (done := where.existing()) and not cfg.force:   # its holder finished it while we waited
            print(f"[dora-bench] seed {seed}: complete result written by the process we waited for ({where.result})")
            return done
        started = time.time()
        try:
            result = _train(cfg, seed, where, watch)
        except (UserError, StorageError, Preempted):
            raise
        except Exception as err:  # one seed failing must not lose the others: record it and go on
            if isinstance(err, OSError) and err.errno in FULL_OR_READ_ONLY:  # not the seed's fault: stop
                raise StorageError(err.filename or where.result.parent, err) from err
            result = results.RunResult(status="failed", **_base_record(cfg, seed, where),
                                       error=f"{type(err).__name__}: {err}", traceback=traceback.format_exc(limit=20))
        result.timing.wall_s = time.time() - started
        if world()[0] == 0:
            if lock is not True and lock.lost:
                print(f"[dora-bench] seed {seed}: another process took the lock over while this one trained; "
                      f"its result is left to that process", file=sys.stderr)
                return None
            results.write_result(where.result, result)
            if result.complete and not cfg.keep_checkpoints:   # only once the result is safe
                shutil.rmtree(where.checkpoints, ignore_errors=True)
        return result


def _train(cfg: DictConfig, seed: int, where: results.RunLocation,
           watch: PreemptionWatch | None = None) -> results.RunResult:
    task = get_task(cfg.task.family)
    raw, fingerprint = task.load(cfg)
    set_seed(seed)  # before the head and the adapters are initialised
    model, tokenizer = load_model(cfg.model, cfg.task.head, cfg.cache_dir, **task.model_kwargs(cfg))
    check_method(model, cfg)  # before any data is tokenised
    data = task.prepare(cfg, tokenizer, raw, fingerprint)
    _, world_size = world()
    t = cfg.trainer
    total_steps = optimizer_steps(len(data.train), t.batch_size, world_size, t.grad_accum, t.epochs)
    handle = apply_method(model, cfg, total_steps)

    out_dir = where.checkpoints
    args = _training_arguments(cfg, seed, out_dir, world_size, logs=where.logs)
    trainer_cls = getattr(engine, head(cfg.task.head).trainer)
    trainer = trainer_cls(model=handle.model, args=args, train_dataset=data.train, eval_dataset=data.eval_sets,
                          data_collator=data.collator,
                          processing_class=tokenizer, **data.trainer_kwargs)
    trainer.setup_bench(handle, data.evaluate, where.fingerprint, predictions_dir=where.predictions,
                        preemption=watch, save_steps=t.get("save_steps"))
    resume = None if cfg.force else latest_checkpoint(out_dir, where.fingerprint)
    if resume is None and out_dir.exists():  # unfinished checkpoints (or force=true): start afresh
        shutil.rmtree(out_dir, ignore_errors=True)
    elif resume:
        print(f"[dora-bench] seed {seed}: resuming from {resume}")
        load_method_state(handle, resume)  # the Trainer restores weights, optimizer and schedule itself
    memory.reset_peak()
    if handle.trains:
        train_metrics = trainer.train(resume_from_checkpoint=resume).metrics
        trainer.raise_if_preempted()
        if trainer.state.global_step != total_steps:
            raise RuntimeError(f"planned {total_steps} optimizer steps but the trainer took {trainer.state.global_step}")
    else:  # an evaluation-only reference (method=none): one evaluation of the model as loaded, at step 0
        trainer.state.epoch, train_metrics, total_steps = 0.0, {}, 0
        trainer.evaluate()
    step_times = trainer.step_timer.step_times()

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
        timing=results.Timing(train_runtime_s=train_metrics.get("train_runtime"),
                              step_time_median_s=median(step_times or [float("nan")]),
                              eval_runtime_s=trainer.eval_seconds[-1] if trainer.eval_seconds else None,
                              train_samples_per_s=train_metrics.get("train_samples_per_second"),
                              peak_memory_mb=memory.peak_mb(), peak_memory_scope="run",
                              train_tokens=trainer.train_tokens,
                              train_tokens_per_s=trainer.train_tokens / sum(step_times) if step_times else None),
        data=fingerprint,
    )
    try:
        record.select(cfg.report)
    except ValueError as err:
        raise RuntimeError(f"no usable evaluation: {err}") from None
    if world()[0] == 0 and handle.export is not None:
        adapter_dir = where.result.with_suffix(".adapter")
        with writing(adapter_dir, remove_on_failure=True):
            adapter_dir.mkdir(parents=True, exist_ok=True)
            handle.export(str(adapter_dir))
        record.adapter_dir = str(adapter_dir)
        record.adapter_bytes = sum(f.stat().st_size for f in adapter_dir.rglob("*") if f.is_file())
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


def _own_accelerate_env(t: DictConfig) -> None:
    """TrainingArguments passes precision and compilation to accelerate in process-wide environment variables
    and never clears them: a bf16 or compiled job would make every later job of a multirun (one process) bf16
    or compiled too. The config decides, over leftovers and over `accelerate launch` flags alike."""
    os.environ["ACCELERATE_MIXED_PRECISION"] = ACCELERATE_PRECISION[t.precision]
    if not t.compile:
        for name in ACCELERATE_DYNAMO:
            os.environ.pop(name, None)


def accelerator_arguments(t: DictConfig) -> dict[str, Any]:
    """TrainingArguments for trainer.precision, tf32, compile and use_cpu, with accelerate's environment set to
    match (the benchmark scripts use them too)."""
    _own_accelerate_env(t)
    return {
        # bf16 without CUDA is CPU autocast, which the Trainer only accepts as use_cpu (a CUDA GPU without
        # bf16 is refused: by validate() in runs, by TrainingArguments in the benchmarks).
        "use_cpu": t.use_cpu or (t.precision == "bf16" and not torch.cuda.is_available()),
        "bf16": t.precision == "bf16",
        "fp16": t.precision == "fp16",
        "tf32": t.tf32 if is_torch_tf32_available() else None,  # the Trainer refuses tf32 on hardware without it
        "torch_compile": t.compile,
    }


def _training_arguments(cfg: DictConfig, seed: int, out_dir: Path, world_size: int,
                        logs: Path | None = None) -> TrainingArguments:
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
        disable_tqdm=not t.progress_bar,
        report_to=t.report_to,
        logging_dir=str(logs or logs_dir(cfg, seed)),
        save_safetensors=True,
        ddp_find_unused_parameters=False,
        # non-reentrant checkpointing: adapters behind frozen embeddings still get gradients (peft issue 1142)
        gradient_checkpointing=t.gradient_checkpointing,
        gradient_checkpointing_kwargs={"use_reentrant": False} if t.gradient_checkpointing else None,
        **accelerator_arguments(t),
    )
    if head(cfg.task.head).predict_with_generate:
        from transformers import Seq2SeqTrainingArguments

        return Seq2SeqTrainingArguments(predict_with_generate=True, **kwargs,
                                        **OmegaConf.to_container(cfg.task.generation, resolve=True))
    return TrainingArguments(**kwargs)


def logs_dir(cfg: DictConfig, seed: int) -> Path:
    """Where trackers that write files (TensorBoard) log a seed: beside its result, kept with it."""
    return results.locate(cfg, seed).logs


def _epoch_metrics(log_history: list[dict]) -> list[results.Epoch]:
    """Per-epoch evaluation entries, as logged (and restored on resume) by the engine."""
    return [results.Epoch(epoch=round(entry["epoch"], 4), step=entry["step"],
                          metrics={k.removeprefix("eval_"): v for k, v in entry.items() if k.startswith("eval_")})
            for entry in log_history if "eval_score" in entry]


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
        "search_space": search_space.recorded(),
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
        "cpu": cpu_model(),
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "threads": torch.get_num_threads(),
        "world_size": world()[1],
        "git_commit": _git_commit(),
    }


def cpu_model() -> dict[str, str]:
    """What a CPU run's last digits depend on (kernels differ between CPU models): the model name and, because a
    VM may show only "AMD EPYC", the vendor, family, model and stepping numbers (Linux /proc/cpuinfo; elsewhere
    what platform knows)."""
    fields = {"model name": "model_name", "vendor_id": "vendor", "cpu family": "family", "model": "model",
              "stepping": "stepping"}
    found: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if not line.strip():
                    break   # the first processor's block describes them all
                key, _, value = line.partition(":")
                if key.strip() in fields:
                    found[fields[key.strip()]] = value.strip()
    except OSError:
        pass
    return found or {"model_name": platform.processor() or platform.machine()}


def _git_commit() -> str | None:
    try:
        here = Path(__file__).resolve().parent
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "") if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None
