"""Gather typed field values out of raw record payloads, vectorised, using the format files' layouts.

Ring-buffer records are 4-byte aligned, so every field of an event type sits at a fixed byte
inside a fixed 32-bit word of its record: ``Records`` computes each record's word index once per
event type and serves every field from (cached) word gathers. Strings are deduplicated by a hash
of their bytes and decoded once per distinct value.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from kvmtrace.ingest.formats import FieldFormat

_MATRIX_BYTES = 64 << 20  # bytes gathered at once when cutting strings out of records
_HASH_MULT = np.uint64(0x9E3779B97F4A7C15)


class Words:
    """The blob as u32 words in the file's byte order."""

    def __init__(self, blob: np.ndarray, e: str) -> None:
        self.blob = blob
        self.e = e
        self.words = blob[: len(blob) // 4 * 4].view(f"{e}u4")

    def uint(self, addr: np.ndarray, size: int) -> np.ndarray:
        """Unsigned integers of ``size`` bytes at byte addresses ``addr`` (any alignment)."""
        if len(addr) == 0:
            return np.zeros(0, f"u{size}")
        if size == 1:
            return self.blob[addr]
        head = int(addr[0]) & 3
        if size in (2, 4, 8) and head % min(size, 4) == 0 and not np.any((addr & 3) != head):
            return Records(self, addr - head).uint(head, size)
        return _bytes_uint(self.blob, addr, size, self.e)


class Records:
    """The records of one event type: payload addresses (4-aligned) and cached word gathers."""

    def __init__(self, words: Words, payload: np.ndarray) -> None:
        self.w = words
        self.payload = payload
        self.index = payload >> 2
        self._last = int(self.index.max()) if len(payload) else 0
        self._cache: dict[int, np.ndarray] = {}

    def word(self, k: int) -> np.ndarray:
        """The k-th u32 word of every record (in the file's byte order, as a native uint32)."""
        if k not in self._cache:
            idx = self.index + k if k else self.index
            if self._last + k >= len(self.w.words):  # a damaged record near the end of the data
                idx = np.minimum(idx, len(self.w.words) - 1)
            self._cache[k] = self.w.words[idx].astype(np.uint32, copy=False)  # native byte order
        return self._cache[k]

    def uint(self, offset: int, size: int) -> np.ndarray:
        """Unsigned field of ``size`` bytes at byte ``offset`` of every record."""
        k, head = divmod(offset, 4)
        if size == 4 and head == 0:
            return self.word(k)
        if size == 8 and head == 0:
            first, second = self.word(k).astype(np.uint64), self.word(k + 1).astype(np.uint64)
            lo, hi = (second, first) if self.w.e == ">" else (first, second)
            return lo | (hi << np.uint64(32))
        if size in (1, 2) and head + size <= 4:
            shift = 8 * (4 - head - size) if self.w.e == ">" else 8 * head
            mask = np.uint32((1 << (8 * size)) - 1)
            return ((self.word(k) >> np.uint32(shift)) & mask).astype(f"u{size}")
        return _bytes_uint(self.w.blob, self.payload + offset, size, self.w.e)

    def int(self, offset: int, size: int, signed: bool) -> np.ndarray:
        raw = self.uint(offset, size)
        if signed and size in (1, 2, 4, 8):
            return raw.view(f"i{size}")
        return raw


def _bytes_uint(blob: np.ndarray, addr: np.ndarray, size: int, e: str) -> np.ndarray:
    out = np.zeros(len(addr), np.uint64)
    for k in range(size):
        shift = (size - 1 - k) if e == ">" else k
        out |= blob[addr + k].astype(np.uint64) << np.uint64(8 * shift)
    return out.astype(f"u{size}") if size in (1, 2, 4, 8) else out


def strings_from_spans(blob: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> pl.Series:
    """Byte spans cut at their first NUL, as a String series; each distinct value decoded once."""
    n = len(starts)
    if n == 0:
        return pl.Series(values=[], dtype=pl.String)
    lengths = np.clip(lengths, 0, None)
    width = max(8, (int(lengths.max()) + 7) // 8 * 8)
    rows_per_chunk = max(1, _MATRIX_BYTES // width)
    parts = [_cut_rows(blob, starts[lo:lo + rows_per_chunk], lengths[lo:lo + rows_per_chunk], width)
             for lo in range(0, n, rows_per_chunk)]
    rows = np.concatenate(parts) if len(parts) > 1 else parts[0]
    return _dedupe_decode(rows)


def _cut_rows(blob: np.ndarray, starts: np.ndarray, lengths: np.ndarray, width: int) -> np.ndarray:
    """(n, width) uint8 rows holding each span up to its first NUL, zero-padded."""
    cols = np.arange(width)
    m = blob[np.minimum(starts[:, None] + cols, len(blob) - 1)]
    m[cols >= lengths[:, None]] = 0
    zero = m == 0
    first_nul = np.where(zero.any(axis=1), zero.argmax(axis=1), width)
    m[cols >= first_nul[:, None]] = 0
    return m


def _dedupe_decode(rows: np.ndarray) -> pl.Series:
    """Decode each distinct row once (hash of its 8-byte words), then gather; exact on collisions."""
    as_u64 = np.ascontiguousarray(rows).view(np.uint64)
    h = np.zeros(len(rows), np.uint64)
    for j in range(as_u64.shape[1]):
        h = (h ^ as_u64[:, j]) * _HASH_MULT
    _, first, inverse = np.unique(h, return_index=True, return_inverse=True)
    if not np.array_equal(rows, rows[first[inverse]]):  # a hash collision: decode every row
        first, inverse = np.arange(len(rows)), np.arange(len(rows))
    texts = [bytes(r).rstrip(b"\0").decode("utf-8", "replace") for r in rows[first]]
    return pl.Series(values=texts, dtype=pl.String).gather(pl.Series(inverse.astype(np.uint32)))


def field_series(rec: Records, length: np.ndarray | None, f: FieldFormat) -> pl.Series:
    """One field of one event type, for every record (``length``: payload lengths, for trailing arrays)."""
    blob, e = rec.w.blob, rec.w.e
    if f.is_dynamic:
        return _dynamic_field(rec, f)
    addr = rec.payload + f.offset
    if f.array_len == 0:  # trailing "char buf[]": the rest of the record
        assert length is not None
        span = np.clip(length - f.offset, 0, None)
        if f.is_string:
            return strings_from_spans(blob, addr, span).alias(f.name)
        return _int_lists(blob, addr, span, f.element_size, f.signed, e).alias(f.name)
    if f.array_len is not None:
        if f.is_string:
            return strings_from_spans(blob, addr, np.full(len(addr), f.size)).alias(f.name)
        return _int_lists(blob, addr, np.full(len(addr), f.size), f.element_size, f.signed, e).alias(f.name)
    values = rec.int(f.offset, f.size, f.signed)
    if f.is_bool:
        return pl.Series(f.name, values != 0)
    return pl.Series(f.name, values, dtype=f.polars_dtype())


def _dynamic_field(rec: Records, f: FieldFormat) -> pl.Series:
    loc = rec.uint(f.offset, 4).astype(np.int64)
    offset, span = loc & 0xFFFF, loc >> 16
    start = (rec.payload + f.offset + 4 + offset) if f.rel_loc else (rec.payload + offset)
    if f.is_string:
        return strings_from_spans(rec.w.blob, start, span).alias(f.name)
    return _int_lists(rec.w.blob, start, span, f.element_size, f.signed, rec.w.e).alias(f.name)


def _int_lists(blob: np.ndarray, starts: np.ndarray, spans: np.ndarray, elem: int, signed: bool,
               e: str) -> pl.Series:
    """Arrays of integers (rare: kept simple, one slice per record)."""
    dtype = np.dtype(f"{e}{'i' if signed else 'u'}{elem}")
    values = [np.frombuffer(blob[int(s):int(s) + int(n) // elem * elem].tobytes(), dtype=dtype).tolist()
              for s, n in zip(starts, spans, strict=True)]
    return pl.Series(values=values, dtype=pl.List(FieldFormat("x", "", 0, elem, signed).polars_dtype()))
