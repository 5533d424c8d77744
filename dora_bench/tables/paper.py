"""The paper's numbers (dora_bench/paper.yaml, transcribed from the paper), parsed into rows keyed as ours are."""
from __future__ import annotations

from dataclasses import dataclass
from importlib.resources import files
from typing import Any, Callable

import yaml

from dora_bench.tables.runs import Key


@dataclass(frozen=True)
class PaperRow:
    values: dict[str, float]
    params: str | None = None


def load_paper() -> dict[str, Any]:
    return yaml.safe_load(files("dora_bench").joinpath("paper.yaml").read_text(encoding="utf-8"))


def rows_by(key: Callable[[dict], Key]) -> Callable[[dict], dict[Key, PaperRow]]:
    """A parser of a paper.yaml section whose rows carry `scores` in the order of its `columns`."""
    def parse(section: dict) -> dict[Key, PaperRow]:
        return {key(row): PaperRow(dict(zip(section["columns"], row["scores"])), row.get("params"))
                for row in section["rows"]}
    return parse


def efficiency_rows(section: dict) -> dict[Key, PaperRow]:
    """Table 9's section: {method: [values in the order of its columns]}."""
    return {(method,): PaperRow(dict(zip(section["columns"], values))) for method, values in section["rows"].items()}
