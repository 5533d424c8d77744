"""What every cell of every table shows, computed once: the markdown, the CSV/JSON export, the comparison and the
cost views all read these records, so they cannot disagree."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dora_bench.tables.catalog import TABLES
from dora_bench.tables.cells import Cell, Config, Section, SectionKey, aggregate, collect
from dora_bench.tables.compare import Difference, difference, reference_row
from dora_bench.tables.edges import Edge, edges
from dora_bench.tables.paper import PaperRow
from dora_bench.tables.runs import Key, Options, Run
from dora_bench.tables.spec import Column, Table


@dataclass
class CellSummary:
    key: Key
    column: Column
    cell: Cell | None
    config: Config | None                 # the chosen configuration
    stats: tuple[float, float | None, int] | None
    failed: int
    value: float | None                   # what the table prints: the center, or the ratio of a ratio column
    paper: float | None                   # the paper's number (ratio columns: the paper's ratio)
    edges: list[Edge] = field(default_factory=list)
    difference: Difference | None = None
    lower_better: bool = False

    @property
    def verdict(self) -> str | None:
        return self.difference.verdict(self.lower_better) if self.difference else None


@dataclass
class RowSummary:
    key: Key
    paper: PaperRow | None
    params: list[int]
    cells: list[CellSummary]
    avg: float | None = None
    paper_avg: float | None = None


@dataclass
class SectionSummary:
    key: SectionKey
    section: Section
    rows: list[RowSummary]


def sort_key(key: Key) -> tuple:
    return tuple((v is None, isinstance(v, str), v if v is not None else 0) for v in key)


# Rows the paper lacks (a table of our own, like the decoder one) follow the paper's method order, the base model last.
METHOD_ORDER = ("full_ft", "bitfit", "h_adapter", "p_adapter", "lora", "adalora", "dora", "none")


def method_rank(key: Key) -> tuple:
    first = key[0] if key else None
    return (METHOD_ORDER.index(first) if first in METHOD_ORDER else len(METHOD_ORDER), sort_key(key))


def row_order(table: Table, keys: set[Key], paper: dict[Key, PaperRow]) -> list[Key]:
    """The paper's rows in its order (ours that map to each, else the paper's own key), then rows it lacks."""
    ordered: list[Key] = []
    for paper_key in paper:
        ours = sorted((k for k in keys if table.paper_key(k) == paper_key), key=sort_key)
        ordered += ours or [paper_key]
    return ordered + sorted((k for k in keys if table.paper_key(k) not in paper), key=method_rank)


def summarize(table: Table, section: Section, paper: dict[Key, PaperRow], opts: Options,
              reference: str | None) -> list[RowSummary]:
    keys = row_order(table, {k for k, _ in section.cells}, paper)
    chosen = {where: cell.chosen() for where, cell in section.cells.items()}
    stats = {(k, c.label): aggregate(list(chosen[k, c.task].values[c.label].values()), opts)
             for k in keys for c in table.columns if chosen.get((k, c.task))}

    def center(key: Key | None, column: Column) -> float | None:
        found = stats.get((key, column.label))
        return found[0] if found else None

    paper_reference = next((row for paper_key, row in paper.items() if paper_key[0] == "lora"), None)
    rows = []
    for key in keys:
        ref = paper.get(table.paper_key(key))
        counts = [n for (k, _), config in chosen.items() if k == key and config for n in config.params]
        cells = []
        for column in table.columns:
            cell = section.cells.get((key, column.task))
            config = chosen.get((key, column.task))
            ours, theirs = center(key, column), ref.values.get(column.paper) if ref else None
            if column.ratio:  # relative to LoRA (Table 9), ours and the paper's alike
                base = center(key if key[0] == "lora" else reference_row(key, keys, "lora"), column)
                ours = ours / base if ours is not None and base else None
                theirs = (theirs / paper_reference.values[column.paper]
                          if theirs is not None and paper_reference else None)
            direction = column.lower_better if column.lower_better is not None else bool(cell and cell.lower_better)
            summary = CellSummary(key, column, cell, config, None if column.ratio else stats.get((key, column.label)),
                                  len(cell.failed()) if cell else 0, ours, theirs, lower_better=direction)
            if cell is not None and table.searches and column.is_score:
                summary.edges = edges(cell)
            with_results = [k for k in keys if chosen.get((k, column.task))]
            against = reference_row(key, with_results, reference) if reference and column.is_score and config else None
            if against is not None:
                summary.difference = difference(config.values[column.label],
                                                chosen[against, column.task].values[column.label], against)
            cells.append(summary)
        row = RowSummary(key, ref, counts, cells)
        if table.avg:  # of the task cells, only when every task has one
            parts = [c.value for c in cells]
            row.avg = float(np.mean(parts)) if None not in parts else None
            row.paper_avg = ref.values.get("avg") if ref else None
        rows.append(row)
    return rows


@dataclass
class Study:
    """Everything the views render from: the runs read, the options, the paper's numbers, the reference method."""
    runs: list[Run]
    skipped: list[tuple[Path, str]]
    paper: dict[str, Any]
    opts: Options
    root: Path
    reference: str | None = "lora"
    tables: tuple[Table, ...] = TABLES

    _cache: dict = field(default_factory=dict, repr=False, compare=False)

    def sections(self, table: Table) -> dict[SectionKey, Section]:
        if ("sections", table.name) not in self._cache:
            self._cache["sections", table.name] = collect(table, self.runs, table.options(self.opts))
        return self._cache["sections", table.name]

    def summaries(self, table: Table) -> list[SectionSummary]:
        """Every section of the table, in order (sorted by (model, label)), each with its rows summarised."""
        if ("summaries", table.name) not in self._cache:
            paper = table.paper_reference(self.paper)
            sections = self.sections(table)
            self._cache["summaries", table.name] = [
                SectionSummary(key, sections[key], summarize(table, sections[key], paper, table.options(self.opts),
                                                             self.reference))
                for key in sorted(sections)]
        return self._cache["summaries", table.name]
