"""The polars column type of each field kind (docs/tables.md): the typed tables' schema."""

from __future__ import annotations

import polars as pl

from kvmtrace.fileformats.formats import FieldFormat

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
