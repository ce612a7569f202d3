"""Time chunks of a capture: which rows a chunk owns, so that what chunks find adds up to the whole.

A capture too large for memory is analysed a time chunk at a time (analysis/chunked.py). Each chunk
is read with some history before it and some future after it; a row belongs to the chunk whose
``[start_ns, end_ns)`` holds its anchor time, so no row is counted twice or lost at an edge.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any, TypeVar

import polars as pl


def owned_rows(df: pl.DataFrame, start_ns: int, end_ns: int | None, column: str = "anchor_ns") -> pl.DataFrame:
    """The rows of ``df`` whose ``column`` lies in [start_ns, end_ns) (end None: open)."""
    keep = pl.col(column) >= start_ns
    return df.filter(keep if end_ns is None else keep & (pl.col(column) < end_ns))


E = TypeVar("E", bound="Evidence")


class Evidence:
    """A frozen dataclass of frames (or of other ``Evidence``) whose rows are anchored in time
    (``anchor_ns``): one chunk's share of it, and the shares of all chunks put back together."""

    def owned(self: E, start_ns: int, end_ns: int | None) -> E:
        """The rows anchored in [start_ns, end_ns): one chunk's share."""
        return type(self)(*(v.owned(start_ns, end_ns) if isinstance(v, Evidence) else owned_rows(v, start_ns, end_ns)
                            for v in self._values()))

    @classmethod
    def concat(cls: type[E], parts: list[E]) -> E:
        """All chunks' shares in chunk order: the whole capture's evidence."""
        columns = zip(*(p._values() for p in parts), strict=True)
        return cls(*(type(c[0]).concat(list(c)) if isinstance(c[0], Evidence) else pl.concat(c) for c in columns))

    def _values(self) -> list[Any]:
        return [getattr(self, f.name) for f in fields(self)]  # type: ignore[arg-type]
