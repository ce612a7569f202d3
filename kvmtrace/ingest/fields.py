"""Gather typed field values out of raw record payloads, vectorised, using the format files' layouts.

The trick: an overlapping view of the data with a stride of one byte, ``view[a]`` being the
value of the field's type starting at byte ``a``, turns every field of every record into a
single numpy gather at the record's payload address, whatever the field's size or alignment.
Strings are gathered the same way as fixed-width byte strings, deduplicated by a hash of their
bytes and decoded once per distinct value.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from kvmtrace.ingest.formats import FieldFormat

_HASH_MULT = np.uint64(0x9E3779B97F4A7C15)
_MAX_STRING_WIDTH = 4096


class Blob:
    """The capture's raw bytes, with typed overlapping views for gathering fields."""

    def __init__(self, data: np.ndarray, e: str) -> None:
        self.data = data
        self.e = e
        self._views: dict[tuple[str, int], np.ndarray] = {}

    def view(self, code: str, offset: int) -> np.ndarray:
        """``view(code, off)[a]`` is the value of numpy type ``code`` (file byte order) at byte ``a + off``."""
        key = (code, offset)
        if key not in self._views:
            dt = np.dtype(code if code.startswith("S") else self.e + code)
            count = max(0, len(self.data) - offset - dt.itemsize + 1)
            self._views[key] = np.ndarray(shape=(count,), dtype=dt, buffer=self.data, offset=offset, strides=(1,))
        return self._views[key]

    def uint(self, addr: np.ndarray, size: int, offset: int = 0) -> np.ndarray:
        """Unsigned integers of ``size`` bytes at byte addresses ``addr + offset``, native byte order."""
        return self._gather(f"u{size}", addr, offset).astype(f"u{size}", copy=False)

    def integer(self, addr: np.ndarray, size: int, signed: bool, offset: int = 0) -> np.ndarray:
        code = f"{'i' if signed else 'u'}{size}"
        return self._gather(code, addr, offset).astype(code, copy=False)

    def bytes_at(self, addr: np.ndarray, width: int, offset: int = 0) -> np.ndarray:
        """``width`` raw bytes at each address, as an (n, width) uint8 array."""
        return self._gather(f"S{width}", addr, offset).view(np.uint8).reshape(len(addr), width)

    def _gather(self, code: str, addr: np.ndarray, offset: int) -> np.ndarray:
        view = self.view(code, offset)
        if len(addr) and int(addr.max()) >= len(view):  # a damaged record at the very end of the data
            addr = np.minimum(addr, len(view) - 1)
        return view[addr]


def strings_from_spans(blob: Blob, starts: np.ndarray, lengths: np.ndarray) -> pl.Series:
    """Byte spans cut at their first NUL, as a String series; each distinct value decoded once."""
    n = len(starts)
    if n == 0:
        return pl.Series(values=[], dtype=pl.String)
    lengths = np.clip(lengths, 0, _MAX_STRING_WIDTH)
    width = max(8, (int(lengths.max()) + 7) // 8 * 8)
    rows = blob.bytes_at(starts, width)
    if int(lengths.min()) < width:
        rows = rows.copy()
        rows[np.arange(width) >= lengths[:, None]] = 0
    return _dedupe_decode(rows)


def fixed_strings(blob: Blob, payload: np.ndarray, offset: int, width: int) -> pl.Series:
    """``char name[width]`` fields: the whole array is the field, cut at its first NUL."""
    if len(payload) == 0:
        return pl.Series(values=[], dtype=pl.String)
    padded = (width + 7) // 8 * 8
    rows = blob.bytes_at(payload, width, offset)
    if padded != width:
        rows = np.concatenate([rows, np.zeros((len(rows), padded - width), np.uint8)], axis=1)
    return _dedupe_decode(rows)


def _dedupe_decode(rows: np.ndarray) -> pl.Series:
    """Decode each distinct row once (hash of its 8-byte words), then gather; exact on collisions."""
    as_u64 = np.ascontiguousarray(rows).view(np.uint64)
    h = np.zeros(len(rows), np.uint64)
    for j in range(as_u64.shape[1]):
        h = (h ^ as_u64[:, j]) * _HASH_MULT
    _, first, inverse = np.unique(h, return_index=True, return_inverse=True)
    if not np.array_equal(rows, rows[first[inverse]]):  # a hash collision: decode every row
        first, inverse = np.arange(len(rows)), np.arange(len(rows))
    texts = [bytes(r).split(b"\0", 1)[0].decode("utf-8", "replace") for r in rows[first]]
    return pl.Series(values=texts, dtype=pl.String).gather(pl.Series(inverse.astype(np.uint32)))


def field_series(blob: Blob, payload: np.ndarray, length: np.ndarray | None, f: FieldFormat) -> pl.Series:
    """One field of one event type, for every record (``length``: payload lengths, for trailing arrays)."""
    if f.is_dynamic:
        return _dynamic_field(blob, payload, f)
    if f.array_len == 0:  # trailing "char buf[]": the rest of the record
        assert length is not None
        span = np.clip(length - f.offset, 0, None)
        if f.is_string:
            return strings_from_spans(blob, payload + f.offset, span).alias(f.name)
        return _int_lists(blob, payload + f.offset, span, f).alias(f.name)
    if f.array_len is not None:
        if f.is_string:
            return fixed_strings(blob, payload, f.offset, f.size).alias(f.name)
        return _int_lists(blob, payload + f.offset, np.full(len(payload), f.size), f).alias(f.name)
    if f.is_bool:
        return pl.Series(f.name, blob.uint(payload, f.size, f.offset) != 0)
    values = blob.integer(payload, f.size, f.signed, f.offset) if f.size in (1, 2, 4, 8) else \
        blob.uint(payload, 8, f.offset)
    return pl.Series(f.name, values, dtype=f.polars_dtype())


def _dynamic_field(blob: Blob, payload: np.ndarray, f: FieldFormat) -> pl.Series:
    loc = blob.uint(payload, 4, f.offset).astype(np.int64)
    offset, span = loc & 0xFFFF, loc >> 16
    start = (payload + f.offset + 4 + offset) if f.rel_loc else (payload + offset)
    if f.is_string:
        return strings_from_spans(blob, start, span).alias(f.name)
    return _int_lists(blob, start, span, f).alias(f.name)


def _int_lists(blob: Blob, starts: np.ndarray, spans: np.ndarray, f: FieldFormat) -> pl.Series:
    """Arrays of integers (rare: kept simple, one slice per record)."""
    elem = f.element_size
    dtype = np.dtype(f"{blob.e}{'i' if f.signed else 'u'}{elem}")
    data = blob.data
    values = [np.frombuffer(data[int(s):int(s) + int(n) // elem * elem].tobytes(), dtype=dtype).tolist()
              for s, n in zip(starts, spans, strict=True)]
    return pl.Series(values=values, dtype=pl.List(FieldFormat("x", "", 0, elem, f.signed).polars_dtype()))


def event_columns(blob: Blob, payload: np.ndarray, length: np.ndarray | None, fields: list[FieldFormat]
                  ) -> list[pl.Series]:
    """Every field of one event type: each record's fixed part is gathered once (one random access
    per record), then fields are cut from that compact copy by a structured dtype."""
    plain = [f for f in fields if is_plain(f)]
    if not plain or len(payload) == 0:
        return [field_series(blob, payload, length, f) for f in fields]
    size = max(f.offset + f.size for f in plain)
    rec = blob._gather(f"S{size}", payload, 0).view(np.dtype({
        "names": [f.name for f in plain],
        "formats": [plain_code(f, blob.e) for f in plain],
        "offsets": [f.offset for f in plain],
        "itemsize": size,
    }))
    out = []
    for f in fields:
        if not is_plain(f):
            out.append(field_series(blob, payload, length, f))
        elif f.is_string:
            out.append(plain_series(f, np.ascontiguousarray(rec[f.name]).view(np.uint8).reshape(len(payload), f.size)))
        else:
            out.append(plain_series(f, rec[f.name]))
    return out


def plain_series(f: FieldFormat, values: np.ndarray) -> pl.Series:
    """The column of a plain field from its raw values: numbers in the file's byte order (any
    layout), or an (n, width) uint8 array of a char array's bytes (width: its size, or more with
    zero padding)."""
    if f.is_string:
        padded = string_width(f)
        if values.shape[1] < padded:
            values = np.concatenate([values, np.zeros((len(values), padded - values.shape[1]), np.uint8)], axis=1)
        return _dedupe_decode(values).alias(f.name)
    if f.is_bool:
        return pl.Series(f.name, values != 0)
    native = np.ascontiguousarray(values).astype(plain_code(f, "="), copy=False)
    return pl.Series(f.name, native, dtype=f.polars_dtype())


def string_width(f: FieldFormat) -> int:
    """Bytes per row of a char array's raw values: its size rounded up to 8 (zero padded)."""
    return (f.size + 7) // 8 * 8


def is_plain(f: FieldFormat) -> bool:
    """A fixed-size scalar or char array: one slice of the record's fixed part."""
    if f.is_dynamic or f.array_len == 0:
        return False
    if f.array_len is not None:
        return f.is_string and f.size > 0
    return f.size in (1, 2, 4, 8)


def plain_code(f: FieldFormat, e: str) -> str:
    if f.array_len is not None:
        return f"S{f.size}"
    return f"{e}{'i' if f.signed and not f.is_bool else 'u'}{f.size}"
