"""The one training engine: HF Trainer wired to the method interface and the task's evaluation."""
from __future__ import annotations

import json
import math
import shutil
import signal
import sys
import time
from pathlib import Path

import torch
from transformers import Seq2SeqTrainer, Trainer, TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from dora_bench.checkpoints import has_trainables, load_trainables, save_trainables, trains_everything
from dora_bench.methods.base import MethodHandle
from dora_bench.preemption import Preempted, PreemptionWatch
from dora_bench.storage import writing

METHOD_STATE = "method_state.pt"
COMPLETE_MARK = "checkpoint_complete.json"


class NonFiniteLoss(RuntimeError):
    pass


class MethodStepCallback(TrainerCallback):
    """Runs the method's hook after every optimizer step, before gradients are cleared."""

    def __init__(self, handle: MethodHandle):
        self.handle = handle

    def on_optimizer_step(self, args, state, control, **kwargs):
        self.handle.after_optimizer_step(state.global_step + 1)  # steps count from 1


class StepTimer(TrainerCallback):
    """Wall time of every optimizer step; CUDA events on a GPU, so the hot path never waits on the device."""

    def __init__(self):
        self.cuda = torch.cuda.is_available()
        self.marks: list = []

    def _mark(self):
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            return event
        return time.perf_counter()

    def on_step_begin(self, args, state, control, **kwargs):
        self._begin = self._mark()

    def on_step_end(self, args, state, control, **kwargs):
        self.marks.append((self._begin, self._mark()))

    def step_times(self) -> list[float]:
        if self.cuda:
            torch.cuda.synchronize()
            return [begin.elapsed_time(end) / 1000 for begin, end in self.marks]
        return [end - begin for begin, end in self.marks]


class CheckpointCallback(TrainerCallback):
    """After the Trainer saved a checkpoint: the method's state, then the completion mark, then the older
    checkpoints go. Public hooks only, so a transformers upgrade cannot silently skip it."""

    def __init__(self, handle: MethodHandle, run_fingerprint: str):
        self.handle = handle
        self.run_fingerprint = run_fingerprint

    def on_save(self, args, state, control, **kwargs):
        if not args.should_save:
            return
        folder = Path(args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"
        with writing(folder, remove_on_failure=True):
            torch.save(self.handle.state_dict(), folder / METHOD_STATE)
            # The mark goes last: a checkpoint without it was interrupted and is never resumed from.
            (folder / COMPLETE_MARK).write_text(json.dumps({"global_step": state.global_step,
                                                            "run": self.run_fingerprint}))
        for old in Path(args.output_dir).glob(f"{PREFIX_CHECKPOINT_DIR}-*"):
            if old != folder:   # only once the new one is complete: a failed write keeps the previous one
                shutil.rmtree(old, ignore_errors=True)


class StepCheckpoints(TrainerCallback):
    """`trainer.save_steps`: a checkpoint every N optimizer steps too, besides the epoch ends (long epochs)."""

    def __init__(self, every: int):
        self.every = every

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step % self.every == 0 and not float(state.epoch).is_integer():   # epoch ends save anyway
            control.should_save = True


class PreemptionCallback(TrainerCallback):
    """After a preemption signal: the step in flight ends, a checkpoint is saved and training stops.

    Mid-epoch the checkpoint is saved at once and the epoch end's evaluation and save are cancelled (a partial
    epoch has no score; the resumed run evaluates it whole). On an epoch's last step the epoch's own evaluation
    and checkpoint come first. A signal during an evaluation stops training after the epoch's checkpoint.
    Every process of a multi-process run stops at the same step (the flag is reduced over processes)."""

    def __init__(self, watch: PreemptionWatch):
        self.watch = watch
        self.stopped_at: int | None = None   # the optimizer step whose checkpoint is the last

    def _requested(self, args) -> bool:
        flag = self.watch.requested is not None
        if args.world_size > 1 and torch.distributed.is_available() and torch.distributed.is_initialized():
            tensor = torch.tensor([int(flag)], device=args.device)
            torch.distributed.all_reduce(tensor, op=torch.distributed.ReduceOp.MAX)
            flag = bool(tensor.item())
            if flag and self.watch.requested is None:   # another process got the signal
                self.watch.requested = signal.SIGTERM
        return flag

    def on_step_end(self, args, state, control, **kwargs):
        if self.stopped_at is None and self._requested(args):
            self.stopped_at = state.global_step
            control.should_training_stop = True
            if not float(state.epoch).is_integer():   # mid-epoch: the epoch end will not come
                control.should_save = True

    def on_epoch_end(self, args, state, control, **kwargs):
        if self.stopped_at is not None and not float(state.epoch).is_integer():
            control.should_evaluate = control.should_save = False   # saved at the step already

    def on_save(self, args, state, control, **kwargs):
        if self.watch.requested is not None:
            self.stopped_at = state.global_step
            control.should_training_stop = True



def load_method_state(handle: MethodHandle, checkpoint: str | Path) -> None:
    """The method's own state (masks, importance, allocator) from a checkpoint; call before
    `trainer.train(resume_from_checkpoint=...)`, which restores weights, optimizer and schedule."""
    state_file = Path(checkpoint) / METHOD_STATE
    handle.load_state_dict(torch.load(state_file, weights_only=True))


class CpuCostWarning(TrainerCallback):
    """One warning line when a big model (RoBERTa-base, BART-base) trains on a CPU: the planned optimizer steps
    and the time of the first steps extrapolated to all of them, so nobody waits days by accident."""

    MIN_PARAMS = 50_000_000  # MiniLM (22.7M) trains on a CPU in minutes; RoBERTa-base (125M) takes days
    MEASURED_STEPS = 3

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.params = sum(p.numel() for p in model.parameters())
        self.active = args.device.type == "cpu" and state.is_world_process_zero and self.params >= self.MIN_PARAMS
        self.first_step, self.started = state.global_step, time.perf_counter()  # a resumed run starts later

    def on_step_end(self, args, state, control, **kwargs):
        done = state.global_step - self.first_step
        if not self.active or done != self.MEASURED_STEPS:
            return
        per_step = (time.perf_counter() - self.started) / done
        hours = per_step * (state.max_steps - self.first_step) / 3600
        print(f"[dora-bench] warning: a {self.params / 1e6:.0f}M-parameter model is training on a CPU: "
              f"{state.max_steps:,} optimizer steps planned, the first {done} took {per_step:.1f} s each, so "
              f"training takes about {hours:,.1f} h ({hours / 24:.1f} days; evaluation not included); "
              "use a GPU, or model=minilm on a CPU", file=sys.stderr, flush=True)


class BenchTrainerMixin:
    """Adds the method's extra loss, task-defined evaluation and (by callback) method state in checkpoints."""

    def setup_bench(self, handle: MethodHandle, evaluate_fn, run_fingerprint: str, predictions_dir: Path | None = None,
                    preemption: PreemptionWatch | None = None, save_steps: int | None = None):
        self.handle = handle
        self.predictions_dir = predictions_dir  # where tasks that generate text keep their latest predictions
        self.evaluate_fn = evaluate_fn
        self.run_fingerprint = run_fingerprint
        self.step_timer = StepTimer()
        self.eval_seconds: list[float] = []
        self._tokens = 0  # non-padding input tokens trained on (a tensor once counting starts: no sync per batch)
        self.add_callback(MethodStepCallback(handle))
        self.add_callback(self.step_timer)
        self.add_callback(CheckpointCallback(handle, run_fingerprint))
        self.add_callback(CpuCostWarning())
        if save_steps:
            self.add_callback(StepCheckpoints(save_steps))
        self.preemption = PreemptionCallback(preemption) if preemption is not None else None
        if self.preemption is not None:
            self.add_callback(self.preemption)

    def raise_if_preempted(self) -> None:
        """After `train()`: a preemption stopped it early, with the last checkpoint complete. (A signal during
        the last step or evaluation lets the run finish: its result is written, the job stops after it.)"""
        if self.preemption is None or self.preemption.stopped_at is None or self.state.global_step >= self.state.max_steps:
            return
        step = self.preemption.stopped_at
        folder = Path(self.args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{step}"
        raise Preempted(self.preemption.watch.requested, str(folder), step)

    # ----- checkpoints: what trains, written through the Trainer's own hooks --------------------------------
    def _save_checkpoint(self, model, trial):
        folder = Path(self._get_output_dir(trial=trial)) / f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
        with writing(folder, remove_on_failure=True):   # a full disk: the partial checkpoint goes, the last stays
            super()._save_checkpoint(model, trial)

    def _save(self, output_dir: str | None = None, state_dict=None):
        if trains_everything(self.model):
            return super()._save(output_dir, state_dict)   # Full FT: the whole model is what trains
        save_trainables(self.model, Path(output_dir or self.args.output_dir))

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        if has_trainables(resume_from_checkpoint):
            load_trainables(model if model is not None else self.model, resume_from_checkpoint)
            return
        super()._load_from_checkpoint(resume_from_checkpoint, model)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        loss, outputs = super().compute_loss(model, inputs, return_outputs=True,
                                             num_items_in_batch=num_items_in_batch)
        extra = self.handle.extra_loss()
        if extra is not None:
            loss = loss + extra / self._extra_loss_share(num_items_in_batch)
        return (loss, outputs) if return_outputs else loss

    def _extra_loss_share(self, num_items_in_batch) -> int:
        """Micro-batches the extra loss (DoRA's DEM) is split over, so that it counts once per optimizer step.

        Trainer.training_step divides the loss by the accumulation steps itself, except for models that
        normalise by ``num_items_in_batch`` (the tokens of the whole accumulation window) in their forward;
        then each micro-batch loss is already a share and the extra term must be split here.
        """
        trainer_divides = (not self.model_accepts_loss_kwargs or num_items_in_batch is None
                           ) and self.compute_loss_func is None
        return 1 if trainer_divides else self.current_gradient_accumulation_steps

    def training_step(self, model, inputs, num_items_in_batch=None):
        mask = inputs.get("attention_mask")
        self._tokens = self._tokens + (mask.sum() if mask is not None else inputs["input_ids"].numel())
        loss = super().training_step(model, inputs, num_items_in_batch)
        if self.state.global_step % max(self.args.logging_steps, 1) == 0 and not torch.isfinite(loss).all():
            raise NonFiniteLoss(
                f"non-finite loss {loss.item()} at optimizer step {self.state.global_step + 1} "
                f"(learning rate {self._get_learning_rate():.3g})"
            )
        return loss

    @property
    def train_tokens(self) -> int:
        """Non-padding input tokens this process trained on (the throughput's numerator)."""
        return int(self._tokens)

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs:  # a training-step entry: what the method is doing at this step goes with it
            logs = {**logs, **self.handle.signals()}
        super().log(logs, start_time)

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix="eval"):
        started = time.perf_counter()
        with torch.inference_mode():
            metrics = {f"{metric_key_prefix}_{k}": v for k, v in self.evaluate_fn(self).items()}
        self.eval_seconds.append(time.perf_counter() - started)
        self.log(metrics)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        return metrics


class BenchTrainer(BenchTrainerMixin, Trainer):
    pass


class BenchSeq2SeqTrainer(BenchTrainerMixin, Seq2SeqTrainer):
    pass


def latest_checkpoint(output_dir: Path, run_fingerprint: str) -> str | None:
    """The newest checkpoint whose write finished (see COMPLETE_MARK) and that this same run wrote."""
    def resumable(folder: Path) -> bool:
        try:
            return json.loads((folder / COMPLETE_MARK).read_text())["run"] == run_fingerprint
        except (OSError, ValueError, KeyError):
            return False

    done = [p for p in Path(output_dir).glob(f"{PREFIX_CHECKPOINT_DIR}-*") if resumable(p)]
    if not done:
        return None
    return str(max(done, key=lambda p: int(p.name.rsplit("-", 1)[1])))


def optimizer_steps(num_samples: int, batch_size: int, world_size: int, grad_accum: int, epochs: int) -> int:
    """Optimizer steps the Trainer will take (its own arithmetic: batches per epoch, then accumulation)."""
    per_device = batch_size // world_size
    batches = math.ceil(num_samples / (per_device * world_size))
    return epochs * max(batches // grad_accum + int(batches % grad_accum > 0), 1)
