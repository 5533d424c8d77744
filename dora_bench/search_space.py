"""The search space an Optuna sweep draws its trials from, recorded in every trial's result file.

A trial's own config holds only the values drawn for it; whether a chosen value sits at the edge of what was
searched needs the space (the experiment's `hydra.sweeper.params`, with the command line's sweep expressions
replacing them, as the sweeper itself merges them). The sweep-level config has both, the jobs do not: a Hydra
callback (conf/config.yaml, `hydra.callbacks`) reads them when the multirun starts and hands them to the jobs
in an environment variable, which every launcher passes on (in-process, joblib, submitit).

Recorded per key: `{"interval": [low, high], "log": bool, "text": ...}` or `{"choice": [values], "text": ...}`.
"""
from __future__ import annotations

import json
import os
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, RangeSweep
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

ENV = "DORA_BENCH_SEARCH_SPACE"


def space_of(params: dict[str, str], overrides: list[str]) -> dict[str, dict[str, Any]]:
    """Each searched key's range: the sweeper's params, then the command line's sweep expressions over them
    (a plain value on the command line takes the key out of the search, as it does for the sweeper)."""
    parser = OverridesParser.create()
    merged = {key: f"{key}={value}" for key, value in params.items()}
    for override in parser.parse_overrides(overrides):
        key = override.get_key_element()
        if override.is_sweep_override():
            merged[key] = override.input_line
        else:
            merged.pop(key, None)
    space = {}
    for key, line in merged.items():
        sweep = parser.parse_override(line).value()
        text = line.split("=", 1)[1]
        if isinstance(sweep, IntervalSweep):
            space[key] = {"interval": [sweep.start, sweep.end], "log": "log" in sweep.tags, "text": text}
        elif isinstance(sweep, RangeSweep):
            space[key] = {"choice": list(range(sweep.start, sweep.stop, sweep.step)) if isinstance(sweep.start, int)
                          else _float_range(sweep), "text": text}
        elif isinstance(sweep, ChoiceSweep):
            space[key] = {"choice": list(sweep.list), "text": text}
    return space


def _float_range(sweep: RangeSweep) -> list[float]:
    values, value = [], sweep.start
    while value < sweep.stop:
        values.append(value)
        value += sweep.step
    return values


class RecordSearchSpace(Callback):
    """Hands an Optuna sweep's search space to its trials (ENV); any other sweep clears it."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        if config.hydra.runtime.choices.get("hydra/sweeper") != "optuna":
            os.environ.pop(ENV, None)
            return
        params = OmegaConf.to_container(config.hydra.sweeper.get("params") or {}, resolve=False)
        space = space_of({k: str(v) for k, v in params.items()}, list(config.hydra.overrides.task))
        os.environ[ENV] = json.dumps(space)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        os.environ.pop(ENV, None)


def recorded() -> dict[str, dict[str, Any]] | None:
    """The space of the Optuna sweep this process runs trials of; None outside one."""
    text = os.environ.get(ENV)
    return json.loads(text) if text else None
