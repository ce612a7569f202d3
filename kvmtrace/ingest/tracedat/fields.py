"""Gather typed field values out of raw record payloads, vectorised, using the format files' layouts.

The trick: an overlapping view of the data with a stride of one byte, ``view[a]`` being the
value of the field's type starting at byte ``a``, turns every field of every record into a
single numpy gather at the record's payload address, whatever the field's size or alignment.
Strings are gathered the same way as fixed-width byte strings, deduplicated by a hash of their
bytes and decoded once per distinct value.
"""

from __future__ import annotations

import ctypes
import sys

import numpy as np
import polars as pl

from kvmtrace.fileformats.formats import EventFormat, FieldFormat
from kvmtrace.ingest import kernels
from kvmtrace.ingest.arrowlists import list_series
from kvmtrace.ingest.dtypes import field_dtype, lists_of

_HASH_MULT = np.uint64(0x9E3779B97F4A7C15)
_MAX_STRING_WIDTH = 4096


class Blob:
    """The capture's raw bytes, with typed overlapping views for gathering fields."""

    def __init__(self, data: np.ndarray, e: str, path: str = "") -> None:
        self.data = data
        self.e = e
        self.path = path  # of the capture, for errors
        self._views: dict[tuple[str, int], np.ndarray] = {}

    def view(self, code: str, offset: int) -> np.ndarray:
        """``view(code, off)[a]`` is the value of numpy type ``code`` (file byte order) at byte ``a + off``."""
        key = (code, offset)
        if key not in self._views:
            dt = np.dtype(code if code.startswith("S") else self.e + code)
            count = max(0, len(self.data) - offset - dt.itemsize + 1)
            self._views[key] = (np.ndarray(shape=(count,), dtype=dt, buffer=self.data, offset=offset, strides=(1,))
                                if count else np.zeros(0, dt))
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
        if len(view) == 0:  # past the end of the data: nothing to read
            return np.zeros(len(addr), view.dtype)
        if len(addr) and int(addr.max()) >= len(view):  # a damaged record at the very end of the data
            addr = np.minimum(addr, len(view) - 1)
        return view[addr]


def strings_from_spans(blob: Blob, starts: np.ndarray, lengths: np.ndarray) -> pl.Series:
    """Byte spans cut at their first NUL, as a String series; each distinct value decoded once (with the
    native kernels, spans are interned in one pass over their bytes, no fixed-width copy)."""
    n = len(starts)
    if n == 0:
        return pl.Series(values=[], dtype=pl.String)
    lengths = np.clip(lengths, 0, _MAX_STRING_WIDTH)
    lib = kernels.library()
    if lib is not None:
        return _interned_strings(lib, blob, starts, lengths)
    width = max(8, (int(lengths.max()) + 7) // 8 * 8)
    rows = blob.bytes_at(starts, width)
    if int(lengths.min()) < width:
        rows = rows.copy()
        rows[np.arange(width) >= lengths[:, None]] = 0
    return _decode_rows(rows)


def fixed_strings(blob: Blob, payload: np.ndarray, offset: int, width: int) -> pl.Series:
    """``char name[width]`` fields: the whole array is the field, cut at its first NUL."""
    if len(payload) == 0:
        return pl.Series(values=[], dtype=pl.String)
    lib = kernels.library()
    if lib is not None and len(blob.data) >= width:
        starts = np.minimum(np.asarray(payload, np.int64) + offset, len(blob.data) - width)
        return _interned_strings(lib, blob, starts, np.full(len(payload), width, np.int64))
    padded = (width + 7) // 8 * 8
    rows = blob.bytes_at(payload, width, offset)
    if padded != width:
        rows = np.concatenate([rows, np.zeros((len(rows), padded - width), np.uint8)], axis=1)
    return _decode_rows(rows)


def _interned_strings(lib: ctypes.CDLL, blob: Blob, starts: np.ndarray, lengths: np.ndarray) -> pl.Series:
    """The native twin of the fixed-width path: spans interned by their bytes (kt_text_intern), each
    distinct one cut at its first NUL and decoded once (UTF-8, invalid bytes replaced), then gathered."""
    codes, values = kernels.intern_spans(lib, blob.data, starts, lengths)
    texts = [v.split(b"\0", 1)[0].decode("utf-8", "replace") for v in values]
    return pl.Series(values=texts, dtype=pl.String).gather(pl.Series(codes.view(np.uint32)))


def _row_texts(rows: np.ndarray) -> pl.Series:
    """Fixed-width rows of bytes as text cut at the first NUL (interned in C when the kernels are
    loaded, else _decode_rows)."""
    lib = kernels.library()
    if lib is None or rows.size == 0:
        return _decode_rows(rows)
    rows = np.ascontiguousarray(rows)
    width = rows.shape[1]
    return _interned_strings(lib, Blob(rows.reshape(-1), "<"), np.arange(len(rows), dtype=np.int64) * width,
                             np.full(len(rows), width, np.int64))


def _decode_rows(rows: np.ndarray) -> pl.Series:
    """Each row's bytes up to its first NUL, as text. Plain ASCII rows (nearly all) go to polars as one
    fixed-width byte array (trailing NULs dropped); rows with other bytes, or with text after a NUL,
    are decoded one distinct value at a time (UTF-8, invalid bytes replaced)."""
    rows = np.ascontiguousarray(rows)
    binary = pl.Series(rows.view(f"S{rows.shape[1]}").ravel())
    odd = (rows >= 0x80).any(axis=1) | binary.bin.contains(b"\0").to_numpy()
    if not odd.any():
        return binary.cast(pl.String)
    where = np.flatnonzero(odd)
    plain = pl.select(pl.when(pl.lit(pl.Series(odd))).then(pl.lit(b"")).otherwise(pl.lit(binary))).to_series()
    return plain.cast(pl.String).scatter(where, _dedupe_decode(rows[where]))


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


def field_extent(f: FieldFormat, max_len: int) -> int:
    """Bytes of a fixed field read from records at most ``max_len`` long: the field cut at the record's
    end (the one bounds rule of both engines: bytes past a record read as 0, never another's bytes)."""
    return int(max(0, min(f.size, max_len - f.offset)))


def within_record(start: np.ndarray, span: np.ndarray, payload: np.ndarray, length: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray, int]:
    """``span`` bytes at ``start``, cut to the record at ``payload`` of ``length`` bytes; the cut spans
    and how many were cut."""
    start = np.asarray(start, np.int64)
    end = np.asarray(payload, np.int64) + length
    inside = np.clip(np.minimum(start + span, end) - start, 0, None)
    inside[start < payload] = 0
    return start, inside, int((inside != span).sum())


def field_series(blob: Blob, payload: np.ndarray, length: np.ndarray, f: FieldFormat,
                 notes: list[str] | None = None) -> pl.Series:
    """One field of one event type, for every record of ``length`` payload bytes; values that would
    lie past their record are cut (counted in ``notes``)."""
    if f.is_dynamic:
        return _dynamic_field(blob, payload, length, f, notes)
    if f.array_len == 0:  # trailing "char buf[]": the rest of the record
        span = np.clip(length - f.offset, 0, None)
        if f.is_string:
            return strings_from_spans(blob, payload + f.offset, span).alias(f.name)
        return _int_lists(blob, payload + f.offset, span, f).alias(f.name)
    if f.array_len is not None:
        starts, span, _cut = within_record(payload + f.offset, np.full(len(payload), f.size), payload, length)
        if f.is_string:
            return strings_from_spans(blob, starts, span).alias(f.name)
        return _int_lists(blob, starts, span, f).alias(f.name)
    if f.size not in (1, 2, 4, 8):  # as libtraceevent's tep_read_number: 0
        return pl.Series(f.name, np.zeros(len(payload), np.uint64), dtype=field_dtype(f))
    values = blob.integer(payload, f.size, f.signed, f.offset)
    outside = length < f.offset + f.size
    if outside.any():
        values[outside] = 0
        if notes is not None:
            notes.append(f"field {f.name}: {int(outside.sum())} records end before its bytes "
                         f"{f.offset}..{f.offset + f.size}: read as 0")
    if f.is_bool:
        return pl.Series(f.name, values != 0)
    return pl.Series(f.name, values, dtype=field_dtype(f))


def dynamic_series(blob: Blob, payload: np.ndarray, length: np.ndarray, f: FieldFormat,
                   notes: list[str] | None = None) -> pl.Series:
    """field_series of a ``__data_loc`` / ``__rel_loc`` field, from uint32 payload addresses and int32
    lengths: where each value lies found in one pass by kt_dynamic_spans when the kernels are loaded."""
    lib = kernels.library()
    if lib is None:
        return _dynamic_field(blob, payload.astype(np.intp), length, f, notes)
    payload = np.ascontiguousarray(payload, np.uint32)
    length = np.ascontiguousarray(length, np.int32)
    start, span = np.empty(len(payload), np.int64), np.empty(len(payload), np.int64)
    swap = (blob.e == ">") != (sys.byteorder == "big")
    cut = int(lib.kt_dynamic_spans(kernels.ptr(blob.data), len(blob.data), kernels.ptr(payload), kernels.ptr(length),
                                   len(payload), f.offset, int(f.rel_loc), int(swap), kernels.ptr(start),
                                   kernels.ptr(span)))
    return _dynamic_values(blob, start, span, cut, f, notes)


def _dynamic_field(blob: Blob, payload: np.ndarray, length: np.ndarray, f: FieldFormat,
                   notes: list[str] | None) -> pl.Series:
    loc = blob.uint(payload, 4, f.offset).astype(np.int64)
    loc[length < f.offset + 4] = 0
    offset, span = loc & 0xFFFF, loc >> 16
    start = (payload + f.offset + 4 + offset) if f.rel_loc else (payload + offset)
    start, span, cut = within_record(start, span, payload, length)
    return _dynamic_values(blob, start, span, cut, f, notes)


def _dynamic_values(blob: Blob, start: np.ndarray, span: np.ndarray, cut: int, f: FieldFormat,
                    notes: list[str] | None) -> pl.Series:
    if cut and notes is not None:
        notes.append(f"field {f.name}: {cut} values point past their record: cut at its end")
    if f.is_string:
        return strings_from_spans(blob, start, span).alias(f.name)
    return _int_lists(blob, start, span, f).alias(f.name)


def _int_lists(blob: Blob, starts: np.ndarray, spans: np.ndarray, f: FieldFormat) -> pl.Series:
    """Arrays of integers, one list per record, built from flat buffers (no per-record Python): when the
    lists are about equally long, one gather into a records x longest rectangle, reshaped and cut to
    each record's length; otherwise every element gathered once and grouped back by record."""
    elem = max(1, f.element_size)
    elem = elem if elem in (1, 2, 4, 8) else 1
    inner = field_dtype(FieldFormat("x", "", 0, elem, f.signed))
    counts = np.asarray(spans, np.int64) // elem
    n, width, total = len(counts), int(counts.max(initial=0)), int(counts.sum())
    if width == 0:
        return lists_of(pl.Series("v", [], dtype=inner), counts, pl.List(inner))
    lib = kernels.library()
    if lib is not None and total != n * width:
        return _flat_lists(lib, blob, np.asarray(starts, np.int64), counts, elem, f.signed)
    if n * width <= 2 * total + 4096:
        values = pl.Series("v", _rectangle(blob, np.asarray(starts, np.int64), counts, width, elem, f.signed),
                           dtype=inner)
        lists = values.reshape((n, width)).cast(pl.List(inner))
        if total == n * width:
            return lists
        return pl.DataFrame({"v": lists, "n": counts}).select(pl.col("v").list.head(pl.col("n")))["v"]
    return _grouped_lists(blob, starts, counts, elem, inner, f.signed)


def _rectangle(blob: Blob, starts: np.ndarray, counts: np.ndarray, width: int, elem: int,
               signed: bool) -> np.ndarray:
    """Row i holds the ``width`` elements from ``starts[i]``, flattened: one gather of fixed-width byte
    rows viewed as integers. Rows too close to the end of the data for a whole row (a short record
    there) are read element by element, their elements past ``counts[i]`` as 0."""
    code = f"{'i' if signed else 'u'}{elem}"
    nbytes = width * elem
    rows = blob.bytes_at(starts, nbytes)
    values = rows.view(blob.e + code).reshape(-1).astype(code, copy=False)
    late = np.flatnonzero(starts > len(blob.data) - nbytes)
    if len(late):
        column = np.arange(width, dtype=np.int64)
        inside = column < counts[late, None]
        addr = np.where(inside, starts[late, None] + column * elem, 0)
        patch = np.where(inside, blob.integer(addr.ravel(), elem, signed).reshape(len(late), width), 0)
        table = values.reshape(len(starts), width).copy()
        table[late] = patch
        return table.reshape(-1)
    return values


def _flat_lists(lib: ctypes.CDLL, blob: Blob, starts: np.ndarray, counts: np.ndarray, elem: int,
                signed: bool) -> pl.Series:
    """Lists of different lengths: every record's elements copied one after another (kt_gather_spans),
    viewed as integers and cut by the counts (ingest/arrowlists.py)."""
    nbytes = np.ascontiguousarray(counts * elem, np.int64)
    starts = np.ascontiguousarray(starts, np.int64)
    flat = np.empty(int(nbytes.sum()), np.uint8)
    lib.kt_gather_spans(kernels.ptr(blob.data), kernels.ptr(starts), kernels.ptr(nbytes), len(starts),
                        kernels.ptr(flat))
    code = f"{'i' if signed else 'u'}{elem}"
    return list_series("v", flat.view(blob.e + code).astype(code, copy=False), counts)


def _grouped_lists(blob: Blob, starts: np.ndarray, counts: np.ndarray, elem: int, inner: pl.DataType,
                   signed: bool) -> pl.Series:
    """Lists of very different lengths: every element gathered at once, grouped by its record."""
    first = np.cumsum(counts) - counts
    total = int(counts.sum())
    addr = np.repeat(np.asarray(starts, np.int64) - first * elem, counts) + np.arange(total, dtype=np.int64) * elem
    return lists_of(pl.Series("v", blob.integer(addr, elem, signed), dtype=inner), counts, pl.List(inner))


def event_columns(blob: Blob, payload: np.ndarray, length: np.ndarray, fields: list[FieldFormat],
                  notes: list[str] | None = None) -> list[pl.Series]:
    """Every field of one event type: each record's fixed part is gathered once (one random access
    per record), its bytes past the record's end zeroed, then fields are cut from that compact copy
    by a structured dtype."""
    max_len = int(length.max(initial=0))
    plain = [f for f in fields if is_plain(f, max_len)]
    if not plain or len(payload) == 0:
        return [field_series(blob, payload, length, f, notes) for f in fields]
    size = max(f.offset + field_extent(f, max_len) for f in plain)
    raw = blob.bytes_at(payload, size)
    if int(length.min()) < size:  # short records: only their own bytes
        raw = np.where(np.arange(size) < length[:, None], raw, 0).astype(np.uint8)
    rec = np.ascontiguousarray(raw).view(np.dtype({
        "names": [f.name for f in plain],
        "formats": [plain_code(f, blob.e, max_len) for f in plain],
        "offsets": [f.offset for f in plain],
        "itemsize": size,
    })).reshape(len(payload))
    out = []
    for f in fields:
        if not is_plain(f, max_len):
            out.append(field_series(blob, payload, length, f, notes))
        elif f.is_string:
            width = field_extent(f, max_len)
            out.append(plain_series(f, np.ascontiguousarray(rec[f.name]).view(np.uint8).reshape(len(payload), width)))
        else:
            out.append(plain_series(f, rec[f.name]))
    return out


def plain_series(f: FieldFormat, values: np.ndarray) -> pl.Series:
    """The column of a plain field from its raw values: numbers in the file's byte order (any
    layout), or an (n, width) uint8 array of a char array's bytes (zero padded to a multiple of 8)."""
    if f.is_string:
        padded = (values.shape[1] + 7) // 8 * 8 or 8
        if values.shape[1] < padded:
            values = np.concatenate([values, np.zeros((len(values), padded - values.shape[1]), np.uint8)], axis=1)
        return _row_texts(values).alias(f.name)
    if f.is_bool:
        return pl.Series(f.name, values != 0)
    native = np.ascontiguousarray(values).astype(plain_code(f, "="), copy=False)
    return pl.Series(f.name, native, dtype=field_dtype(f))


def string_width(f: FieldFormat, max_len: int) -> int:
    """Bytes per row of a char array's raw values: the part inside records, rounded up to 8 (zero padded)."""
    return (field_extent(f, max_len) + 7) // 8 * 8 or 8


def plain_extent(fmt: EventFormat, max_len: int) -> int:
    """Bytes of a record's fixed part read into its plain fields: a shorter record has its own bytes
    and zeros past its end (both engines count those records)."""
    return max((f.offset + field_extent(f, max_len) for f in fmt.payload_fields if is_plain(f, max_len)), default=0)


def is_plain(f: FieldFormat, max_len: int) -> bool:
    """A fixed-size scalar or char array with some bytes inside records of ``max_len`` bytes: one
    slice of the record's fixed part."""
    if f.is_dynamic or f.array_len == 0:
        return False
    if f.array_len is not None:
        return f.is_string and field_extent(f, max_len) > 0
    return f.size in (1, 2, 4, 8) and f.offset + f.size <= max_len


def plain_code(f: FieldFormat, e: str, max_len: int = 1 << 30) -> str:
    if f.array_len is not None:
        return f"S{field_extent(f, max_len)}"
    return f"{e}{'i' if f.signed and not f.is_bool else 'u'}{f.size}"
