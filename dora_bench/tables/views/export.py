"""`--format csv` / `json`: every cell of every table as one record (cells.csv, cells.json), the same numbers the
markdown rounds, so that a reader loads them into pandas (`pd.read_csv("cells.csv")`) instead of parsing tables."""
from __future__ import annotations

import argparse
import csv
import io
import json
from pathlib import Path
from typing import Any

from dora_bench.results import value_text
from dora_bench.tables.markdown import label, section_title
from dora_bench.tables.summary import Study
from dora_bench.tables.views import View

FIELDS = ("table", "section", "model", "variant", "key1", "key2", "row", "column", "task", "kind", "agg", "value",
          "std", "n", "failed", "lower_is_better", "chosen", "edge", "paper", "reference", "difference",
          "difference_low", "difference_high", "test", "verdict")


def records(study: Study) -> list[dict[str, Any]]:
    """One record per (table, section, row, column); `value` is the mean (or median, `agg`) over seeds, or the
    ratio / average the table prints for `kind` ratio / avg."""
    out = []
    for table in study.tables:
        agg = table.options(study.opts).agg
        for summary in study.summaries(table):
            model, variant = summary.key
            common = {"table": table.name, "section": section_title(summary.key), "model": model, "variant": variant}
            for row in summary.rows:
                keys = {"key1": row.key[0], "key2": row.key[1] if len(row.key) > 1 else None,
                        "row": " ".join(label(v) for v in row.key if v is not None)}
                for cell in row.cells:
                    stats, diff = cell.stats, cell.difference
                    kind = "ratio" if cell.column.ratio else "score" if cell.column.is_score else "measure"
                    out.append({**common, **keys, "column": cell.column.label, "task": cell.column.task, "kind": kind,
                                "agg": "ratio" if cell.column.ratio else agg, "value": cell.value,
                                "std": stats[1] if stats else None, "n": stats[2] if stats else 0,
                                "failed": cell.failed, "lower_is_better": cell.lower_better,
                                "chosen": "; ".join(f"{k}={value_text(v)}" for k, v in cell.config.searched.items())
                                if cell.config and cell.cell and len(cell.cell.configs) > 1 else None,
                                "edge": "; ".join(f"{e.key}={e.side}" for e in cell.edges) or None,
                                "paper": cell.paper,
                                "reference": " ".join(map(str, diff.reference)) if diff else None,
                                "difference": diff.mean if diff else None,
                                "difference_low": diff.low if diff else None,
                                "difference_high": diff.high if diff else None,
                                "test": diff.test if diff else None, "verdict": cell.verdict})
                if table.avg:
                    out.append({**common, **keys, "column": "Avg", "task": None, "kind": "avg", "agg": "mean of cells",
                                "value": row.avg, "n": None, "paper": row.paper_avg})
    return [{name: record.get(name) for name in FIELDS} for record in out]


def to_csv(rows: list[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=FIELDS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def write(study: Study, out: Path, args: argparse.Namespace) -> list[str]:
    rows, written = None, []
    for fmt in ("csv", "json"):
        if fmt in args.formats:
            rows = rows if rows is not None else records(study)
            text = to_csv(rows) if fmt == "csv" else json.dumps(rows, indent=1, default=str) + "\n"
            (out / f"cells.{fmt}").write_text(text, encoding="utf-8")
            written.append(f"cells.{fmt}")
    return written


VIEW = View("export", 60, write)
