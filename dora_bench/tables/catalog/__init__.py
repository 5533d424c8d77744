"""Every table `dora-bench-tables` renders: each module here defines `TABLES`, a tuple of `spec.Table`; a new
family of tables is one new file (the paper's own come first, then the others by file name)."""
from __future__ import annotations

import importlib
import pkgutil

from dora_bench.tables.spec import Table


def _discover() -> tuple[Table, ...]:
    names = sorted((m.name for m in pkgutil.iter_modules(__path__)), key=lambda name: (name != "paper", name))
    return tuple(table for name in names for table in importlib.import_module(f"{__name__}.{name}").TABLES)


TABLES = _discover()
