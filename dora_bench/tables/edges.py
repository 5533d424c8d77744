"""Edge of the search: a cell whose chosen value of a searched key is the smallest or largest value tried.

Then the best may lie beyond what was tried, and the table ranks methods by where the grid ended. The rules:

- A grid (no recorded search space): the chosen configuration's value is the smallest or the largest of the
  distinct numeric values its cell tried (every configuration of the cell counts as tried, failed ones too: a
  diverging larger rate does bracket the optimum). A key with one value tried was fixed, not searched: not marked.
  Non-numeric values have no order: not marked.
- An Optuna trial (its result records the space, search_space.py): a `choice(...)` key at the first or last
  listed value; an `interval(...)` key within the outer EDGE_FRACTION of the range, measured on a log scale for
  `tag(log, ...)`. A value can never equal a continuous bound, so "at the edge" is "in the outer tenth".

`next_value` is the extension that would settle a grid edge: one step further out at the ratio of the two
outermost values tried (additive where a ratio has no meaning: a value <= 0).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from dora_bench.results import value_text
from dora_bench.tables.cells import Cell

EDGE_FRACTION = 0.1


@dataclass(frozen=True)
class Edge:
    key: str
    side: str                 # "low" | "high"
    value: Any                # the chosen value
    tried: tuple              # the distinct values tried in the cell, sorted
    space: str | None = None  # the recorded Optuna space of the key, when the bound rule applied

    def describe(self) -> str:
        where = "smallest" if self.side == "low" else "largest"
        if self.space is None:
            return (f"{self.key}={value_text(self.value)} is the {where} of the {len(self.tried)} values tried "
                    f"({', '.join(map(value_text, self.tried))})")
        end = "lower" if self.side == "low" else "upper"
        return f"{self.key}={value_text(self.value)} is at the {end} end of the search space {self.space}"


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def _bound_side(value: float, space: dict[str, Any]) -> str | None:
    if "choice" in space:
        listed = sorted(n for n in map(_number, space["choice"]) if n is not None)
        if len(listed) < 2:
            return None
        return "low" if value <= listed[0] else "high" if value >= listed[-1] else None
    low, high = map(float, space["interval"])
    scale = math.log if space.get("log") and low > 0 and value > 0 else (lambda x: x)
    if high <= low:
        return None
    position = (scale(value) - scale(low)) / (scale(high) - scale(low))
    return "low" if position <= EDGE_FRACTION else "high" if position >= 1 - EDGE_FRACTION else None


def edges(cell: Cell) -> list[Edge]:
    """The searched keys whose chosen value sits at an edge of what the cell tried (or of its recorded space)."""
    chosen = cell.chosen()
    if chosen is None:
        return []
    found = []
    spaces = next((run.result.search_space for run in chosen.runs if run.result.search_space), None) or {}
    for key, value in chosen.searched.items():
        number = _number(value)
        if number is None:
            continue
        tried = sorted({n for c in cell.configs.values() if (n := _number(c.searched.get(key))) is not None})
        if key in spaces:
            side = _bound_side(number, spaces[key])
            if side:
                found.append(Edge(key, side, value, tuple(_as_given(tried)), spaces[key].get("text")))
            continue
        if len(tried) < 2:
            continue
        if number in (tried[0], tried[-1]):
            found.append(Edge(key, "low" if number == tried[0] else "high", value, tuple(_as_given(tried))))
    return found


def _as_given(values: list[float]) -> list[Any]:
    """Integral values as ints (batch sizes, epochs, 0) so that they read as they were configured."""
    return [int(v) if v.is_integer() else v for v in values]


def next_value(edge: Edge) -> Any:
    """One step beyond the edge at the ratio of the two outermost values tried on that side (integers stay
    integers: batch sizes, epochs); None where that would cross zero (nothing lies below a weight of 0)."""
    values = [float(v) for v in edge.tried]
    inner, outer = (values[1], values[0]) if edge.side == "low" else (values[-2], values[-1])
    if inner > 0 and outer > 0:
        beyond = outer * (outer / inner)
    else:
        beyond = outer + (outer - inner)
    if beyond < 0 <= min(values):
        return None   # below a key's own bound (a DEM weight of 0 is already the end): nothing beyond it
    if all(float(v).is_integer() for v in values):
        return int(round(beyond))
    return float(f"{beyond:.3g}")
