"""Markdown: one renderer for every table (cells, paper column, the notes under each section and table)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from dora_bench.results import value_text
from dora_bench.tables.cells import Cell, Section, SectionKey
from dora_bench.tables.runs import Key, Options
from dora_bench.tables.spec import Table
from dora_bench.tables.summary import CellSummary, RowSummary, SectionSummary, Study, sort_key, summarize

METHOD_LABELS = {"full_ft": "Full FT", "bitfit": "BitFit", "h_adapter": "H-Adapter", "p_adapter": "P-Adapter",
                 "lora": "LoRA", "adalora": "AdaLoRA", "dora": "DoRA", "none": "Base model"}
VARIANT_LABELS = {"with_dem": "with DEM", "without_dem": "without DEM"}
EDGE_MARK = "†"
VERDICT_MARKS = {"better": "▲", "worse": "▼"}


def label(value: Any) -> str:
    if value is None:
        return "—"
    return METHOD_LABELS.get(value, VARIANT_LABELS.get(value, str(value)))


def row_labels(table: Table, key: Key) -> list[str]:
    return [label(v) for v in key] + [""] * (len(table.key_headers) - len(key))


def fmt_params(count: float) -> str:
    if count == 0:
        return "0"                      # the base model's row: nothing trains
    return f"{count / 1e6:.2f}M" if count >= 1e4 else f"{count / 1e3:.1f}K"


def params_text(counts: list[int]) -> str:
    return "–".join(dict.fromkeys([fmt_params(min(counts)), fmt_params(max(counts))])) if counts else "—"


def stats_text(stats, failed: int, digits: int) -> str:
    if stats is None:
        return f"failed ({failed})" if failed else "—"
    center, std, n = stats
    spread = f" ± {std:.{digits}f}" if std is not None else ""
    return f"{center:.{digits}f}{spread} ({n}{f', {failed} failed' if failed else ''})"


def cell_text(cell: CellSummary) -> str:
    """`mean ± std (n)`, then † when a searched value sits at an edge and ▲/▼ when the interval of the difference
    to the reference excludes 0."""
    if cell.column.ratio:
        return f"{cell.value:.2f}" if cell.value is not None else "—"
    text = stats_text(cell.stats, cell.failed, cell.column.digits)
    if cell.stats is not None and cell.edges:
        text += EDGE_MARK
    if cell.stats is not None and cell.verdict:
        text += f" {VERDICT_MARKS[cell.verdict]}"
    return text


def paper_text(ours: float | None, ref: float | None, digits: int) -> str:
    if ref is None:
        return "—"
    return f"{ref:.{digits}f}" + (f" ({ours - ref:+.{digits}f})" if ours is not None else "")


def markdown_table(headers: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def headers(table: Table) -> list[str]:
    paper = ["paper (Δ)"] if table.has_paper else []
    out = list(table.key_headers) + (["Params", *(["Paper params"] if table.has_paper else [])] if table.params else [])
    for column in table.columns:
        out += [column.label, *paper]
    return out + (["Avg", *paper] if table.avg else [])


def render_rows(table: Table, rows: list[RowSummary]) -> list[list[str]]:
    out = []
    for row in rows:
        line = row_labels(table, row.key)
        if table.params:
            line += [params_text(row.params)] + ([(row.paper.params if row.paper else None) or "—"]
                                                 if table.has_paper else [])
        for cell in row.cells:
            digits = 2 if cell.column.ratio else cell.column.digits
            line += [cell_text(cell)] + ([paper_text(cell.value, cell.paper, digits)] if table.has_paper else [])
        if table.avg:
            line += [f"{row.avg:.2f}" if row.avg is not None else "—"] + (
                [paper_text(row.avg, row.paper_avg, 2)] if table.has_paper else [])
        out.append(line)
    return out


def cells_in_order(section: Section) -> list[tuple[tuple[Key, str], Cell]]:
    return sorted(section.cells.items(), key=lambda item: (sort_key(item[0][0]), item[0][1]))


def where(key: Key, task: str) -> str:
    return f"{' '.join(label(v) for v in key)} · {task}"


def search_notes(summary: SectionSummary, opts: Options) -> list[str]:
    """Under a section: which configuration each cell with several shows, what it was chosen from, and where a
    chosen value sits at an edge of the search (†)."""
    edges = {(c.key, c.column.task): c.edges for row in summary.rows for c in row.cells if c.edges}
    notes = []
    for (key, task), cell in cells_in_order(summary.section):
        at_edge = edges.get((key, task), [])
        edge_text = "; † " + "; ".join(e.describe() for e in at_edge) if at_edge else ""
        if len(cell.configs) < 2:
            notes += [f"- {where(key, task)}: † " + "; ".join(e.describe() for e in at_edge)] if at_edge else []
            continue
        best = cell.chosen()
        if best is None:
            notes.append(f"- {where(key, task)}: none of its {len(cell.configs)} configurations completed a seed")
            continue
        differing = [k for k in opts.searched
                     if len({value_text(c.searched.get(k)) for c in cell.configs.values()}) > 1]
        chosen = ", ".join(f"{k}={value_text(best.searched.get(k))}" for k in differing)
        best_word = "best (lowest)" if cell.lower_better else "best"
        common = cell.common_seeds()
        on = (f" on seed(s) {', '.join(map(str, sorted(common)))}, which all have: {cell.compared_score(best):.2f}; "
              f"over its own" if common and common != set(best.scores) else "")
        notes.append(f"- {where(key, task)}: {chosen or 'one of identical searched values'}, {best_word} mean dev "
                     f"score{on} {best.mean_score():.2f} (n={len(best.scores)}) of {len(cell.configs)} configurations"
                     f"{edge_text}")
    return notes


def footnote(table: Table, opts: Options) -> str:
    rule = ("the best dev epoch (pruning methods: after pruning ended)"
            if opts.select == "best" else "the last evaluated epoch")
    per_epoch = any(getattr(c.value, "per_epoch", False) for c in table.columns)
    paper = (" paper (Δ): the paper's number (dora_bench/paper.yaml) and ours minus it." if table.has_paper
             else "")
    return (f"Cells: {opts.agg} ± std (ddof={opts.ddof}) over seeds (n seeds, 'k failed' = failed seeds, not in "
            f"the {opts.agg}){f'; per-seed value: {rule}' if per_epoch else ''}; — = no result (or, for a "
            f"measurement, none recorded: a run that trains nothing has no step time).{paper}"
            + (" Params: trainable parameters, paper convention (task head excluded), over the row's runs."
               if table.params else ""))


def sweep_footnote(opts: Options) -> str:
    searched = ", ".join(opts.searched) or "none"
    return (f"Sweeps: configurations that differ only in searched keys ({searched}) share a cell, which shows "
            f"the one with the best mean dev score over the seeds they all have (the lowest for a lower-is-better "
            f"metric; a search on seed 1 confirmed on more seeds is judged on seed 1; chosen "
            f"values listed under the section; `dora-bench-tables --sweeps` lists every configuration). Runs that "
            f"differ in any other key from the defaults of their model, task, method and budget get a section of "
            f"their own, titled by those values.")


EDGE_NOTE = (f"{EDGE_MARK}: the chosen value of a searched key is the smallest or largest value its cell tried "
             "(keys with at least two numeric values; Optuna trials: the first or last choice, or the outer tenth of "
             "an interval of the recorded search space), listed under the section: the best may lie beyond, and "
             "`dora-bench-status --extend <the sweep's overrides>` prints the next values out.")


def compare_note(reference: str) -> str:
    return (f"{VERDICT_MARKS['better']} / {VERDICT_MARKS['worse']}: better / worse than {label(reference)} at the "
            f"row's budget (rows without one, like Full FT and BitFit: at the large budget, else the one there is): "
            f"the 95 % t-interval of the difference over seeds (paired by seed when both have the same seeds, else "
            f"Welch) excludes 0. compare.md lists every difference with its interval.")


COST_NOTE = ("Cost against score: cost.md (per section and task: score against trainable parameters, peak memory "
             "and step time, with the Pareto front).")


def run_task(path: Path, root: Path) -> tuple[str | None, str | None]:
    """(model, task) from runs/<model>/<task>/...; None where the path is too short to tell."""
    parts = path.relative_to(Path(root) / "runs").parts
    return (parts[0] if len(parts) > 2 else None), (parts[1] if len(parts) > 3 else None)


def section_title(key: SectionKey) -> str:
    model, text = key
    return f"model: {model}" + (f" — {text}" if text else "")


def render_table(table: Table, study: Study) -> str:
    opts = table.options(study.opts)
    summaries = study.summaries(table)
    out = [f"# {table.title}", ""]
    for summary in summaries or [None]:
        if summary is None:
            paper = table.paper_reference(study.paper)
            rows = summarize(table, Section(), paper, opts, study.reference)   # the paper's rows alone
            out += ["## no results", "", markdown_table(headers(table), render_rows(table, rows)), "", ""]
            continue
        section = summary.section
        out += [f"## {section_title(summary.key)}", "", markdown_table(headers(table), render_rows(table, summary.rows)),
                ""]
        duplicates = [p for cell in section.cells.values() for c in cell.configs.values() for p in c.duplicates]
        out += [f"- devices: {', '.join(sorted(section.devices))}"]
        out += search_notes(summary, opts)
        out += [f"- ignored {len(duplicates)} file(s) repeating a seed already in their cell, e.g. {duplicates[0]}"
                ] if duplicates else []
        out += [f"- skipped {path}: {reason}" for path, reason in section.problems] + [""]
    cells = [c for s in summaries for row in s.rows for c in row.cells]
    notes = [footnote(table, opts), sweep_footnote(opts)]
    notes += [EDGE_NOTE] if any(c.edges for c in cells) else []
    notes += [compare_note(study.reference)] if any(c.difference for c in cells) else []
    notes += [COST_NOTE] if table.params else []
    out += ["Notes:"] + [f"- {note}" for note in (*notes, *table.notes)]
    unreadable = [(p, r) for p, r in study.skipped if run_task(p, study.root)[1] in table.tasks | {None}]
    if unreadable:
        out += ["", "Skipped files (not read):"] + [f"- {path}: {reason}" for path, reason in unreadable]
    return "\n".join(out) + "\n"
