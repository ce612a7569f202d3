"""``kvmtrace compare`` in the terminal: the measures table (one column per run, ratios to the first,
the 2014 study's figures with --study) and the sentences that explain the differences."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from kvmtrace.analysis.study import Comparison


def _cell(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.2f}" if abs(v) < 100 else f"{v:,.0f}"
    return str(v)


def render_compare(cmp: Comparison, console: Console) -> None:
    t = Table(title="Runs compared (ratio: against the first run)", title_justify="left")
    t.add_column("measure")
    for r in cmp.runs:
        t.add_column(f"{r.label} ({r.kind})", justify="right")
    if len(cmp.runs) > 1:
        t.add_column("ratio", justify="right")
    study = any("study" in row for row in cmp.rows)
    if study:
        t.add_column("2014 study host / guest (ratio)", justify="right")
    for row in cmp.rows:
        ratio = row["ratios"][-1]
        cells = [row["measure"], *(_cell(v) for v in row["values"])]
        if len(cmp.runs) > 1:
            cells.append(f"{ratio:g}x" if ratio is not None else "-")
        if study:
            s = row.get("study")
            cells.append(f"{s['host']:g} / {s['guest']:g} ({s['ratio']:g}x)" if s else "")
        t.add_row(*cells)
    console.print(t)
    for line in cmp.explanations:
        console.print(f"- {line}")
    for f in cmp.failed:
        console.print(f"[red]fail-if: {f}[/red]")
