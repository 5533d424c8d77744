"""The tables as markdown: `<table>.md` for every table of the catalog."""
from __future__ import annotations

import argparse
from pathlib import Path

from dora_bench.tables.markdown import render_table
from dora_bench.tables.summary import Study
from dora_bench.tables.views import View


def write(study: Study, out: Path, args: argparse.Namespace) -> list[str]:
    if "md" not in args.formats:
        return []
    for table in study.tables:
        (out / f"{table.name}.md").write_text(render_table(table, study), encoding="utf-8")
    return [f"{table.name}.md" for table in study.tables]


VIEW = View("tables", 10, write)
