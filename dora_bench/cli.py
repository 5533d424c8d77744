"""`dora-bench`: a thin Hydra entry point: loop seeds, print a summary, map errors to exit codes."""
from __future__ import annotations

import dataclasses
import os
import re
import sys
import traceback
from typing import NoReturn

import hydra
import numpy as np
from hydra.core.hydra_config import HydraConfig
from hydra.errors import ConfigCompositionException, HydraException, MissingConfigException, OverrideParseException
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException, ValidationError

from dora_bench.errors import UserError
from dora_bench.hub import check_hub
from dora_bench.preemption import Preempted, PreemptionWatch
from dora_bench.results import RunResult, folder_name, locate
from dora_bench.schema import expected, unknown_key, validate
from dora_bench.storage import EXIT_STORAGE, StorageError

# The user's choice, read before main() sets the variable for Hydra: refusals show a traceback only when asked.
SHOW_TRACEBACK = os.environ.get("HYDRA_FULL_ERROR") == "1"

# conf/config.yaml names sweep job folders with it (Hydra's override_dirname can exceed a file name's length).
OmegaConf.register_new_resolver("dora_bench.folder_name", folder_name, replace=True)


def summarize(outcomes: list[RunResult], report: str) -> str:
    """One line: headline metric mean ± std (population, ddof 0) over completed seeds."""
    done = [r for r in outcomes if r.complete]
    failed = [r.seed for r in outcomes if not r.complete]
    if not done:
        return f"no seed completed (failed: {failed})"
    first = done[0]
    name = f"{first.task} {first.method}" + (f" ({first.budget})" if first.budget else "")
    scores = np.array([r.select(report).score for r in done])
    line = (f"{name}: {first.metric} {scores.mean():.2f} ± {scores.std(ddof=0):.2f} over {len(done)} "
            f"seed(s) {[r.seed for r in done]}; trainable params {first.params.trainable_paper:,}")
    return line + (f"; FAILED seeds: {failed}" if failed else "")


class FailedRun:
    """The objective of a run with a failed seed. Not a number on purpose: the Optuna sweeper records a
    non-float return as a failed trial and goes on, whereas NaN makes optuna 2.x raise and end the study."""

    def __init__(self, failed_seeds: list[int]):
        self.failed_seeds = failed_seeds

    def __repr__(self) -> str:
        return f"run failed (seeds {self.failed_seeds})"


def objective(outcomes: list[RunResult], report: str) -> float | FailedRun:
    """What a sweeper maximises: the mean dev score over the run's seeds under the `report` rule, negated for a
    lower-is-better metric (answer NLL), so that every search maximises (`direction: maximize`) whatever the metric."""
    failed = [r.seed for r in outcomes if not r.complete]
    if failed or not outcomes:
        return FailedRun(failed)
    mean = float(np.mean([r.select(report).score for r in outcomes]))
    return -mean if outcomes[0].lower_is_better else mean


def moved_key_error(overrides: list[str]) -> str | None:
    """DoRA's hyperparameters moved from a global `dora:` block to `method.` like every other method's."""
    for override in overrides:
        key = override.split("=", 1)[0].lstrip("+~")
        if key.startswith("dora."):
            return f"{key} is now method.{key.removeprefix('dora.')} (DoRA's options live under method.)"
    return None


def main() -> None:
    """The console script: Hydra's app, with every refusal (Hydra's composition errors included) printed as one
    line and exit code 2; the traceback too with HYDRA_FULL_ERROR=1."""
    if error := moved_key_error(sys.argv[1:]):
        refuse(error)
    os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra then raises its errors instead of printing them with exit code 1
    try:
        run_app()
    except Exception as err:
        if (message := refusal(err, sys.argv[1:])) is None:
            raise  # not bad input: a bug or a broken environment, with its traceback
        refuse(message)


@hydra.main(config_path="conf", config_name="config", version_base="1.3")
def run_app(cfg: DictConfig) -> float | FailedRun:
    try:  # every value, before the heavy imports and before anything is written
        validate(cfg)
    except (UserError, OmegaConfBaseException) as err:
        overrides = OmegaConf.to_container(HydraConfig.get().overrides.task, resolve=False)  # this job's, as typed
        refuse(refusal(err, overrides))  # exits here, inside a multirun job too

    seeds = [int(seed) for seed in ([cfg.seed] if cfg.seed is not None else cfg.seeds)]
    with PreemptionWatch() as watch:   # SIGTERM / SIGUSR1: checkpoint after the current step, exit 75
        try:
            if any(cfg.force or not locate(cfg, seed).existing() for seed in seeds):
                check_hub(cfg)  # before the heavy imports: an unreachable hub is reported within seconds
            from dora_bench.run import run_seeds  # heavy imports once the config is known to be good

            outcomes = run_seeds(cfg, seeds, watch)
        except UserError as err:
            refuse(str(err))
        except StorageError as err:   # a full disk or an unwritable folder: nothing partial was left
            print(f"dora-bench: error: {err} (complete checkpoints and results are kept; run again once it "
                  "can be written)", file=sys.stderr)
            sys.exit(EXIT_STORAGE)
        except Preempted as preempted:
            watch.exit(preempted)
    if os.environ.get("RANK", "0") == "0":  # one summary per job, not one per process
        if skipped := [seed for seed in seeds if seed not in {r.seed for r in outcomes}]:
            print(f"[dora-bench] seed(s) {skipped} left to the processes training them (lock.when_held=skip)")
        print(f"[dora-bench] {summarize(outcomes, cfg.report)}")
    for failed in (r for r in outcomes if not r.complete):
        print(f"[dora-bench] seed {failed.seed} failed: {failed.error}", file=sys.stderr)
    if any(not r.complete for r in outcomes) and HydraConfig.get().mode == RunMode.RUN:
        sys.exit(1)
    return objective(outcomes, cfg.report)


def refuse(message: str) -> NoReturn:
    if SHOW_TRACEBACK and sys.exc_info()[0] is not None:
        traceback.print_exc()
    print(f"dora-bench: error: {message}", file=sys.stderr)
    sys.exit(2)


def refusal(err: BaseException, overrides: list[str]) -> str | None:
    """One line for bad input (key, value, what is allowed); None for anything else."""
    cause = err
    while isinstance(cause, (OmegaConfBaseException, HydraException)):   # a resolver's refusal, as Hydra raised it
        cause = cause.__cause__ or cause.__context__
    if isinstance(cause, UserError):
        return str(cause)
    if isinstance(err, MissingConfigException):
        return missing_option(err)
    if isinstance(err, OverrideParseException):
        return f"cannot parse {err.override!r}: {first_line(err.message)}"
    cause = err.__cause__ if isinstance(err, ConfigCompositionException) else err
    if isinstance(cause, OmegaConfBaseException):
        return omegaconf_refusal(cause, overrides)
    if isinstance(err, HydraException):
        return first_line(str(err))
    return None


def missing_option(err: MissingConfigException) -> str:
    """`method=nope`: Hydra's many-line message as one line naming the choices."""
    group, _, option = (err.missing_cfg_file or "").rpartition("/")
    options = err.options or re.findall(r"^\t(\S+)$", str(err).split("Config search path")[0], re.MULTILINE)
    if not group:
        return first_line(str(err))
    return f"{group}={option} is not valid; allowed: {', '.join(sorted(options))}"


def omegaconf_refusal(err: OmegaConfBaseException, overrides: list[str]) -> str:
    key = err.full_key or ""
    if isinstance(err, (ConfigAttributeError, ConfigKeyError)) and dataclasses.is_dataclass(err.object_type):
        typed = next((o.lstrip("+~") for o in overrides if o.lstrip("+~").split("=", 1)[0] == key), key)
        return unknown_key(typed, key.rpartition(".")[0], err.object_type)
    if isinstance(err, ValidationError) and err.object_type is not None and err.key is not None:
        return f"{key}={err.value!r} is not valid; allowed: {expected(err.object_type, str(err.key))}"
    message = first_line(err.msg or str(err))
    if missing := re.search(r"Missing mandatory value: ?(\S+)", message):  # e.g. after ~task
        return f"{missing.group(1)} has no value; choose or set one ({missing.group(1)}=...)"
    return f"{key}: {message}" if key else message


def first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else text


if __name__ == "__main__":
    main()
