"""Time chunks of a capture: which rows a chunk owns, so that what chunks find adds up to the whole.

A capture too large for memory is analysed a time chunk at a time (analysis/chunked.py). Each chunk
is read with some history before it and some future after it; a row belongs to the chunk whose
``[start_ns, end_ns)`` holds its anchor time, so no row is counted twice or lost at an edge.
"""

from __future__ import annotations

import polars as pl


def owned_rows(df: pl.DataFrame, start_ns: int, end_ns: int | None, column: str = "anchor_ns") -> pl.DataFrame:
    """The rows of ``df`` whose ``column`` lies in [start_ns, end_ns) (end None: open)."""
    keep = pl.col(column) >= start_ns
    return df.filter(keep if end_ns is None else keep & (pl.col(column) < end_ns))
