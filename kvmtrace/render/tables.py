"""Tables for the terminal and for other tools: rich tables of small frames, a key/value facts table, a console
that never squeezes a table, and the same tables as CSV, Markdown or JSON (``--format``)."""

from __future__ import annotations

import json
from typing import Any

import polars as pl
from rich.console import Console
from rich.table import Table

from kvmtrace.errors import CaptureError
from kvmtrace.units import fmt_ns

FORMATS = ("table", "csv", "md", "json")
WIDE = 10_000  # the console width when stdout is not a terminal: tables keep their natural width

Sections = list[tuple[str, pl.DataFrame]]


def frame_table(df: pl.DataFrame, title: str) -> Table:
    t = Table(title=title, title_justify="left")
    for name, dtype in df.schema.items():
        t.add_column(name, justify="right" if dtype.is_numeric() else "left")
    for row in df.iter_rows():
        t.add_row(*(_cell(v) for v in row))
    return t


def facts_table(title: str, rows: list[tuple[str, str]]) -> Table:
    """A headerless two-column table of facts: bold names, then values."""
    t = Table(title=title, show_header=False, title_justify="left")
    t.add_column(style="bold")
    t.add_column()
    for name, value in rows:
        t.add_row(name, value)
    return t


def blame_table(rows: list[dict[str, Any]], title: str, counted: str) -> Table:
    """The ten largest causes of a blame table (model/blame.blame_table rows); ``counted`` names what
    its ``interrupts`` column counts (interrupts, or the native analysis's wakeups)."""
    t = Table(title=title, title_justify="left")
    for col in ("cause", "kind", "total", "share", counted, "top cause of > 1 ms"):
        t.add_column(col, justify="left" if col in ("cause", "kind") else "right")
    for r in rows[:10]:
        pid = f" ({r['cause_pid']})" if r["cause_pid"] not in (None, 0) else ""
        t.add_row(f"{r['cause']}{pid}", r["cause_kind"], fmt_ns(r["total_ns"]), f"{100 * r['share']:.1f}%",
                  f"{r['interrupts']:,}", f"{r['slow_top']:,}")
    return t


def _cell(v: object) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, list):
        return ", ".join(str(x) for x in v)
    return "" if v is None else str(v)


def table_console() -> Console:
    """The console for stdout. Not a terminal (a pipe, a file): so wide that no table is squeezed, no cell
    wrapped or cut with an ellipsis, and no colour codes."""
    console = Console()
    return console if console.is_terminal else Console(width=WIDE)


def output_format(fmt: str, json_flag: bool = False) -> str:
    """The ``--format`` asked for (``--json`` is ``--format json``), or a CaptureError naming the choices."""
    if json_flag:
        return "json"
    if fmt not in FORMATS:
        raise CaptureError(None, None, f"--format {fmt!r}: expected one of {', '.join(FORMATS)}")
    return fmt


def flat(df: pl.DataFrame) -> pl.DataFrame:
    """Lists joined with ', ', structs and objects as JSON text: a frame CSV and Markdown can hold."""
    out: list[pl.Expr | pl.Series] = []
    for name, dtype in df.schema.items():
        col = pl.col(name)
        if isinstance(dtype, pl.List):
            out.append(col.cast(pl.List(pl.String)).list.join(", "))
        elif isinstance(dtype, pl.Struct | pl.Object):
            out.append(pl.Series(name, [json.dumps(v, default=str) for v in df[name].to_list()], pl.String))
        else:
            out.append(col)
    return df.select(out)


def rows_frame(rows: list[dict[str, Any]]) -> pl.DataFrame:
    """Records (from a JSON document) as a frame, nested values as JSON text."""
    clean = [{k: json.dumps(v, default=str) if isinstance(v, dict | list) else v for k, v in r.items()} for r in rows]
    return pl.DataFrame(clean, infer_schema_length=None)


def csv_text(sections: Sections) -> str:
    """Each table as ``# title`` then its CSV; a blank line between tables."""
    return "\n".join(f"# {title}\n{flat(df).write_csv()}" for title, df in sections)


def md_text(sections: Sections) -> str:
    """Each table as a ``### title`` heading and a Markdown table (numbers right-aligned)."""
    parts = []
    for title, df in sections:
        f = flat(df)
        align = ["---:" if dt.is_numeric() else "---" for dt in df.schema.values()]
        lines = ["| " + " | ".join(f.columns) + " |", "| " + " | ".join(align) + " |"]
        lines += ["| " + " | ".join(_md(v) for v in row) + " |" for row in f.iter_rows()]
        parts.append(f"### {title}\n\n" + "\n".join(lines) + "\n")
    return "\n".join(parts)


def _md(v: object) -> str:
    return "" if v is None else str(v).replace("|", "\\|").replace("\n", " ")


def sections_text(sections: Sections, fmt: str) -> str:
    """``csv`` or ``md`` text of the tables."""
    return csv_text(sections) if fmt == "csv" else md_text(sections)
