"""A table as data: which task and value fill each column, how a result file picks its row, which section of
paper.yaml holds the reference numbers. The tables themselves are defined in `catalog/` (one file per family)."""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable

from dora_bench.tables.paper import PaperRow
from dora_bench.tables.runs import Key, Options, Run


@dataclass(frozen=True)
class Column:
    label: str
    task: str
    value: Callable[[Run, Options], float]
    paper: str | None = None        # column name in the paper.yaml section
    digits: int = 2
    ratio: bool = False             # shown relative to the LoRA row (Table 9)
    # The column's own direction when it is not the headline's (a decoder table chooses on the validation NLL, lower
    # is better, and also shows exact match, higher is better); None: the headline metric's
    lower_better: bool | None = None

    @property
    def is_score(self) -> bool:
        """A dev metric per seed (not a measurement or a ratio): searched over, compared, plotted against cost."""
        return getattr(self.value, "per_epoch", False) and not self.ratio


@dataclass(frozen=True)
class Table:
    name: str
    title: str
    key_headers: tuple[str, ...]
    row_key: Callable[[Run], Key | None]
    columns: tuple[Column, ...]
    paper_section: str | None       # None: a table of our own, with no paper column
    paper_rows: Callable[[dict], dict[Key, PaperRow]]
    paper_key: Callable[[Key], Key] = lambda key: key   # our row key -> the paper's row key
    avg: bool = False
    params: bool = False    # rows are methods with parameter counts: a Params column and the cost view
    notes: tuple[str, ...] = ()
    searches: bool = True   # False: a measurement, not a dev score; no configuration is picked over another

    @property
    def has_paper(self) -> bool:
        return self.paper_section is not None

    def paper_reference(self, paper: dict) -> dict[Key, PaperRow]:
        return self.paper_rows(paper[self.paper_section]) if self.has_paper else {}

    @property
    def tasks(self) -> set[str]:
        return {c.task for c in self.columns}

    def options(self, opts: Options) -> Options:
        return opts if self.searches else replace(opts, searched=())
