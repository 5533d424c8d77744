"""Collecting runs into cells and picking each cell's configuration (the sweep choice), and aggregating over seeds.

Configurations that differ only in a searched key share a cell (row, task); the cell shows the one with the best
mean dev score over its seeds: the highest, or the lowest for a lower-is-better headline metric (answer NLL;
`results.ranking`, the rule every best in the project follows).
"""
from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dora_bench.results import ranking
from dora_bench.tables.runs import Key, Options, Run, Unusable, dev_score
from dora_bench.tables.spec import Table

SectionKey = tuple  # (model, label of the values that differ from the defaults; '' for none)


@dataclass
class Config:
    """One configuration in one cell (row, task): dev score and column values of each of its seeds."""
    searched: dict[str, Any]
    folder: Path                                                # where its (first) result file is
    scores: dict[int, float] = field(default_factory=dict)      # seed -> dev score
    values: dict[str, dict[int, float]] = field(default_factory=lambda: defaultdict(dict))  # column -> seed -> value
    failed: set[int] = field(default_factory=set)
    duplicates: list[Path] = field(default_factory=list)
    params: list[int] = field(default_factory=list)
    runs: list[Run] = field(default_factory=list)

    def add(self, run: Run, score: float | None, values: dict[str, float]) -> None:
        seed = run.result.seed
        if not run.complete:
            self.failed.add(seed)
        elif seed in self.scores:
            self.duplicates.append(run.path)   # one configuration and seed twice (e.g. under two tags)
        else:
            self.scores[seed] = score
            for label, value in values.items():
                if value is not None:   # None: the measurement does not apply to this run (no training)
                    self.values[label][seed] = value
            if run.result.params is not None:
                self.params.append(run.result.params.trainable_paper)
            self.runs.append(run)

    @property
    def still_failed(self) -> set[int]:
        """Failed seeds that no complete run of this configuration replaced."""
        return self.failed - set(self.scores)

    def mean_score(self) -> float:
        return float(np.mean(list(self.scores.values()))) if self.scores else math.nan


@dataclass
class Cell:
    """Every configuration of one (row, task) in a section; the table shows the chosen one."""
    configs: dict[str, Config] = field(default_factory=dict)
    lower_better: bool = False   # the headline metric's direction, from the results' recorded metric

    def add(self, run: Run, opts: Options, values: dict[str, float] | None = None) -> None:
        """A run joins its configuration (one per config_key); raises Unusable when a complete run has no dev score."""
        score = dev_score(run, opts) if run.complete else None
        if run.complete:
            self.lower_better = run.result.lower_is_better
        config = self.configs.setdefault(run.config_key(), Config(run.searched(opts), run.path.parent))
        config.add(run, score, values or {})

    def common_seeds(self) -> set[int]:
        """The seeds every configuration with a completed seed has (a search on seed 1 confirmed on seeds 1-3 at
        its pick: seed 1)."""
        scored = [set(c.scores) for c in self.configs.values() if c.scores]
        return set.intersection(*scored) if scored else set()

    def compared_score(self, config: Config) -> float:
        """What ranks a configuration: its mean dev score over the seeds all configurations share (so that a pick
        confirmed on more seeds is not judged against the others on other seeds), else over its own seeds."""
        seeds = self.common_seeds() or set(config.scores)
        return float(np.mean([config.scores[s] for s in seeds])) if config.scores else math.nan

    def ordered(self) -> list[Config]:
        """Best first: mean dev score (over the seeds all share) in the metric's direction, ties to more seeds;
        configurations without a completed seed last."""
        return sorted(self.configs.values(), key=lambda c: (-ranking(self.compared_score(c), self.lower_better),
                                                             -len(c.scores)))

    def chosen(self) -> Config | None:
        """Best mean dev score over seeds (ties: more seeds, then the first by path); None: no seed completed."""
        best = self.ordered()[0] if self.configs else None
        return best if best is not None and best.scores else None

    def failed(self) -> set[int]:
        chosen = self.chosen()
        return chosen.still_failed if chosen else set().union(*(c.still_failed for c in self.configs.values()))


@dataclass
class Section:
    """One model's part of a table, for one set of non-searched values: cells by (row key, task)."""
    cells: dict[tuple[Key, str], Cell] = field(default_factory=lambda: defaultdict(Cell))
    devices: set[str] = field(default_factory=set)
    problems: list[tuple[Path, str]] = field(default_factory=list)


def collect(table: Table, runs: list[Run], opts: Options) -> dict[SectionKey, Section]:
    """Runs are sorted by path, so when one configuration has a seed twice the untagged file comes first and wins."""
    sections: dict[SectionKey, Section] = defaultdict(Section)
    for run in runs:
        key = table.row_key(run) if run.result.task in table.tasks else None
        if key is None:
            continue
        section = sections[run.result.model, run.section_label(opts)]
        columns = [c for c in table.columns if c.task == run.result.task]
        try:
            values = {c.label: c.value(run, opts) for c in columns} if run.complete else {}
            section.cells[key, run.result.task].add(run, opts, values)
        except Unusable as err:
            section.problems.append((run.path, str(err)))
            continue
        section.devices.add(str(run.result.env.get("device", "?")))
    return sections


def aggregate(values: list[float], opts: Options) -> tuple[float, float | None, int] | None:
    if not values:
        return None
    array = np.asarray(values, dtype=float)
    center = float(np.median(array) if opts.agg == "median" else array.mean())
    std = float(array.std(ddof=opts.ddof)) if len(array) > opts.ddof else None
    return center, std, len(array)
