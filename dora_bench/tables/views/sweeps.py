"""`--sweeps`: every configuration of every table cell (searched values, dev score over seeds, failures, folder),
which one the table shows, and the cells whose chosen value sits at an edge of the search (sweeps.md, printed)."""
from __future__ import annotations

import argparse
from pathlib import Path

from dora_bench.results import value_text
from dora_bench.tables.cells import aggregate
from dora_bench.tables.markdown import EDGE_MARK, cells_in_order, markdown_table, row_labels, section_title, stats_text
from dora_bench.tables.summary import Study
from dora_bench.tables.views import View


def render_sweeps(study: Study) -> str:
    opts, root = study.opts, study.root
    out = ["# Sweeps: every configuration of each table cell", "",
           f"Dev score: the headline metric per seed ({opts.select} epoch rule), {opts.agg} ± std (ddof={opts.ddof}) "
           f"(n seeds). ✓ = the configuration the table shows (best mean dev score over seeds; the lowest for a "
           f"lower-is-better metric). {EDGE_MARK} = a searched value of it at the edge of what its cell tried (the "
           f"edge column names the key and the side). Searched keys: {', '.join(opts.searched) or 'none'}.", ""]
    at_edges = []
    for table in study.tables:
        for summary in study.summaries(table):
            section = summary.section
            if not section.cells:
                continue
            edges = {(c.key, c.column.task): c.edges for row in summary.rows for c in row.cells if c.edges}
            searched = [k for k in table.options(opts).searched
                        if any(k in c.searched for cell in section.cells.values() for c in cell.configs.values())]
            rows = []
            for (row_key, task), cell in cells_in_order(section):
                best = cell.chosen()
                found = edges.get((row_key, task), [])
                at_edges += [f"- {table.title} — {section_title(summary.key)} — {' '.join(row_labels(table, row_key))}"
                             f" · {task}: {edge.describe()}" for edge in found]
                for config in cell.ordered():
                    stats = aggregate(list(config.scores.values()), opts)
                    edge = ", ".join(f"{EDGE_MARK} {e.key} {e.side}" for e in found) if config is best else ""
                    rows.append([*row_labels(table, row_key), task, "✓" if config is best else "",
                                 *(value_text(config.searched[k]) if k in config.searched else "—" for k in searched),
                                 stats_text(stats, 0, 2), str(len(config.still_failed)), edge,
                                 str(config.folder.relative_to(root)) if config.folder.is_relative_to(root)
                                 else str(config.folder)])
            columns = [*table.key_headers, "task", "shown", *searched, "dev score", "failed", "edge", "folder"]
            out += [f"## {table.title} — {section_title(summary.key)}", "", markdown_table(columns, rows), ""]
    out += ["## At the edge of the search", ""] + (at_edges or ["None: every chosen value has tried values on both "
                                                                "sides (or was not searched)."]) + [""]
    return "\n".join(out) + "\n"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sweeps", action="store_true",
                        help="also list every configuration of each cell (mean ± std, n) and the cells at the edge "
                             "of their search: sweeps.md, printed")


def write(study: Study, out: Path, args: argparse.Namespace) -> list[str]:
    if not args.sweeps:
        return []
    text = render_sweeps(study)
    (out / "sweeps.md").write_text(text, encoding="utf-8")
    print(text)
    return ["sweeps.md"]


VIEW = View("sweeps", 50, write, add_arguments)
