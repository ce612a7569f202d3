"""Gather typed field values out of raw record payloads, vectorised, using the format files' layouts."""

from __future__ import annotations

import numpy as np
import polars as pl

from kvmtrace.ingest.formats import FieldFormat

_MATRIX_BYTES = 64 << 20  # bytes gathered at once when cutting strings out of records


class Words:
    """The blob as native u32 words in the file's byte order, for gathering aligned fields fast."""

    def __init__(self, blob: np.ndarray, e: str) -> None:
        self.blob = blob
        self.e = e
        self.words = blob[: len(blob) // 4 * 4].view(f"{e}u4")

    def uint(self, addr: np.ndarray, size: int) -> np.ndarray:
        """Unsigned integers of ``size`` bytes at byte addresses ``addr``."""
        if len(addr) == 0:
            return np.zeros(0, f"u{size}")
        head = int(addr[0]) & 3
        if size == 1:
            return self.blob[addr]
        if size in (2, 4, 8) and head % min(size, 4) == 0 and not np.any((addr & 3) != head):
            return self._aligned(addr >> 2, head, size)
        return _bytes_uint(self.blob, addr, size, self.e)

    def _aligned(self, word: np.ndarray, head: int, size: int) -> np.ndarray:
        w = self.words[word]
        if size == 4:
            return w.astype(np.uint32, copy=False)
        if size == 2:
            shift = 8 * (4 - head - 2) if self.e == ">" else 8 * head
            return ((w >> np.uint32(shift)) & np.uint32(0xFFFF)).astype(np.uint16)
        second = self.words[np.minimum(word + 1, len(self.words) - 1)].astype(np.uint64)
        first = w.astype(np.uint64)
        lo, hi = (second, first) if self.e == ">" else (first, second)
        return lo | (hi << np.uint64(32))

    def int(self, addr: np.ndarray, size: int, signed: bool) -> np.ndarray:
        raw = self.uint(addr, size)
        if signed and size in (1, 2, 4, 8):
            return raw.view(f"i{size}")
        return raw


def _bytes_uint(blob: np.ndarray, addr: np.ndarray, size: int, e: str) -> np.ndarray:
    out = np.zeros(len(addr), np.uint64)
    for k in range(size):
        shift = (size - 1 - k) if e == ">" else k
        out |= blob[addr + k].astype(np.uint64) << np.uint64(8 * shift)
    return out.astype(f"u{size}") if size in (1, 2, 4, 8) else out


def gather_uint(blob: np.ndarray, addr: np.ndarray, size: int, e: str) -> np.ndarray:
    """Unsigned integers of ``size`` bytes at byte addresses ``addr`` (any alignment)."""
    return Words(blob, e).uint(addr, size)


def gather_int(blob: np.ndarray, addr: np.ndarray, size: int, signed: bool, e: str) -> np.ndarray:
    return Words(blob, e).int(addr, size, signed)


def strings_from_spans(blob: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> pl.Series:
    """Byte spans cut at their first NUL, as a String series (invalid UTF-8 becomes null)."""
    n = len(starts)
    if n == 0:
        return pl.Series(values=[], dtype=pl.String)
    lengths = np.clip(lengths, 0, None)
    width = max(1, int(lengths.max()))
    rows_per_chunk = max(1, _MATRIX_BYTES // width)
    parts = []
    cols = np.arange(width)
    limit = len(blob) - 1
    for lo in range(0, n, rows_per_chunk):
        s = starts[lo:lo + rows_per_chunk]
        ln = lengths[lo:lo + rows_per_chunk]
        idx = np.minimum(s[:, None] + cols, limit)
        m = blob[idx]
        m[cols >= ln[:, None]] = 0
        first_nul = np.where((m == 0).any(axis=1), (m == 0).argmax(axis=1), width)
        m[cols >= first_nul[:, None]] = 0
        parts.append(np.ascontiguousarray(m).view(f"S{width}").ravel())
    fixed = np.concatenate(parts) if len(parts) > 1 else parts[0]
    try:
        return pl.Series(values=fixed).cast(pl.String)
    except pl.exceptions.ComputeError:  # invalid UTF-8 somewhere: decode with U+FFFD replacements
        return pl.Series(values=[b.decode("utf-8", "replace") for b in fixed.tolist()], dtype=pl.String)


def field_series(words: Words, payload: np.ndarray, length: np.ndarray, f: FieldFormat) -> pl.Series:
    """One field of one event type, for every record (payload byte addresses given)."""
    blob, e = words.blob, words.e
    addr = payload + f.offset
    if f.is_dynamic:
        return _dynamic_field(words, payload, addr, f)
    if f.array_len == 0:  # trailing "char buf[]": the rest of the record
        span = np.clip(length - f.offset, 0, None)
        if f.is_string:
            return strings_from_spans(blob, addr, span).alias(f.name)
        return _int_lists(blob, addr, span, f.element_size, f.signed, e).alias(f.name)
    if f.array_len is not None:
        if f.is_string:
            return strings_from_spans(blob, addr, np.full(len(addr), f.size)).alias(f.name)
        return _int_lists(blob, addr, np.full(len(addr), f.size), f.element_size, f.signed, e).alias(f.name)
    values = words.int(addr, f.size, f.signed)
    if f.is_bool:
        return pl.Series(f.name, values != 0)
    return pl.Series(f.name, values, dtype=f.polars_dtype())


def _dynamic_field(words: Words, payload: np.ndarray, addr: np.ndarray, f: FieldFormat) -> pl.Series:
    blob, e = words.blob, words.e
    loc = words.uint(addr, 4).astype(np.int64)
    offset, span = loc & 0xFFFF, loc >> 16
    start = (addr + 4 + offset) if f.rel_loc else (payload + offset)
    if f.is_string:
        return strings_from_spans(blob, start, span).alias(f.name)
    return _int_lists(blob, start, span, f.element_size, f.signed, e).alias(f.name)


def _int_lists(blob: np.ndarray, starts: np.ndarray, spans: np.ndarray, elem: int, signed: bool,
               e: str) -> pl.Series:
    """Arrays of integers (rare: kept simple, one slice per record)."""
    dtype = np.dtype(f"{e}{'i' if signed else 'u'}{elem}")
    values = [np.frombuffer(blob[int(s):int(s) + int(n) // elem * elem].tobytes(), dtype=dtype).tolist()
              for s, n in zip(starts, spans, strict=True)]
    return pl.Series(values=values, dtype=pl.List(FieldFormat("x", "", 0, elem, signed).polars_dtype()))
