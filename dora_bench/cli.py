"""`dora-bench`: a thin Hydra entry point: loop seeds, print a summary, map errors to exit codes."""
from __future__ import annotations

import os
import sys

import hydra
import numpy as np
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from dora_bench.errors import UserError
from dora_bench.results import RunResult, folder_name

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
    """What a sweeper maximises: the mean dev score over the run's seeds under the `report` rule."""
    failed = [r.seed for r in outcomes if not r.complete]
    if failed or not outcomes:
        return FailedRun(failed)
    return float(np.mean([r.select(report).score for r in outcomes]))


def moved_key_error(overrides: list[str]) -> str | None:
    """DoRA's hyperparameters moved from a global `dora:` block to `method.` like every other method's."""
    for override in overrides:
        key = override.split("=", 1)[0].lstrip("+~")
        if key.startswith("dora."):
            return f"{key} is now method.{key.removeprefix('dora.')} (DoRA's options live under method.)"
    return None


def main() -> None:
    if error := moved_key_error(sys.argv[1:]):
        print(f"dora-bench: error: {error}", file=sys.stderr)
        sys.exit(2)
    run_app()


@hydra.main(config_path="conf", config_name="config", version_base="1.3")
def run_app(cfg: DictConfig) -> float | FailedRun:
    from dora_bench.run import run_seed  # heavy imports after Hydra has parsed the command line

    seeds = [cfg.seed] if cfg.seed is not None else list(cfg.seeds)
    try:
        outcomes = [run_seed(cfg, int(seed)) for seed in seeds]
    except UserError as err:
        print(f"dora-bench: error: {err}", file=sys.stderr)
        sys.exit(2)
    if os.environ.get("RANK", "0") == "0":  # one summary per job, not one per process
        print(f"[dora-bench] {summarize(outcomes, cfg.report)}")
    for failed in (r for r in outcomes if not r.complete):
        print(f"[dora-bench] seed {failed.seed} failed: {failed.error}", file=sys.stderr)
    if any(not r.complete for r in outcomes) and HydraConfig.get().mode == RunMode.RUN:
        sys.exit(1)
    return objective(outcomes, cfg.report)


if __name__ == "__main__":
    main()
