"""Typed columns of one event type straight from ``-R`` payload bytes (see fast), or None.

None means "not sure": the caller then decodes the payloads and uses the exact regex reader
(fields.parse_payload). The fast result is taken only where it is the one parse_payload gives:
the event's first bundled format whose -R keys split every line, every value read, no field left null
(symbol-printed fields aside).
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import polars as pl
from numpy.typing import NDArray

from kvmtrace.fileformats.formats import EventFormat, FieldFormat
from kvmtrace.ingest.dtypes import field_dtype
from kvmtrace.ingest.text import native as text_native
from kvmtrace.ingest.text.bytetext import I64, ByteText, Interned, Parsed, byte_positions, intern
from kvmtrace.ingest.text.fields import (
    SYMBOL_FIELDS,
    FormatCatalog,
    PayloadResult,
    typed_value,
)
from kvmtrace.ingest.text.printfmt import FieldRule, raw_value_rules
from kvmtrace.ingest.text.raw import Spans, parse_ints, split

STRING_INTERN_WIDTH = 32
NUMPY_INTS: dict[pl.DataType, type[np.integer]] = {
    pl.Int8(): np.int8, pl.Int16(): np.int16, pl.Int32(): np.int32, pl.Int64(): np.int64,
    pl.UInt8(): np.uint8, pl.UInt16(): np.uint16, pl.UInt32(): np.uint32, pl.UInt64(): np.uint64,
}


PAD = 8  # bytes kept before each payload (words ending inside it read back from there)
TAIL = 64  # bytes after the last payload (windows read past it)


COPY_BLOCK = 1 << 16  # rows copied at a time
CLASS_WIDTH = PAD + 64  # payloads up to this wide are copied in one pass for all their types


def _row_width(length: I64) -> int:
    return PAD + (int(length.max()) + 1 + 7) // 8 * 8 if length.size else PAD + 8


def _rows(text: ByteText, start: I64, width: int) -> NDArray[np.uint8]:
    """``width`` bytes from each ``start`` (zeros outside the text)."""
    size = text.buf.size
    safe = np.clip(start, 0, max(size - width, 0))
    if size < width:
        padded = np.zeros(width, dtype=np.uint8)
        padded[:size] = text.buf
        return np.repeat(padded[None, :], start.size, axis=0)
    rows = text.window(safe, width)
    for i in np.flatnonzero(safe != start).tolist():  # the first / last line of the text
        s = int(start[i])
        row = np.zeros(width, dtype=np.uint8)
        lo, hi = max(s, 0), min(s + width, size)
        if hi > lo:
            row[lo - s : hi - s] = text.buf[lo:hi]
        rows[i] = row
    return rows


def compact_payloads(text: ByteText, ps: I64, pe: I64) -> tuple[ByteText, I64, I64]:
    """The payloads of one event type copied into one small text, one fixed-width row each.

    Reading fields from there touches a few contiguous megabytes in order instead of the whole text.
    """
    n = ps.size
    length = pe - ps
    width = _row_width(length)
    # a few more rows so that windows may read past the last payload
    extra = (TAIL + width - 1) // width
    rows = _rows(text, np.concatenate([ps - PAD, np.full(extra, ps[0] - PAD if n else 0)]), width)
    base = np.arange(n, dtype=np.int64) * width + PAD
    return ByteText(rows.reshape(-1)), base, base + length


@dataclass
class Compact:
    """One event type's payloads copied into a small text (see compact_payloads): ``ps``/``pe`` the
    payloads there, ``equals`` every ``=`` in it and ``first`` the index of each payload's first one."""

    text: ByteText
    ps: I64
    pe: I64
    equals: I64
    first: I64


def _compact(text: ByteText, ps: I64, pe: I64) -> Compact:
    equals = byte_positions(text.buf, 61)
    return Compact(text, ps, pe, equals, np.searchsorted(equals, ps))


def compact_groups(text: ByteText, ps_all: I64, pe_all: I64, groups: list[I64]) -> list[Compact]:
    """compact_payloads for several event types (``groups``: their rows in ps_all / pe_all).

    The types with short payloads are copied together: one pass over the text in line order, then
    the rows go to their type's block. Copying type by type would read the text in a scattered
    order, which costs several times more.
    """
    out: list[Compact | None] = [None] * len(groups)
    small = []
    for k, rows in enumerate(groups):
        if _row_width(pe_all[rows] - ps_all[rows]) <= CLASS_WIDTH:
            small.append(k)
        else:
            out[k] = _compact(*compact_payloads(text, ps_all[rows], pe_all[rows]))
    if small:
        width = CLASS_WIDTH
        dest = np.full(ps_all.size, -1, dtype=np.int64)
        offsets = []
        total = 0
        for k in small:
            dest[groups[k]] = np.arange(total, total + groups[k].size)
            offsets.append(total)
            total += groups[k].size
        member = np.flatnonzero(dest >= 0)
        extra = (TAIL + width - 1) // width
        rows_out = np.empty((total + extra, width), dtype=np.uint8)
        rows_out[total:] = 0
        for at in range(0, member.size, COPY_BLOCK):  # in blocks: less memory, warm caches
            part = member[at : at + COPY_BLOCK]
            rows_out[dest[part]] = _rows(text, ps_all[part] - PAD, width)
        flat = rows_out.reshape(-1)
        equals = byte_positions(flat, 61)  # all types at once
        for k, offset in zip(small, offsets, strict=True):
            n = groups[k].size
            base = np.arange(n, dtype=np.int64) * width + PAD
            low, high = offset * width, (offset + n + extra) * width
            piece = flat[low:high]
            length = pe_all[groups[k]] - ps_all[groups[k]]
            eq = equals[np.searchsorted(equals, low) : np.searchsorted(equals, high)] - low
            out[k] = Compact(ByteText(piece), base, base + length, eq, np.searchsorted(eq, base))
    return [o for o in out if o is not None]


IntReader = Callable[[ByteText, I64, I64, bool], Parsed]  # parse_ints or its native twin
Interner = Callable[[ByteText, I64, I64], Interned | None]  # bytetext.intern or its native twin


def fast_payload(
    name: str, text: ByteText, equals: I64, first: I64, ps: I64, pe: I64, catalog: FormatCatalog
) -> PayloadResult | None:
    """``first``: for each payload, the index in ``equals`` of its first ``=``."""
    for fmt in catalog.candidates(name):
        fields = fmt.payload_fields
        if not fields:
            continue
        spans = split(text, equals, first, ps, pe, [f.name for f in fields])
        if spans is True:  # the regex might match where the fast split does not
            return None
        if isinstance(spans, Spans):
            return _typed(text, fmt, spans, parse_ints)
    return None


def native_payload(
    lib: ctypes.CDLL, name: str, text: ByteText, ps: I64, pe: I64, catalog: FormatCatalog
) -> PayloadResult | None:
    """fast_payload with the native kernels (``text``: the packed payloads, text_native.pack_groups):
    the values split and the integers read in one pass (text_native.fields)."""
    for fmt in catalog.candidates(name):
        fields = fmt.payload_fields
        if not fields:
            continue
        specs = _native_specs(fmt)
        got = text_native.fields(lib, text, ps, pe, [f.name for f in fields],
                                 specs or [text_native.FieldSpec(text_native.FIELD_SKIP)] * len(fields))
        if got is True:
            return None
        if isinstance(got, text_native.Fields):
            return None if specs is None else _native_typed(lib, text, fmt, got)
    return None


def _native_specs(fmt: EventFormat) -> list[text_native.FieldSpec] | None:
    """How text_native.fields gives each field of ``fmt`` for _native_typed (None: _typed gives no table)."""
    fields = fmt.payload_fields
    if any(isinstance(field_dtype(f), pl.List) for f in fields):
        return None
    rules = raw_value_rules(fmt)
    specs = []
    for f in fields:
        rule = rules.get(f.name)
        if rule is not None and rule.symbols:
            return None
        spec = None if f.is_string else _int_spec(f, rule)
        specs.append(spec or text_native.FieldSpec(text_native.FIELD_SPANS))
    return specs


def _int_spec(f: FieldFormat, rule: FieldRule | None) -> text_native.FieldSpec | None:
    """_int_column's values as kt_text_fields makes them (None: an odd size, read with the spans)."""
    hex_default = rule is not None and (rule.hex or rule.conversion == "s")
    kind = text_native.FIELD_HEX if hex_default else text_native.FIELD_DEC
    bits = 8 * f.size if not f.is_bool else 8
    np_type = NUMPY_INTS.get(field_dtype(f))
    if f.is_bool:
        return text_native.FieldSpec(kind, 8, np.dtype(np.uint8))
    if np_type is not None and (bits >= 64 or np.dtype(np_type).itemsize * 8 == bits):
        return text_native.FieldSpec(kind, 64, np.dtype(np_type))
    if bits >= 64:
        return text_native.FieldSpec(kind, 64, np.dtype(np.int64 if f.signed else np.uint64))
    if bits < 1:
        return None
    return text_native.FieldSpec(kind, -bits if f.signed else bits, np.dtype(np.int64))


def _native_typed(lib: ctypes.CDLL, text: ByteText, fmt: EventFormat, got: text_native.Fields
                  ) -> PayloadResult | None:
    """_typed's table from text_native.fields' columns."""
    rules = raw_value_rules(fmt)

    def strings(t: ByteText, vs: I64, length: I64) -> Interned | None:
        return text_native.intern(lib, t, vs, length)

    columns: list[pl.Series] = []
    for f, column, (bad, bad_vs, bad_ve) in zip(fmt.payload_fields, got.columns, got.bad, strict=True):
        rule = rules.get(f.name)
        if isinstance(column, tuple):
            vs, ve = column
            series = (_string_column(text, f, vs, ve, strings) if f.is_string
                      else _int_column(text, f, rule, vs, ve, parse_ints))
        else:
            assert column is not None
            series = pl.Series(f.name, column != 0) if f.is_bool else pl.Series(f.name, column)
            series = _fixed(text, f, rule, _cast(series, f), bad, bad_vs, bad_ve)
        if series is None:
            return None
        if series.null_count() and f.name not in SYMBOL_FIELDS:
            return None
        columns.append(series)
    return PayloadResult(pl.DataFrame(columns), fmt, "raw")


def _intern(text: ByteText, vs: I64, length: I64) -> Interned | None:
    return intern(text, vs, length, STRING_INTERN_WIDTH)


def _typed(text: ByteText, fmt: EventFormat, spans: Spans, ints: IntReader, strings: Interner = _intern
           ) -> PayloadResult | None:
    """The typed columns of ``fmt`` from the value spans (``ints`` reads the integers)."""
    fields = fmt.payload_fields
    if any(isinstance(field_dtype(f), pl.List) for f in fields):
        return None
    rules = raw_value_rules(fmt)
    columns: list[pl.Series] = []
    for f, vs, ve in zip(fields, spans.starts, spans.ends, strict=True):
        rule = rules.get(f.name)
        if rule is not None and rule.symbols:
            return None
        column = (_string_column(text, f, vs, ve, strings) if f.is_string
                  else _int_column(text, f, rule, vs, ve, ints))
        if column is None:
            return None
        if column.null_count() and f.name not in SYMBOL_FIELDS:
            return None
        columns.append(column)
    return PayloadResult(pl.DataFrame(columns), fmt, "raw")


def _string_column(text: ByteText, f: FieldFormat, vs: I64, ve: I64, strings: Interner) -> pl.Series | None:
    length = ve - vs
    if vs.size and int(length.max()) <= STRING_INTERN_WIDTH:
        interned = strings(text, vs, length)
        if interned is None:
            return None
        if not all(v.isascii() for v in interned.values):
            return None
        values = pl.Series(f.name, [v.decode() for v in interned.values], dtype=pl.String)
        return values.gather(pl.Series(interned.codes))
    raw = [text.piece(int(s), int(e)) for s, e in zip(vs, ve, strict=True)]
    if not all(v.isascii() for v in raw):
        return None
    return pl.Series(f.name, [v.decode() for v in raw], dtype=pl.String)


def _int_column(
    text: ByteText, f: FieldFormat, rule: FieldRule | None, vs: I64, ve: I64, ints: IntReader
) -> pl.Series | None:
    hex_default = rule is not None and (rule.hex or rule.conversion == "s")
    parsed = ints(text, vs, ve, hex_default)
    as_int = parsed.value.view(np.int64)
    if bool(parsed.negative.any()):
        as_int = np.where(parsed.negative, -as_int, as_int)
    bits = 8 * f.size if not f.is_bool else 8
    np_type = NUMPY_INTS.get(field_dtype(f))
    if f.is_bool:
        values = pl.Series(f.name, (as_int & 0xFF) != 0)
    elif np_type is not None and (bits >= 64 or np.dtype(np_type).itemsize * 8 == bits):
        values = pl.Series(f.name, as_int.astype(np_type, copy=False))  # wraps as the kernel's type does
    elif bits >= 64:
        values = pl.Series(f.name, as_int.view(np.int64 if f.signed else np.uint64))
    else:
        low = as_int & ((1 << bits) - 1)
        if f.signed:
            low = np.where(low >= (1 << (bits - 1)), low - (1 << bits), low)
        values = pl.Series(f.name, low)
    return _fixed(text, f, rule, _cast(values, f), np.flatnonzero(~parsed.ok), vs, ve, whole=True)


def _cast(values: pl.Series, f: FieldFormat) -> pl.Series:
    dtype = field_dtype(f)
    return values if values.dtype == dtype else values.cast(dtype, strict=False).alias(f.name)


def _fixed(text: ByteText, f: FieldFormat, rule: FieldRule | None, values: pl.Series, bad: I64, vs: I64, ve: I64,
           whole: bool = False) -> pl.Series:
    """``values`` with the rows ``bad`` read from their text [vs, ve) by the exact polars expression
    (``whole``: vs / ve of every row, else of the rows ``bad``)."""
    if not bad.size:
        return values
    if whole:
        vs, ve = vs[bad], ve[bad]
    texts = pl.Series(
        "v",
        [text.piece(s, e).decode("utf-8", errors="replace") for s, e in zip(vs.tolist(), ve.tolist(), strict=True)],
        dtype=pl.String,
    )
    fixed = pl.DataFrame([texts]).select(typed_value(pl.col("v"), f, rule)).to_series()
    return values.scatter(pl.Series(bad), fixed)
