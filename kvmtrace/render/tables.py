"""Generic rich tables: a polars DataFrame (small result frames), and a key/value facts table."""

from __future__ import annotations

import polars as pl
from rich.table import Table


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


def _cell(v: object) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, list):
        return ", ".join(str(x) for x in v)
    return "" if v is None else str(v)
