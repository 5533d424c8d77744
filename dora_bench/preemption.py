"""Preemption: SIGTERM or SIGUSR1 ends the current optimizer step, saves a checkpoint and exits with 75.

Slurm sends SIGTERM before it preempts a job or ends it at its time limit (and any signal you ask for with
`--signal=USR1@<seconds>`); `kill -TERM` does the same locally. While a job runs, `PreemptionWatch` catches
these signals and only records them; the engine's callback (engine.PreemptionCallback) lets the optimizer step
in flight finish, saves a complete checkpoint (trainables, optimizer, scheduler, RNG, method state, data
position), and the run stops without writing a result and exits with EXIT_PREEMPTED (75, sysexits.h
EX_TEMPFAIL: try again later). The next start of the same command resumes mid-epoch from that checkpoint and
ends with the result an uninterrupted run writes.

Under submitit (hydra/launcher=submitit_slurm or submitit_local), submitit catches its own preemption signal
(USR2, or $SUBMITIT_PREEMPT_SIGNAL) to checkpoint and requeue the job, and ignores SIGTERM. The watch catches
that signal too, saves the checkpoint first, then hands the signal to submitit's handler, which requeues the
job (hydra-submitit-launcher resubmits the same job) and exits; the requeued job resumes from the checkpoint.
Generally, a handler that was installed before the watch (submitit's, or an application's) is called after
the checkpoint is saved.
"""
from __future__ import annotations

import os
import signal
import sys
import threading
from types import FrameType
from typing import Callable, NoReturn

EXIT_PREEMPTED = 75
SIGNALS = (signal.SIGTERM, signal.SIGUSR1)
SUBMITIT_SIGNAL = "SUBMITIT_PREEMPT_SIGNAL"   # submitit's setting for the signal it checkpoints on (default USR2)


class Preempted(Exception):
    """Raised where a run stops after a preemption signal: the checkpoint (if training began) is complete."""

    def __init__(self, signum: int, checkpoint: str | None = None, step: int | None = None,
                 state: str = "stopped before training began; nothing to save"):
        self.signum, self.checkpoint, self.step = signum, checkpoint, step
        where = f"checkpoint {checkpoint} saved at optimizer step {step}; no result written" if checkpoint else state
        super().__init__(f"preempted by {signal.Signals(signum).name}: {where}")


def _submitit_signal() -> int:
    return getattr(signal, f"SIG{os.environ.get(SUBMITIT_SIGNAL, 'USR2')}", signal.SIGUSR2)


def _is_submitit_handler(handler) -> bool:
    owner = getattr(handler, "__self__", None)
    return owner is not None and type(owner).__module__.startswith("submitit")


class PreemptionWatch:
    """Records SIGTERM / SIGUSR1 (and submitit's preemption signal where submitit handles it) while a job runs.

    Use as a context manager around the job; `requested` is the first signal received (None before).
    Handlers are installed only from the main thread (Python allows no other); elsewhere the watch is inert.
    """

    def __init__(self):
        self.requested: int | None = None
        self._previous: dict[int, Callable | int | None] = {}

    def __enter__(self) -> PreemptionWatch:
        if threading.current_thread() is not threading.main_thread():
            return self
        signums = list(SIGNALS)
        extra = _submitit_signal()
        if extra not in signums and _is_submitit_handler(signal.getsignal(extra)):
            signums.append(extra)
        for signum in signums:
            self._previous[signum] = signal.signal(signum, self._record)
        return self

    def __exit__(self, *exc) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous if previous is not None else signal.SIG_DFL)
        self._previous.clear()

    def _record(self, signum: int, frame: FrameType | None) -> None:
        if self.requested is None:
            self.requested = signum
            print(f"[dora-bench] {signal.Signals(signum).name} received: stopping after this optimizer step "
                  "with a checkpoint", file=sys.stderr, flush=True)

    def check(self, state: str | None = None) -> None:
        """Between seeds, lock waits and other safe points: stop here if a signal came."""
        if self.requested is not None:
            raise Preempted(self.requested, **({"state": state} if state else {}))

    def exit(self, preempted: Preempted) -> NoReturn:
        """Say what was kept, hand the signal to the handler that was there before (submitit's requeues the job
        and exits), else exit with EXIT_PREEMPTED."""
        previous = self._previous.get(preempted.signum)
        then = (f"handing {signal.Signals(preempted.signum).name} to submitit, which requeues the job"
                if _is_submitit_handler(previous) else
                f"exit code {EXIT_PREEMPTED}; the same command resumes it")
        print(f"[dora-bench] {preempted}; {then}", file=sys.stderr, flush=True)
        if callable(previous):
            previous(preempted.signum, None)
        sys.exit(EXIT_PREEMPTED)
