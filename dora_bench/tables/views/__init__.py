"""What `dora-bench-tables` writes besides reading: each module here defines `VIEW`, one output (the tables'
markdown, Figure 2, the comparison, the cost scatter, the sweeps list, the CSV/JSON export); a new view is one
new file. Views run in `order`; each decides from the command line whether it writes anything."""
from __future__ import annotations

import argparse
import importlib
import pkgutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from dora_bench.tables.summary import Study


@dataclass(frozen=True)
class View:
    name: str
    order: int
    write: Callable[[Study, Path, argparse.Namespace], list[str]]   # -> the names of the files written
    add_arguments: Callable[[argparse.ArgumentParser], None] | None = None


def discover() -> list[View]:
    views = [importlib.import_module(f"{__name__}.{m.name}").VIEW for m in pkgutil.iter_modules(__path__)]
    return sorted(views, key=lambda view: view.order)
