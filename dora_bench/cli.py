"""`dora-bench`: a thin Hydra entry point: loop seeds, print a summary, map errors to exit codes."""
from __future__ import annotations

import os
import sys

import hydra
import numpy as np
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from dora_bench.errors import UserError
from dora_bench.hub import check_hub
from dora_bench.results import is_complete, result_path


def summarize(results: list[dict]) -> str:
    """One line: headline metric mean ± std (population, ddof 0) over completed seeds."""
    done = [r for r in results if r["status"] == "complete"]
    failed = [r["seed"] for r in results if r["status"] != "complete"]
    if not done:
        return f"no seed completed (failed: {failed})"
    first = done[0]
    name = f"{first['task']} {first['method']}" + (f" ({first['budget']})" if first["budget"] else "")
    scores = np.array([r["selected"]["score"] for r in done])
    params = first["params"]["trainable_paper"]
    line = (f"{name}: {first['metric']} {scores.mean():.2f} ± {scores.std(ddof=0):.2f} over {len(done)} "
            f"seed(s) {[r['seed'] for r in done]}; trainable params {params:,}")
    return line + (f"; FAILED seeds: {failed}" if failed else "")


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
def run_app(cfg: DictConfig) -> None:
    seeds = [cfg.seed] if cfg.seed is not None else list(cfg.seeds)
    try:
        if any(cfg.force or not is_complete(result_path(cfg, int(seed))) for seed in seeds):
            check_hub(cfg)  # before the heavy imports: an unreachable hub is reported within seconds
        from dora_bench.run import run_seed  # heavy imports after Hydra has parsed the command line

        outcomes = [run_seed(cfg, int(seed)) for seed in seeds]
    except UserError as err:
        print(f"dora-bench: error: {err}", file=sys.stderr)
        sys.exit(2)
    if os.environ.get("RANK", "0") == "0":  # one summary per job, not one per process
        print(f"[dora-bench] {summarize(outcomes)}")
    for failed in (r for r in outcomes if r["status"] != "complete"):
        print(f"[dora-bench] seed {failed['seed']} failed: {failed['error']}", file=sys.stderr)
    if any(r["status"] != "complete" for r in outcomes) and HydraConfig.get().mode == RunMode.RUN:
        sys.exit(1)


if __name__ == "__main__":
    main()
