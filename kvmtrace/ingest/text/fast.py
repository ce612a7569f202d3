"""Vectorised byte-level parsing of the common ``trace-cmd report`` line layout (numpy, no per-line Python).

This is the second tier of the text reader: modal takes the lines in the file's dominant column
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

from kvmtrace.ingest.limits import MAX_CPU_ID, MAX_TS_SECONDS

U8 = NDArray[np.uint8]
I64 = NDArray[np.int64]
U64 = NDArray[np.uint64]
Mask = NDArray[np.bool_]

SPACE, DASH, DOT, COLON, LBRACKET, RBRACKET, CR = 32, 45, 46, 58, 91, 93, 13
TAIL_GUARD = 128  # lines this close to the end of the text go to the exact reader
MIN_START = 24  # and so do lines this close to its start (right-aligned windows look back)


def _table(chars: bytes) -> Mask:
    """A 256-entry lookup table: True at the byte values in ``chars`` (index it with a byte array)."""
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


# Window widths (bytes looked at per line) and field limits of the window tier.
BUFFER_WINDOW = 64  # from the line start: "buffer: "
MAX_BUFFER_NAME = 56  # a longer buffer name is not taken as one
TASK_WINDOW = 32  # from the comm field start: "  comm-pid   ["
MAX_COMM = 16
MAX_PID_DIGITS = 8
TIME_WINDOW = 32  # from just after "]": "   sec.frac: "
MAX_SEC_DIGITS = 10  # and below limits.MAX_TS_SECONDS: the ns fit int64
MAX_FRAC_DIGITS = 9
EVENT_WINDOW = 48  # from the event name: "event:   " up to the payload's first byte
MIN_LINE = 16  # shorter lines go to the exact reader


def parse_prefixes(text: ByteText, starts: I64, ends: I64) -> FastPrefixes | None:
    """Parse every line that has the plain report layout; None when interning fails.

    Each step reads one field of every candidate line and says which lines it fits (``good``);
    the lines every step fits are kept.
    """
    rows = _candidate_rows(text.buf, starts, ends)
    line_start, line_end = starts[rows], ends[rows]
    buffer = _buffer_prefixes(text, line_start)
    task = _comm_and_pid(text, buffer.task_start)
    cpu = _cpu_field(text, task.bracket)
    stamp = _timestamp_field(text, cpu.close)
    event = _event_field(text, stamp.colon, line_end)
    keep = np.flatnonzero(buffer.good & task.good & cpu.good & stamp.good & event.good)
    comm = intern(text, task.comm_start[keep], task.comm_len[keep], MAX_COMM)
    event_name = intern(text, event.name_start[keep], event.name_len[keep], EVENT_WINDOW)
    buffer_name = _intern_buffers(text, line_start[keep], buffer.length[keep])
    if comm is None or event_name is None or buffer_name is None:
        return None
    return FastPrefixes(
        rows=rows[keep],
        ts=stamp.ns[keep],
        frac_digits=stamp.frac_digits[keep],
        cpu=cpu.value[keep].astype(np.int64),
        pid=task.pid[keep].astype(np.int64),
        comm=comm,
        event=event_name,
        buffer=buffer_name,
        payload_start=event.payload_start[keep],
        payload_end=line_end[keep],
    )


def _candidate_rows(buf: U8, starts: I64, ends: I64) -> I64:
    """Indices of the lines the fixed windows may read: not too near either end of the text, at least
    MIN_LINE bytes long, and not ending in ``\\r``."""
    ok = (starts >= MIN_START) & (ends + TAIL_GUARD <= buf.size) & (ends - starts >= MIN_LINE)
    ok &= buf[np.maximum(ends - 1, 0)] != CR
    return np.flatnonzero(ok)


@dataclass
class BufferPrefixes:
    """The optional ``buffer: `` prefix of each line (absolute positions)."""

    task_start: I64  # where the comm field (with its leading spaces) starts: after the prefix, if any
    length: I64  # length of the buffer name; 0 when the line has no prefix
    good: Mask  # False where the prefix names a buffer with non-ASCII bytes


def _buffer_prefixes(text: ByteText, line_start: I64) -> BufferPrefixes:
    """Find each line's buffer prefix: a run of [^\\s\\[\\]:] right at the line start followed by ``": "``."""
    task_start = line_start.copy()
    length = np.zeros(line_start.size, dtype=np.int64)
    good = np.ones(line_start.size, dtype=bool)
    maybe = np.flatnonzero(text.buf[line_start] != SPACE)  # the comm field itself starts with spaces
    if maybe.size:
        win = text.window(line_start[maybe], BUFFER_WINDOW)
        stop = BUFFER_STOP[win]
        name_len = stop.argmax(axis=1)  # first stop byte
        at = np.arange(maybe.size)
        after_colon = np.minimum(name_len + 1, BUFFER_WINDOW - 1)
        is_buffer = (
            stop[at, name_len]
            & (name_len > 0)
            & (win[at, name_len] == COLON)
            & (win[at, after_colon] == SPACE)
            & (name_len < MAX_BUFFER_NAME)
        )
        non_ascii = ((win >= 128) & (np.arange(BUFFER_WINDOW) < name_len[:, None])).any(axis=1)
        good[maybe[is_buffer & non_ascii]] = False
        prefixed = maybe[is_buffer]
        task_start[prefixed] += name_len[is_buffer] + 2
        length[prefixed] = name_len[is_buffer]
    return BufferPrefixes(task_start, length, good)


@dataclass
class TaskFields:
    """``comm-pid`` and the ``[`` after it (absolute positions)."""

    comm_start: I64
    comm_len: I64
    pid: U64
    bracket: I64  # the '[' that opens the CPU field
    good: Mask


def _comm_and_pid(text: ByteText, task_start: I64) -> TaskFields:
    """Split ``  comm-pid  [`` within TASK_WINDOW bytes: the first non-space starts the comm, the first
    '[' ends the field, the last non-space before it ends the pid, and the '-' before the pid's digits
    ends the comm (so a comm may hold '-' and digits)."""
    win = text.window(task_start, TASK_WINDOW)
    col = np.arange(TASK_WINDOW)
    at = np.arange(task_start.size)
    nonspace = win != SPACE
    comm0 = nonspace.argmax(axis=1)
    is_bracket = win == LBRACKET
    bracket = is_bracket.argmax(axis=1)
    good = is_bracket[at, bracket]
    before = nonspace & (col < bracket[:, None])
    pid_last = _last_true(before)
    good &= before[at, pid_last] & (pid_last < bracket - 1)  # at least one space before '['
    nondigit = ~DIGIT[win] & (col <= pid_last[:, None])
    dash = _last_true(nondigit)
    pid_len = pid_last - dash
    good &= nondigit[at, dash] & (win[at, dash] == DASH) & (pid_len >= 1) & (pid_len <= MAX_PID_DIGITS)
    good &= dash >= comm0
    comm_len = dash - comm0
    unprintable = ((win < 32) | (win >= 127)) & (col >= comm0[:, None]) & (col < dash[:, None])
    good &= ~unprintable.any(axis=1) & (comm_len <= MAX_COMM)
    pid = decimal_left(text.window(task_start + dash + 1, 8), pid_len)
    return TaskFields(task_start + comm0, comm_len, pid, task_start + bracket, good)


def _last_true(mask: Mask) -> I64:
    """Column of the last True of each row (the last column when a row has none: check it)."""
    width = mask.shape[1]
    return width - 1 - mask[:, ::-1].argmax(axis=1)


@dataclass
class CpuField:
    """The ``[cpu]`` field: its value and the position of its ``]``."""

    value: U64
    close: I64
    good: Mask


def _cpu_field(text: ByteText, bracket: I64) -> CpuField:
    """Read the decimal CPU number after the '[' at ``bracket``; it must be closed by ']'."""
    win = text.window(bracket + 1, 8)
    at = np.arange(bracket.size)
    length = (~DIGIT[win]).argmax(axis=1)
    good = (length >= 1) & (win[at, length] == RBRACKET)
    value = decimal_left(win, length)
    good &= value <= MAX_CPU_ID
    return CpuField(value, bracket + 1 + length, good)


@dataclass
class TimestampField:
    """The ``   sec.frac:`` field: nanoseconds, digits after the dot, and the position of its ``:``."""

    ns: I64
    frac_digits: I64
    colon: I64
    good: Mask


def _timestamp_field(text: ByteText, close: I64) -> TimestampField:
    """Read ``   sec.frac: `` after the ']' at ``close``: spaces, digits, '.', 1 to 9 digits, ": "."""
    start = close + 1
    win = text.window(start, TIME_WINDOW)
    col = np.arange(TIME_WINDOW)
    at = np.arange(close.size)
    sec0 = (win != SPACE).argmax(axis=1)
    dot = (win == DOT).argmax(axis=1)
    colon = (win == COLON).argmax(axis=1)
    sec_len = dot - sec0
    frac_len = colon - dot - 1
    good = (sec0 >= 1) & (sec_len >= 1) & (sec_len <= MAX_SEC_DIGITS)
    good &= (frac_len >= 1) & (frac_len <= MAX_FRAC_DIGITS)
    good &= (colon < TIME_WINDOW - 1) & (win[at, np.minimum(colon + 1, TIME_WINDOW - 1)] == SPACE)
    in_sec = (col >= sec0[:, None]) & (col < dot[:, None])
    in_frac = (col > dot[:, None]) & (col < colon[:, None])
    good &= ~((in_sec | in_frac) & ~DIGIT[win]).any(axis=1)
    sec = decimal_left(text.window(text.safe(start + sec0), 16), sec_len)
    frac = decimal_left(text.window(text.safe(start + dot + 1), 16), frac_len)
    good &= sec < MAX_TS_SECONDS
    frac_ns = frac * POW10[MAX_FRAC_DIGITS - np.clip(frac_len, 0, MAX_FRAC_DIGITS)]
    ns = sec.astype(np.int64) * 1_000_000_000 + frac_ns.astype(np.int64)
    return TimestampField(ns, frac_len, start + colon, good)


@dataclass
class EventField:
    """The ``event:   `` field: the name and where the payload starts (absolute positions)."""

    name_start: I64
    name_len: I64
    payload_start: I64
    good: Mask


def _event_field(text: ByteText, colon: I64, line_end: I64) -> EventField:
    """Read ``event:   payload`` two bytes after the timestamp's ':' at ``colon``: a word, ':', then
    the payload from the next non-space byte (an empty payload starts at the line end)."""
    start = text.safe(colon + 2)
    win = text.window(start, EVENT_WINDOW)
    col = np.arange(EVENT_WINDOW)
    at = np.arange(colon.size)
    name_len = (~WORD[win]).argmax(axis=1)
    good = (name_len >= 1) & (win[at, name_len] == COLON)
    after_name = (win != SPACE) & (col > name_len[:, None])
    payload = after_name.argmax(axis=1)
    good &= after_name[at, payload]
    payload_start = start + payload
    good &= ~WHITESPACE[text.buf[payload_start]] | (payload_start == line_end)
    good &= payload_start <= line_end
    return EventField(start, name_len, payload_start, good)


def _intern_buffers(text: ByteText, s: I64, buffer_len: I64) -> Interned | None:
    """Buffer codes: 0 is the top-level buffer "", the named ones (usually none) follow."""
    named = np.flatnonzero(buffer_len > 0)
    codes = np.zeros(s.size, dtype=np.int32)
    if named.size == 0:
        return Interned(codes, [b""])
    interned = intern(text, s[named], buffer_len[named], MAX_BUFFER_NAME)
    if interned is None:
        return None
    codes[named] = interned.codes + 1
    return Interned(codes, [b"", *interned.values])


# ---------------------------------------------------------------- -R payloads (see raw)


@dataclass
class Parsed:
    """Integer values of one field; ``ok`` False where the fast grammar did not apply."""

    value: U64
    negative: Mask
    ok: Mask
