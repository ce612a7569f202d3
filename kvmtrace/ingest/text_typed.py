"""Typed columns of one event type straight from ``-R`` payload bytes (see text_fast), or None.

None means "not sure": the caller then decodes the payloads and uses the exact regex reader
(text_fields.parse_payload). The fast result is taken only where it is the one parse_payload gives:
the event's first bundled format whose -R keys split every line, every value read, no field left null
(symbol-printed fields aside).
"""

from __future__ import annotations

import numpy as np
import polars as pl

from kvmtrace.ingest.formats import EventFormat, FieldFormat
from kvmtrace.ingest.text_fast import I64, ByteText, RawSpans, intern, parse_number, raw_spans
from kvmtrace.ingest.text_fields import (
    SYMBOL_FIELDS,
    FormatCatalog,
    PayloadResult,
    typed_value,
)
from kvmtrace.ingest.text_printfmt import FieldRule, raw_value_rules

STRING_INTERN_WIDTH = 32


def fast_payload(
    name: str, text: ByteText, equals: I64, ps: I64, pe: I64, catalog: FormatCatalog
) -> PayloadResult | None:
    for fmt in catalog.candidates(name):
        fields = fmt.payload_fields
        if not fields:
            continue
        spans = raw_spans(text, equals, ps, pe, [f.name for f in fields])
        if spans is True:  # the regex might match where the fast split does not
            return None
        if isinstance(spans, RawSpans):
            return _typed(text, fmt, spans)
    return None


def _typed(text: ByteText, fmt: EventFormat, spans: RawSpans) -> PayloadResult | None:
    fields = fmt.payload_fields
    if any(isinstance(f.polars_dtype(), pl.List) for f in fields):
        return None
    rules = raw_value_rules(fmt)
    columns: list[pl.Series] = []
    for f, vs, ve in zip(fields, spans.starts, spans.ends, strict=True):
        rule = rules.get(f.name)
        if rule is not None and rule.symbols:
            return None
        column = _string_column(text, f, vs, ve) if f.is_string else _int_column(text, f, rule, vs, ve)
        if column is None:
            return None
        if column.null_count() and f.name not in SYMBOL_FIELDS:
            return None
        columns.append(column)
    return PayloadResult(pl.DataFrame(columns), fmt, "raw")


def _string_column(text: ByteText, f: FieldFormat, vs: I64, ve: I64) -> pl.Series | None:
    length = ve - vs
    if vs.size and int(length.max()) <= STRING_INTERN_WIDTH:
        interned = intern(text, vs, length, STRING_INTERN_WIDTH)
        if interned is None:
            return None
        if not all(v.isascii() for v in interned.values):
            return None
        values = pl.Series(f.name, [v.decode() for v in interned.values], dtype=pl.String)
        return values.gather(interned.codes)
    data = text.data
    raw = [data[int(s) : int(e)] for s, e in zip(vs, ve, strict=True)]
    if not all(v.isascii() for v in raw):
        return None
    return pl.Series(f.name, [v.decode() for v in raw], dtype=pl.String)


def _int_column(
    text: ByteText, f: FieldFormat, rule: FieldRule | None, vs: I64, ve: I64
) -> pl.Series | None:
    hex_default = rule is not None and (rule.hex or rule.conversion == "s")
    parsed = parse_number(text, vs, ve, hex_default)
    as_int = parsed.value.view(np.int64)
    as_int = np.where(parsed.negative, -as_int, as_int)
    bits = 8 * f.size if not f.is_bool else 8
    dtype = f.polars_dtype()
    if bits >= 64:
        values = pl.Series(f.name, as_int.view(np.int64 if f.signed else np.uint64))
    else:
        low = as_int & ((1 << bits) - 1)
        if f.signed:
            low = np.where(low >= (1 << (bits - 1)), low - (1 << bits), low)
        values = pl.Series(f.name, low)
    if f.is_bool:
        values = values.cast(pl.Int64) != 0
    values = values.cast(dtype, strict=False).alias(f.name)
    bad = np.flatnonzero(~parsed.ok)
    if bad.size:
        data = text.data
        texts = pl.Series(
            "v",
            [data[int(vs[i]) : int(ve[i])].decode("utf-8", errors="replace") for i in bad],
            dtype=pl.String,
        )
        fixed = pl.DataFrame([texts]).select(typed_value(pl.col("v"), f, rule)).to_series()
        values = values.scatter(pl.Series(bad), fixed)
    return values
