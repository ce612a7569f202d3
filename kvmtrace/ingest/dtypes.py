"""The polars column type of each field kind (docs/tables.md): the typed tables' schema, and array
columns built from flat values (both readers)."""

from __future__ import annotations

import numpy as np
import polars as pl

from kvmtrace.fileformats.formats import FieldFormat
from kvmtrace.ingest.arrowlists import list_series

_INTS: dict[tuple[int, bool], pl.DataType] = {
    (1, True): pl.Int8(), (1, False): pl.UInt8(),
    (2, True): pl.Int16(), (2, False): pl.UInt16(),
    (4, True): pl.Int32(), (4, False): pl.UInt32(),
    (8, True): pl.Int64(), (8, False): pl.UInt64(),
}


def int_dtype(size: int, signed: bool) -> pl.DataType:
    return _INTS.get((size, signed), pl.Int64() if signed else pl.UInt64())


def field_dtype(f: FieldFormat) -> pl.DataType:
    """Strings for char arrays and ``__data_loc char[]``, lists for other arrays, Boolean for bool,
    integers by size and sign."""
    if f.is_string:
        return pl.String()
    if f.is_dynamic or (f.array_len is not None):
        return pl.List(int_dtype(f.element_size, f.signed))
    if f.is_bool:
        return pl.Boolean()
    return int_dtype(f.size, f.signed)


def lists_of(values: pl.Series, counts: np.ndarray, dtype: pl.List) -> pl.Series:
    """One list per row from the concatenated ``values``, ``counts[i]`` of them for row i: a reshape when
    every row has as many, else (integers without nulls) straight from the flat buffer and offsets, or a group
    by the (sorted) row number. No Python loop over rows."""
    n, width = len(counts), int(counts.max(initial=0))
    if width == 0:
        return pl.select(pl.repeat(pl.lit([], dtype=dtype), n, dtype=dtype)).to_series()
    if bool((counts == width).all()):
        return values.reshape((n, width)).cast(dtype)
    if values.null_count() == 0 and values.dtype.is_integer():  # from flat buffers (ingest/arrowlists.py)
        return list_series(values.name, values.to_numpy(), counts).cast(dtype)
    row = pl.Series("row", np.repeat(np.arange(n, dtype=np.int64), counts)).set_sorted()
    grouped = pl.DataFrame({"row": row, "v": values}).group_by("row", maintain_order=True).agg("v")
    rows = pl.DataFrame({"row": pl.Series("row", np.arange(n, dtype=np.int64)).set_sorted()})
    return rows.join(grouped, on="row", how="left", maintain_order="left")["v"].fill_null(
        pl.lit([], dtype=dtype)).cast(dtype)
