"""`dora-bench-status`: where a sweep stands, every run it expects as done, running, failed or missing.

    dora-bench-status +experiment=table2                   # the experiment's whole grid
    dora-bench-status +experiment=table2 task=rte,mrpc     # narrowed as the sweep itself would be
    dora-bench-status task=cola method=lora,dora seed=1,2,3 results_dir=/scratch/results
    dora-bench-status --extend +experiment=cpu_glue           # cells at the edge of their grid, and what settles them

The expected runs are the jobs `dora-bench -m <same overrides>` launches (the experiment's
`hydra.sweeper.params`, with the command line's values taking precedence), each seed located through the
runner's own identity (`results.locate`): a result of another configuration never counts as done.
"""
from __future__ import annotations

import argparse
import shlex
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass

from hydra import compose, initialize_config_module
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from dora_bench import locks, results
from dora_bench.errors import UserError

STATES = ("done", "running", "failed", "missing")


@dataclass(frozen=True)
class RunStatus:
    job: tuple[str, ...]      # the job's overrides (its seed included when the sweep sets one)
    seed: int
    state: str
    detail: str               # result file, error line, or checkpoint age
    seconds: float            # wall time of a finished (done or failed) run
    device: str


def sweep_jobs(overrides: list[str]) -> list[list[str]]:
    """The override list of every job the basic sweeper launches for `dora-bench -m <overrides>`."""
    parser = OverridesParser.create()
    parsed = parser.parse_overrides(overrides)
    fixed = [o.input_line for o in parsed if not o.is_sweep_override()]
    swept = {o.get_key_element(): o.input_line for o in parsed if o.is_sweep_override()}
    hydra_cfg = compose(config_name="config", overrides=fixed, return_hydra_config=True).hydra
    sweeper = hydra_cfg.sweeper
    if hydra_cfg.runtime.choices.get("hydra/sweeper") != "basic":
        raise UserError("an Optuna search has no fixed grid to check; list its trials with dora-bench-tables --sweeps")
    given = {o.get_key_element() for o in parser.parse_overrides(fixed)}
    for key, values in (sweeper.get("params") or {}).items():  # a key the command line sets narrows the grid
        if key not in given and key not in swept:
            swept[key] = f"{key}={values}"
    jobs = BasicSweeper.split_arguments(parser.parse_overrides(list(swept.values())), None)
    return [fixed + list(job) for batch in jobs for job in batch] or [fixed]


def expected_runs(overrides: list[str]) -> list[tuple[tuple[str, ...], DictConfig, int]]:
    """(job overrides, config, seed) of every distinct run of the sweep, in launch order; jobs that differ only in
    keys outside the identity (Full FT and BitFit under budget=small and large) are one run. Call inside an
    initialised Hydra (initialize_config_module)."""
    runs: dict[str, tuple[tuple[str, ...], DictConfig, int]] = {}
    composed: dict[tuple[str, ...], DictConfig] = {}
    for job in sweep_jobs(overrides):
        # Jobs that differ only in their seed share one config (the seed enters only the identity): compose once.
        rest = tuple(o for o in job if o.split("=", 1)[0] != "seed")
        cfg = composed.get(rest) or composed.setdefault(rest, compose(config_name="config", overrides=list(rest)))
        given = [int(o.split("=", 1)[1]) for o in job if o.split("=", 1)[0] == "seed"]
        for seed in given or ([cfg.seed] if cfg.seed is not None else list(cfg.seeds)):
            runs.setdefault(results.fingerprint(results.identity(cfg, int(seed))), (tuple(job), cfg, int(seed)))
    return list(runs.values())


def seed_status(job: tuple[str, ...], seed: int, where: results.RunLocation, stale_s: float,
                now: float) -> RunStatus:
    """done / failed from the result file, running from the run's lock (its live holder named), else missing."""
    try:
        found = results.read_result(where.result)
    except ValueError:
        found = None
    ours = found is not None and found.fingerprint == where.fingerprint
    if ours and found.complete:
        return RunStatus(job, seed, "done", str(where.result), found.timing.wall_s or 0.0,
                         str(found.env.get("device", "?")))
    lock = locks.inspect(where.lock, stale_s)
    if lock is not None and lock.alive:
        holder = lock.holder.describe() if lock.holder else "a process starting now"
        return RunStatus(job, seed, "running", f"held by {holder}, heartbeat {lock.heartbeat_age_s:.0f} s ago",
                         0.0, "")
    if ours:
        detail = (found.error or "").splitlines()[0] if found.error else ""
        return RunStatus(job, seed, "failed", detail, found.timing.wall_s or 0.0, str(found.env.get("device", "?")))
    written = [p.stat().st_mtime for p in where.checkpoints.rglob("*")] if where.checkpoints.is_dir() else []
    notes = [f"checkpoint {(now - max(written)) / 60:.0f} min old: resumes when relaunched"] if written else []
    if lock is not None and lock.holder is not None:
        notes.append(f"lock left by {lock.holder.describe()}, gone ({lock.why}): taken over when relaunched")
    return RunStatus(job, seed, "missing", "; ".join(notes), 0.0, "")


def report(statuses: list[RunStatus]) -> str:
    counts = Counter(s.state for s in statuses)
    lines = [f"{s.state:8} {' '.join(s.job)}" + ("" if f"seed={s.seed}" in s.job else f" (seed {s.seed})")
             + (f"  {s.detail}" if s.detail else "")
             for s in sorted(statuses, key=lambda s: (STATES.index(s.state), s.job, s.seed))]
    spent: dict[str, float] = defaultdict(float)
    for s in statuses:
        if s.seconds:
            spent[s.device] += s.seconds
    time_text = ", ".join(f"{seconds / 3600:.2f} h on {device}" for device, seconds in sorted(spent.items()))
    lines.append(f"{len(statuses)} run(s): " + ", ".join(f"{counts[state]} {state}" for state in STATES)
                 + f"; time spent in finished runs: {time_text or '0 h'}")
    return "\n".join(lines)


def extensions(overrides: list[str]) -> str:
    """Each cell of the sweep (configurations that differ only in searched keys) whose chosen value sits at an edge
    of the values it tried, read from the results written so far (the tables' own rule, dora_bench/tables/edges.py),
    with the next value out and the command that runs it. Call inside an initialised Hydra."""
    from dora_bench.tables.cells import Cell
    from dora_bench.tables.edges import edges, next_value
    from dora_bench.tables.runs import Options, Run, Unusable

    opts = Options()
    cells: dict[str, Cell] = defaultdict(Cell)
    jobs: dict[object, tuple[str, ...]] = {}
    for job, cfg, seed in expected_runs(overrides):
        where = results.locate(cfg, seed)
        try:
            found = results.read_result(where.result)
        except ValueError:
            continue   # not run yet (or unreadable): nothing tried
        if found.fingerprint != where.fingerprint:
            continue
        run = Run(where.result, found)
        rest = {k: v for k, v in run.values.items() if k not in opts.searched and k != "seed"}
        try:
            cells[results.fingerprint(rest)].add(run, opts)
        except Unusable:
            continue
        jobs[where.result] = job
    lines = []
    for cell in cells.values():
        chosen = cell.chosen()
        for edge in edges(cell):
            first = chosen.runs[0].result
            name = f"{first.task} {first.method}" + (f"-{first.budget}" if first.budget else "")
            beyond = next_value(edge)
            if beyond is None:
                lines.append(f"{name}: {edge.describe()}; nothing lies beyond it (the key's own bound)")
                continue
            job = jobs[chosen.runs[0].path]
            seeds = sorted({r.result.seed for c in cell.configs.values() for r in c.runs} | set().union(
                *(c.failed for c in cell.configs.values())))
            kept = [o for o in job if o.split("=", 1)[0].lstrip("+~") not in (edge.key, "seed")]
            seed_part = [f"seed={','.join(map(str, seeds))}"] if any(o.startswith("seed=") for o in job) else []
            command = " ".join(shlex.quote(o) for o in ["dora-bench", "-m", *kept, f"{edge.key}={beyond}", *seed_part])
            lines += [f"{name}: {edge.describe()}; next out: {edge.key}={beyond}", f"  {command}"]
    lines.append(f"{sum(1 for line in lines if not line.startswith('  '))} searched value(s) at the edge of their grid"
                 f" in {len(cells)} cell(s) with results")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dora-bench-status", description=__doc__.splitlines()[0],
                                     epilog="Relaunch the same dora-bench -m command to run what is missing or failed "
                                            "(finished seeds are skipped, interrupted ones resume).")
    parser.add_argument("--extend", action="store_true",
                        help="instead of the runs' states: the cells whose chosen value of a searched key is the "
                             "smallest or largest tried, the next value out (same ratio) and the command that runs it")
    parser.add_argument("overrides", nargs="*", help="the sweep's overrides, as given to dora-bench -m")
    args = parser.parse_args(argv)
    try:
        with initialize_config_module("dora_bench.conf", version_base="1.3"):
            if args.extend:
                print(extensions(args.overrides))
                return 0
            now = time.time()
            statuses = [seed_status(job, seed, results.locate(cfg, seed), cfg.lock.stale_minutes * 60, now)
                        for job, cfg, seed in expected_runs(args.overrides)]
    except (UserError, HydraException, OmegaConfBaseException) as err:
        print(f"dora-bench-status: error: {str(err).strip().splitlines()[0]}", file=sys.stderr)
        return 2
    print(report(statuses))
    return 0


if __name__ == "__main__":
    sys.exit(main())
