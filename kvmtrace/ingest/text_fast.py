"""Vectorised byte-level parsing of the common ``trace-cmd report`` line layout (numpy, no per-line Python).

This is the second tier of the text reader: text_modal takes the lines in the file's dominant column
layout first, the lines it leaves come here, and the lines this leaves go to the exact regex reader.
The text is one numpy uint8 array. Each step looks at a small fixed-width window of bytes per line
(``sliding_window_view(buf, W)[positions]``), so a step costs a few numpy passes over n x W bytes.
A line is taken here only when it has exactly the layout

    [buffer: ]  comm-pid  [cpu]  sec.frac: event:  payload

with plain spaces, ASCII comm/event, decimal numbers of modest width and no ``\\r``; every other line
(``-l`` latency flags, odd whitespace, non-ASCII names, headers, lost-event notices) is left to the
exact regex reader in ``text_lines``. For a line taken here the result is the one the regex gives:
the first ``[`` after the comm is the CPU bracket, so no earlier ``-pid [cpu]`` can match.

Strings (comm, event, buffer, short string fields) are interned: a hash of the zero-masked window
gives a code per line, verified against one representative line per code, and only the few distinct
values are decoded in Python.
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

SPACE, DASH, DOT, COLON, LBRACKET, RBRACKET, CR = 32, 45, 46, 58, 91, 93, 13
TAIL_GUARD = 128  # lines this close to the end of the text go to the exact reader
MIN_START = 24  # and so do lines this close to its start (right-aligned windows look back)


def _table(chars: bytes) -> Mask:
    table = np.zeros(256, dtype=bool)
    table[list(chars)] = True
    return table


DIGIT = _table(b"0123456789")
WORD = _table(b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_")
WHITESPACE = _table(b" \t\n\v\f\r")
BUFFER_STOP = _table(b" \t\n\v\f\r[]:")
POW10 = np.array([10**i for i in range(20)], dtype=np.uint64)


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
        return bytes(self._source[start:end])

    def window(self, pos: I64, width: int) -> U8:
        """Rows of ``width`` bytes starting at ``pos`` (callers keep pos within the text)."""
        view = self._views.get(width)
        if view is None:
            view = sliding_window_view(self.buf, width)
            self._views[width] = view
        return view[pos]

    def safe(self, pos: I64) -> I64:
        return np.clip(pos, 0, self.buf.size - 64)


NEWLINE_BLOCK = 1 << 20  # bytes compared at a time (the mask stays in the cache)


def newline_positions(buf: U8) -> I64:
    """Positions of the ``\\n`` bytes."""
    return byte_positions(buf, 10)


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


# ---------------------------------------------------------------- numbers


def decimal_left(win: U8, length: I64) -> U64:
    """Value of the first ``length`` bytes (ASCII digits) of each row of an 8- or 16-byte window."""
    width = win.shape[1]
    keep = np.arange(width) < length[:, None]
    digits = np.where(keep, win & 0x0F, 0).astype(np.uint8)
    words = np.ascontiguousarray(digits).view(np.uint64)
    value = _swar8(words[:, 0])
    if width == 16:
        value = value * np.uint64(100_000_000) + _swar8(words[:, 1])
    return value // POW10[width - np.clip(length, 0, width)]


def _swar8(word: U64) -> U64:
    """Eight digit values (0..9, one per byte, most significant first in memory) to their number."""
    w = (word * np.uint64(10) + (word >> np.uint64(8))) & np.uint64(0x00FF00FF00FF00FF)
    w = (w * np.uint64(100) + (w >> np.uint64(16))) & np.uint64(0x0000FFFF0000FFFF)
    return (w * np.uint64(10000) + (w >> np.uint64(32))) & np.uint64(0xFFFFFFFF)


# ---------------------------------------------------------------- interning


@dataclass
class Interned:
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
    frac_digits: NDArray[np.integer[Any]]  # int64, or uint32 (text_modal native)
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


def parse_prefixes(text: ByteText, starts: I64, ends: I64) -> FastPrefixes | None:
    """Parse every line that has the plain report layout; None when interning fails."""
    buf = text.buf
    ok = (starts >= MIN_START) & (ends + TAIL_GUARD <= buf.size) & (ends - starts >= 16)
    ok &= buf[np.maximum(ends - 1, 0)] != CR
    rows = np.flatnonzero(ok)
    s = starts[rows]
    e = ends[rows]
    # optional "buffer: " prefix: a run of [^\s\[\]:] right at the line start followed by ": "
    c0 = s.copy()
    buffer_len = np.zeros(rows.size, dtype=np.int64)
    cand = np.flatnonzero(buf[s] != SPACE)
    good = np.ones(rows.size, dtype=bool)
    if cand.size:
        w = text.window(s[cand], 64)
        stop = BUFFER_STOP[w]
        k = stop.argmax(axis=1)
        at = np.arange(cand.size)
        nxt = np.minimum(k + 1, 63)
        is_buffer = stop[at, k] & (k > 0) & (w[at, k] == COLON) & (w[at, nxt] == SPACE) & (k < 56)
        non_ascii = ((w >= 128) & (np.arange(64) < k[:, None])).any(axis=1)
        good[cand[is_buffer & non_ascii]] = False
        hit = cand[is_buffer]
        c0[hit] += k[is_buffer] + 2
        buffer_len[hit] = k[is_buffer]
    # comm-pid [ within 32 bytes: first non-space, the first '[', the '-' before the pid
    W = 32
    w = text.window(c0, W)
    k = np.arange(W)
    at = np.arange(rows.size)
    nonspace = w != SPACE
    c1 = nonspace.argmax(axis=1)
    is_lb = w == LBRACKET
    p = is_lb.argmax(axis=1)
    good &= is_lb[at, p]
    before = nonspace & (k < p[:, None])
    last = W - 1 - before[:, ::-1].argmax(axis=1)  # last non-space before '['
    good &= before[at, last] & (last < p - 1)
    nondigit = ~DIGIT[w] & (k <= last[:, None])
    dash = W - 1 - nondigit[:, ::-1].argmax(axis=1)
    pid_len = last - dash
    good &= nondigit[at, dash] & (w[at, dash] == DASH) & (pid_len >= 1) & (pid_len <= 8) & (dash >= c1)
    comm_len = dash - c1
    bad = ((w < 32) | (w >= 127)) & (k >= c1[:, None]) & (k < dash[:, None])
    good &= ~bad.any(axis=1) & (comm_len <= 16)
    # pid
    pid_win = text.window(c0 + dash + 1, 8)
    pid = decimal_left(pid_win, pid_len)
    # [cpu]
    p_abs = c0 + p
    cw = text.window(p_abs + 1, 8)
    cpu_len = (~DIGIT[cw]).argmax(axis=1)
    good &= (cpu_len >= 1) & (cw[at, cpu_len] == RBRACKET)
    cpu = decimal_left(cw, cpu_len)
    # "   sec.frac: "
    r = p_abs + 1 + cpu_len  # the ']'
    TW = 32
    tw = text.window(r + 1, TW)
    k = np.arange(TW)
    tdig = DIGIT[tw]
    sec0 = (tw != SPACE).argmax(axis=1)
    dot = (tw == DOT).argmax(axis=1)
    colon = (tw == COLON).argmax(axis=1)
    sec_len = dot - sec0
    frac_len = colon - dot - 1
    good &= (sec0 >= 1) & (sec_len >= 1) & (sec_len <= 16) & (frac_len >= 1) & (frac_len <= 9)
    good &= (colon < TW - 1) & (tw[at, np.minimum(colon + 1, TW - 1)] == SPACE)
    digit_zone = ((k >= sec0[:, None]) & (k < dot[:, None])) | ((k > dot[:, None]) & (k < colon[:, None]))
    good &= ~(digit_zone & ~tdig).any(axis=1)
    sec = decimal_left(text.window(text.safe(r + 1 + sec0), 16), sec_len)
    frac = decimal_left(text.window(text.safe(r + 2 + dot), 16), frac_len)
    frac_ns = frac * POW10[9 - np.clip(frac_len, 0, 9)]
    ts = sec.astype(np.int64) * 1_000_000_000 + frac_ns.astype(np.int64)
    # "event:   payload"
    es = text.safe(r + 1 + colon + 2)
    EW = 48
    ew = text.window(es, EW)
    k = np.arange(EW)
    name_len = (~WORD[ew]).argmax(axis=1)
    good &= (name_len >= 1) & (ew[at, name_len] == COLON)
    after = (ew != SPACE) & (k > name_len[:, None])
    pay = after.argmax(axis=1)
    good &= after[at, pay]
    ps = es + pay
    good &= ~WHITESPACE[buf[ps]] | (ps == e)
    good &= ps <= e
    # keep the good lines
    sel = np.flatnonzero(good)
    rows, s, e = rows[sel], s[sel], e[sel]
    c0, c1, dash, buffer_len = c0[sel], c1[sel], dash[sel], buffer_len[sel]
    comm = intern(text, c0 + c1, (dash - c1)[:], 16)
    event = intern(text, es[sel], name_len[sel], 48)
    buffer = _intern_buffers(text, s, buffer_len)
    if comm is None or event is None or buffer is None:
        return None
    return FastPrefixes(
        rows=rows,
        ts=ts[sel],
        frac_digits=frac_len[sel],
        cpu=cpu[sel].astype(np.int64),
        pid=pid[sel].astype(np.int64),
        comm=comm,
        event=event,
        buffer=buffer,
        payload_start=ps[sel],
        payload_end=e,
    )


def _intern_buffers(text: ByteText, s: I64, buffer_len: I64) -> Interned | None:
    """Buffer codes: 0 is the top-level buffer "", the named ones (usually none) follow."""
    named = np.flatnonzero(buffer_len > 0)
    codes = np.zeros(s.size, dtype=np.int32)
    if named.size == 0:
        return Interned(codes, [b""])
    interned = intern(text, s[named], buffer_len[named], 56)
    if interned is None:
        return None
    codes[named] = interned.codes + 1
    return Interned(codes, [b"", *interned.values])


# ---------------------------------------------------------------- -R payloads (see text_raw)


@dataclass
class Parsed:
    """Integer values of one field; ``ok`` False where the fast grammar did not apply."""

    value: U64
    negative: Mask
    ok: Mask
