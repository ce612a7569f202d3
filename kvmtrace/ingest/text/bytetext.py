"""The text as bytes for the vectorised parsers (numpy, no per-line Python): ``ByteText`` with cached
sliding-window views, line bounds, joined line runs, interning of short strings (a hash of the
zero-masked window gives a code per line, verified against one representative line per code, and
only the few distinct values are decoded in Python), SWAR decimal digits, the ``FastPrefixes`` the
prefix tier (modal) produces and the ``Parsed`` integers of the ``-R`` payload tiers (raw, typed).

(Until issue 12 this module also held a second prefix tier, a windowed parser for the lines the
modal tier leaves; scripts/bench_text_tiers.py showed it gained 0-12 % over modal + exact on every
text tried, 1.00x on the large ones, so it was removed.)
"""

from __future__ import annotations

import mmap
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from numpy.typing import NDArray

U8 = NDArray[np.uint8]
I64 = NDArray[np.int64]
U64 = NDArray[np.uint64]
Mask = NDArray[np.bool_]



def _table(chars: bytes) -> Mask:
    """A 256-entry lookup table: True at the byte values in ``chars`` (index it with a byte array)."""
    table = np.zeros(256, dtype=bool)
    table[list(chars)] = True
    return table


WHITESPACE = _table(b" \t\n\v\f\r")


class ByteText:
    """The text as a numpy byte array, with cached sliding-window views.

    Made from bytes (``data``) or from a uint8 array (then ``data`` is empty: read it with ``piece``).
    """

    def __init__(self, data: bytes | mmap.mmap | U8) -> None:
        self._source: bytes | mmap.mmap | memoryview
        self.data: bytes | mmap.mmap
        if isinstance(data, np.ndarray):
            self.buf: U8 = data
            self.data = b""
            self._source = data.data
        else:
            self.buf = np.frombuffer(data, dtype=np.uint8)
            self.data = data
            self._source = data
        self._views: dict[int, NDArray[np.uint8]] = {}
        size = max(self.buf.size - 7, 0)
        # the 8 bytes at every position as one little-endian word (a view, no copy)
        self.words: U64 = np.ndarray((size,), dtype="<u8", buffer=self.buf, strides=(1,))

    def piece(self, start: int, end: int) -> bytes:
        """The bytes ``start:end`` of the text."""
        return bytes(self._source[start:end])

    def window(self, pos: I64, width: int) -> U8:
        """Rows of ``width`` bytes starting at ``pos`` (callers keep pos within the text)."""
        view = self._views.get(width)
        if view is None:
            view = sliding_window_view(self.buf, width)
            self._views[width] = view
        return view[pos]

    def safe(self, pos: I64) -> I64:
        """``pos`` clipped so that a window of up to 64 bytes from it stays inside the text."""
        return np.clip(pos, 0, self.buf.size - 64)


NEWLINE = 10
NEWLINE_BLOCK = 1 << 20  # bytes compared at a time in byte_positions (the mask stays in the cache)


def newline_positions(buf: U8) -> I64:
    """Positions of the ``\\n`` bytes."""
    return byte_positions(buf, NEWLINE)


def byte_positions(buf: U8, value: int) -> I64:
    """Positions of the bytes equal to ``value``."""
    if buf.size <= NEWLINE_BLOCK:
        return np.flatnonzero(buf == value)
    mask = np.empty(NEWLINE_BLOCK, dtype=bool)
    parts = []
    for at in range(0, buf.size, NEWLINE_BLOCK):
        piece = buf[at : at + NEWLINE_BLOCK]
        hits = mask[: piece.size]
        np.equal(piece, value, out=hits)
        found = np.flatnonzero(hits)
        found += at
        parts.append(found)
    return np.concatenate(parts)


def line_bounds(buf: U8) -> tuple[I64, I64]:
    """Start and end (exclusive, without the newline) of every line, as split_lines numbers them."""
    newlines = newline_positions(buf)
    starts = np.empty(newlines.size + 1, dtype=np.int64)
    starts[0] = 0
    starts[1:] = newlines + 1
    ends = np.empty_like(starts)
    ends[:-1] = newlines
    ends[-1] = buf.size
    if starts[-1] == buf.size:  # text ends with a newline: no extra empty line
        starts, ends = starts[:-1], ends[:-1]
    return starts, ends


BLANK_WINDOW = 8  # lines of at most this many whitespace bytes are blank (dropped before parsing)
JOIN_BLOCK = 1 << 16  # lines joined at a time (joined_lines)


def drop_blank_lines(text: ByteText, starts: I64, ends: I64) -> tuple[I64, I64, I64 | None]:
    """The lines that are not blank (empty, or a few whitespace bytes: noise in every layout) and the
    numbers of those lines (None when none was dropped). Only looked for when lines are short on
    average (real trace lines are 40-200 bytes), so a flood of newlines costs little memory."""
    n = starts.size
    if n == 0 or n * 16 <= text.buf.size:
        return starts, ends, None
    length = ends - starts
    blank = length == 0
    short = np.flatnonzero((length > 0) & (length <= BLANK_WINDOW) & (starts + BLANK_WINDOW <= text.buf.size))
    if short.size:
        win = text.window(starts[short], BLANK_WINDOW)
        inside = np.arange(BLANK_WINDOW) < length[short][:, None]
        blank[short] = ~(inside & ~WHITESPACE[win]).any(axis=1)
    if not bool(blank.any()):
        return starts, ends, None
    keep = np.flatnonzero(~blank)
    return starts[keep], ends[keep], keep


def joined_lines(text: ByteText, starts: I64, ends: I64, rows: I64) -> bytes:
    """The lines ``rows`` one after another, each ended by a newline (vectorised, by blocks of lines)."""
    parts = []
    for at in range(0, rows.size, JOIN_BLOCK):
        block = rows[at:at + JOIN_BLOCK]
        s, e = starts[block], ends[block]
        lengths = e - s + 1  # with the newline
        total = int(lengths.sum())
        first = np.cumsum(lengths) - lengths
        index = np.arange(total, dtype=np.int64) - np.repeat(first - s, lengths)
        out = text.buf[np.minimum(index, text.buf.size - 1)] if total else np.zeros(0, np.uint8)
        out[first + lengths - 1] = NEWLINE
        parts.append(out.tobytes())
    return b"".join(parts)


# ---------------------------------------------------------------- numbers


def _swar8(word: U64) -> U64:
    """Eight digit values (0..9, one per byte, most significant first in memory) to their number."""
    w = (word * np.uint64(10) + (word >> np.uint64(8))) & np.uint64(0x00FF00FF00FF00FF)
    w = (w * np.uint64(100) + (w >> np.uint64(16))) & np.uint64(0x0000FFFF0000FFFF)
    return (w * np.uint64(10000) + (w >> np.uint64(32))) & np.uint64(0xFFFFFFFF)


# ---------------------------------------------------------------- interning


@dataclass
class Interned:
    """Byte strings as a code per row (``codes``) into the list of distinct ``values``."""

    codes: NDArray[np.int32]
    values: list[bytes]


def intern(text: ByteText, pos: I64, length: I64, width: int) -> Interned | None:
    """Codes for the byte strings ``text[pos:pos+length]`` (length <= width, width % 8 == 0)."""
    n = pos.size
    if n == 0:
        return Interned(np.zeros(0, dtype=np.int32), [])
    win = text.window(pos, width)
    win = np.where(np.arange(width) < length[:, None], win, 0).astype(np.uint8)
    words = np.ascontiguousarray(win).view(np.uint64)
    h = length.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
    for j in range(words.shape[1]):
        h = (h ^ words[:, j]) * np.uint64(0xBF58476D1CE4E5B9)
        h ^= h >> np.uint64(29)
    codes = _dense_codes(h)
    if codes is None:
        return None
    count = int(codes.max()) + 1
    rep = np.zeros(count, dtype=np.int64)
    rep[codes] = np.arange(n)
    same = (words == words[rep[codes]]).all(axis=1) & (length == length[rep[codes]])
    if not bool(same.all()):
        return None  # a hash collision: let the caller take the slow way
    starts = pos[rep]
    lengths = length[rep]
    values = [text.piece(int(s), int(s) + int(k)) for s, k in zip(starts, lengths, strict=True)]
    return Interned(codes.astype(np.int32), values)


def _dense_codes(h: U64) -> NDArray[np.int64] | None:
    """0..k-1 codes for the distinct hashes, by a 16-bit bucket table (np.unique when it collides)."""
    for mult in (0xD6E8FEB86659FD93, 0xA0761D6478BD642F, 0xE7037ED1A0B428DB):
        bucket = ((h * np.uint64(mult)) >> np.uint64(48)).astype(np.int64)
        table = np.zeros(1 << 16, dtype=np.uint64)
        table[bucket] = h
        if bool((table[bucket] == h).all()):
            used = np.zeros(1 << 16, dtype=bool)
            used[bucket] = True
            ids = np.cumsum(used) - 1
            return ids[bucket]
    _, inverse = np.unique(h, return_inverse=True)
    return inverse.astype(np.int64)


# ---------------------------------------------------------------- line prefixes


@dataclass
class FastPrefixes:
    """The lines parsed here (``rows``: indices into the line arrays) and their prefix values."""

    rows: I64
    ts: I64
    frac_digits: NDArray[np.integer[Any]]  # int64, or uint32 (modal native)
    cpu: NDArray[np.signedinteger[Any]]
    pid: NDArray[np.signedinteger[Any]]
    comm: Interned
    event: Interned
    buffer: Interned  # code 0 is "" when any line has no buffer prefix
    payload_start: I64
    payload_end: I64

    def subset(self, keep: Mask | I64) -> FastPrefixes:
        """The lines ``keep`` selects (a mask) or orders (an index array); value lists stay as they are."""
        return FastPrefixes(
            rows=self.rows[keep],
            ts=self.ts[keep],
            frac_digits=self.frac_digits[keep],
            cpu=self.cpu[keep],
            pid=self.pid[keep],
            comm=Interned(self.comm.codes[keep], self.comm.values),
            event=Interned(self.event.codes[keep], self.event.values),
            buffer=Interned(self.buffer.codes[keep], self.buffer.values),
            payload_start=self.payload_start[keep],
            payload_end=self.payload_end[keep],
        )


# ---------------------------------------------------------------- -R payloads (see raw)


@dataclass
class Parsed:
    """Integer values of one field; ``ok`` False where the fast grammar did not apply."""

    value: U64
    negative: Mask
    ok: Mask
