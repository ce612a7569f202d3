"""The fast tier of the text reader: lines laid out in the file's column layouts (the dominant ones).

``trace-cmd report`` pads its line prefix (``%16s-%-5d [%03d] %12s: %-22s``), so nearly every line of a
file has its ``[``, ``]``, ``.`` and ``:`` at the same columns. For the lines that do (a handful of
byte compares per line), the prefix splits into

* a *key*: the bytes up to the CPU's ``]`` (buffer, comm, pid, cpu) plus the first 24 bytes after the
  timestamp (event name, its padding, the first payload byte), hashed per line; only the few distinct
  keys are decoded, in Python, with the exact regex of the slow reader, so the values are the ones it
  gives by construction;
* the timestamp, read from fixed columns.

Lines whose key is not plain (non-ASCII, tabs, a second ``[``, a long event name) or whose columns differ
go to the exact regex reader (lines.py).

With the native engine the per-line checks, timestamps and key hashes come from kt_text_layout (on two
threads), the codes of the distinct keys from kt_text_modal_codes and the columns of the lines taken
from kt_text_modal_fill (text/kernels.c); only the decoding of the few distinct keys is shared.
"""

from __future__ import annotations

import ctypes
import mmap
import re
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from kvmtrace.ingest.kernels import ptr
from kvmtrace.ingest.limits import MAX_CPU_ID, MAX_PID, MAX_TS_SECONDS
from kvmtrace.ingest.text.bytetext import I64, U64, ByteText, FastPrefixes, Interned, Mask, _swar8
from kvmtrace.ingest.text.native import text_library

KEY2 = 24  # bytes hashed from the event name on (name, ':', padding, first payload byte)
SAMPLE = 1000  # lines looked at to find the dominant layout
ROUNDS = 2  # layouts tried (a second one when pids grow to 6 digits, say)
BLOCK = 1 << 16  # lines parsed at a time
LAYOUT_THREADS = 2  # the native kernels run on this many threads (parts of the lines)
MIN_SHARE = 0.02  # a layout is worth a round when this share of the remaining lines has it
_KEY1_RE = re.compile(rb"(?:([^\s\[\]:]+): )?\s*(.*?)-(\d+)\s+\[(\d+)\]")
_KEY2_RE = re.compile(rb"([A-Za-z0-9_]+):( *)")
MUL1 = np.uint64(0x9E3779B97F4A7C15)
MUL2 = np.uint64(0xBF58476D1CE4E5B9)
S29 = np.uint64(29)


_KeyInfo = tuple[bytes, bytes, int, int, bytes, int]  # buffer, comm, pid, cpu, event, payload offset


@dataclass(frozen=True)
class Layout:
    lb: int  # '[' column
    rb: int  # ']' column
    dot: int  # '.' of the timestamp
    colon: int  # ':' after the timestamp


def modal_prefixes(text: ByteText, starts: I64, ends: I64) -> tuple[FastPrefixes | None, I64]:
    """Prefixes of the lines in the dominant layouts, and the indices of the other lines."""
    rest = np.arange(starts.size, dtype=np.int64)
    parts: list[FastPrefixes] = []
    for _ in range(ROUNDS):
        everything = rest.size == starts.size  # rest is increasing: then it is every line
        some_starts, some_ends = (starts, ends) if everything else (starts[rest], ends[rest])
        layout = _dominant_layout(text.data, some_starts, some_ends)
        if layout is None:
            break
        got, taken = _parse_layout(text, some_starts, some_ends, layout)
        if got is None:
            break
        if not everything:
            got.rows = rest[got.rows]
        parts.append(got)
        rest = rest[~taken]
        if rest.size < MIN_SHARE * starts.size:
            break
    if not parts:
        return None, rest
    return merge_prefixes(parts), rest


def _dominant_layout(data: bytes | mmap.mmap, starts: I64, ends: I64) -> Layout | None:
    if starts.size == 0:
        return None
    step = max(1, starts.size // SAMPLE)
    counts: Counter[Layout] = Counter()
    for s, e in zip(starts[::step].tolist(), ends[::step].tolist(), strict=True):
        line = data[s:e]
        lb = line.find(b"[")
        rb = line.find(b"]", lb + 1) if lb >= 0 else -1
        colon = line.find(b":", rb + 1) if rb >= 0 else -1
        dot = line.rfind(b".", rb + 1, colon) if colon >= 0 else -1
        if 0 < lb < rb - 1 and rb + 1 < dot <= rb + 11 and dot + 1 < colon <= dot + 10:
            counts[Layout(lb, rb, dot, colon)] += 1
    if not counts:
        return None
    layout, count = counts.most_common(1)[0]
    if count < MIN_SHARE * (starts.size // step + 1):
        return None
    return layout


def _parse_layout(
    text: ByteText, starts: I64, ends: I64, lay: Layout
) -> tuple[FastPrefixes | None, Mask]:
    """The lines in layout ``lay``, in blocks of BLOCK lines (their arrays stay in the caches)."""
    n = starts.size
    ok = np.zeros(n, dtype=bool)
    ts = np.zeros(n, dtype=np.int64)
    check_cr = text.data.find(b"\r") >= 0
    lib = text_library()
    if lib is not None:
        return _native_parse_layout(lib, text, starts, ends, lay, check_cr, ok, ts)
    key = np.zeros(n, dtype=np.int32)
    pay = np.zeros(n, dtype=np.int64)  # payload start - line start
    keys: dict[bytes, int] = {}  # the key's bytes -> its number
    info: list[_KeyInfo | None] = []
    for at in range(0, n, BLOCK):
        part = slice(at, min(at + BLOCK, n))
        _parse_block(text, starts[part], ends[part], lay, check_cr, keys, info,
                     ok[part], ts[part], key[part], pay[part])
    keep = np.flatnonzero(ok)
    everything = keep.size == n
    comm_vals: dict[bytes, int] = {}
    event_vals: dict[bytes, int] = {}
    buffer_vals: dict[bytes, int] = {b"": 0}
    m = max(len(info), 1)
    comm_of = np.zeros(m, dtype=np.int32)
    event_of = np.zeros(m, dtype=np.int32)
    buffer_of = np.zeros(m, dtype=np.int32)
    pid_of = np.zeros(m, dtype=np.int32)
    cpu_of = np.zeros(m, dtype=np.int32)
    for k, item in enumerate(info):
        if item is None:
            continue
        buffer, comm, pid, cpu, event, _ = item
        comm_of[k] = comm_vals.setdefault(comm, len(comm_vals))
        event_of[k] = event_vals.setdefault(event, len(event_vals))
        buffer_of[k] = buffer_vals.setdefault(buffer, len(buffer_vals))
        pid_of[k], cpu_of[k] = pid, cpu
    kc = key if everything else key[keep]
    pe = ends if everything else ends[keep]
    ps = (starts if everything else starts[keep]) + (pay if everything else pay[keep])
    frac_len = lay.colon - lay.dot - 1
    result = FastPrefixes(
        rows=keep,
        ts=ts if everything else ts[keep],
        frac_digits=np.full(keep.size, frac_len, dtype=np.int64),
        cpu=cpu_of[kc],
        pid=pid_of[kc],
        comm=Interned(comm_of[kc], list(comm_vals)),
        event=Interned(event_of[kc], list(event_vals)),
        buffer=Interned(buffer_of[kc], list(buffer_vals)),
        payload_start=np.minimum(ps, pe),
        payload_end=pe,
    )
    return result, ok


def _native_parse_layout(
    lib: ctypes.CDLL, text: ByteText, starts: I64, ends: I64, lay: Layout, check_cr: bool, ok: Mask, ts: I64
) -> tuple[FastPrefixes | None, Mask]:
    """_parse_layout with the kernels: on each of two parts of the lines (two threads) kt_text_layout
    (checks, timestamps, key hashes) then kt_text_modal_codes (a code per distinct key, checked against
    the part's first line with it); the few keys decoded here; kt_text_modal_fill writing the lines
    taken straight into their columns (no per-block numpy).

    The same lines and values as the numpy way (the codes' order aside, which only orders the value
    lists: after a 64-bit hash collision between distinct keys, other lines than numpy's would leave
    this tier for the exact reader, which reads them to the same values).
    """
    starts = np.ascontiguousarray(starts, np.int64)
    ends = np.ascontiguousarray(ends, np.int64)
    n = starts.size
    parts = LAYOUT_THREADS if n >= BLOCK else 1
    cuts = [n * i // parts for i in range(parts + 1)]
    codes, rep_rows = _native_codes(lib, text, starts, ends, lay, check_cr, ok, ts, cuts)
    keys = _key_tables(text, starts, lay, rep_rows)
    return _native_fill(lib, text, starts, ends, lay, ok, ts, cuts, codes, keys)


def _in_parts(work: Callable[[int], int], parts: int) -> list[int]:
    """``work(i)`` for each part i, on one thread per part."""
    if parts == 1:
        return [work(0)]
    with ThreadPoolExecutor(max_workers=parts) as pool:
        return list(pool.map(work, range(parts)))


def _native_codes(lib: ctypes.CDLL, text: ByteText, starts: I64, ends: I64, lay: Layout, check_cr: bool,
                  ok: Mask, ts: I64, cuts: list[int]) -> tuple[NDArray[np.int32], list[int]]:
    """Per line its key's code (ok lines only; ``ok`` and ``ts`` filled), and per code the row of
    its representative line."""
    n = starts.size
    ns_off = lay.colon + 2
    codes = np.empty(n, np.int32)
    reps = np.empty(n, np.int64)  # pages past the codes' count are never touched
    ok8 = ok.view(np.uint8)

    def run(i: int) -> int:  # one part of the lines: its own codes, numbered from 0
        lo, hi = cuts[i], cuts[i + 1]
        h = np.empty(hi - lo, np.uint64)
        lib.kt_text_layout(ptr(text.buf), text.buf.size, hi - lo, ptr(starts[lo:]), ptr(ends[lo:]), lay.lb, lay.rb,
                           lay.dot, lay.colon, int(check_cr), ptr(ok8[lo:]), ptr(ts[lo:]), ptr(h))
        return int(lib.kt_text_modal_codes(ptr(text.buf), hi - lo, ptr(starts[lo:]), ptr(h), lay.rb + 1, ns_off,
                                           KEY2, ptr(ok8[lo:]), ptr(codes[lo:]), ptr(reps[lo:])))

    counts = _in_parts(run, len(cuts) - 1)
    if min(counts) < 0:
        raise MemoryError("kt_text_modal_codes")
    rep_rows: list[int] = []
    for i, c in enumerate(counts):  # the parts' codes one after the other
        if i:
            codes[cuts[i] : cuts[i + 1]] += len(rep_rows)  # lines not ok: ignored (kt_text_modal_fill)
        rep_rows.extend((reps[cuts[i] : cuts[i] + c] + cuts[i]).tolist())
    return codes, rep_rows


@dataclass
class _KeyTables:
    """Per key code: taken or not, the payload's offset, and its prefix values (comm, event and
    buffer as codes into the value lists)."""

    good: NDArray[np.uint8]
    offset: I64
    of: dict[str, NDArray[np.int32]]  # pid, cpu, comm, event, buffer
    comm: dict[bytes, int]
    event: dict[bytes, int]
    buffer: dict[bytes, int]


def _key_tables(text: ByteText, starts: I64, lay: Layout, rep_rows: list[int]) -> _KeyTables:
    """Each distinct key decoded once, from its representative line."""
    m = max(len(rep_rows), 1)
    keys = _KeyTables(np.zeros(m, np.uint8), np.zeros(m, np.int64),
                      {name: np.zeros(m, np.int32) for name in ("pid", "cpu", "comm", "event", "buffer")},
                      {}, {}, {b"": 0})
    ns_off = lay.colon + 2
    decoded: dict[bytes, _KeyInfo | None] = {}  # the parts share most keys
    for c, r in enumerate(rep_rows):
        start = int(starts[r])
        raw = text.piece(start, start + lay.rb + 1) + text.piece(start + ns_off, start + ns_off + KEY2)
        if raw not in decoded:
            decoded[raw] = _decode_key(text.data, start, lay, ns_off)
        item = decoded[raw]
        if item is None:
            continue
        buffer, comm, pid, cpu, event, off = item
        keys.good[c], keys.offset[c] = 1, off
        keys.of["comm"][c] = keys.comm.setdefault(comm, len(keys.comm))
        keys.of["event"][c] = keys.event.setdefault(event, len(keys.event))
        keys.of["buffer"][c] = keys.buffer.setdefault(buffer, len(keys.buffer))
        keys.of["pid"][c], keys.of["cpu"][c] = pid, cpu
    return keys


def _native_fill(lib: ctypes.CDLL, text: ByteText, starts: I64, ends: I64, lay: Layout, ok: Mask, ts: I64,
                 cuts: list[int], codes: NDArray[np.int32], keys: _KeyTables) -> tuple[FastPrefixes, Mask]:
    """The lines whose key is good, written into the prefix columns (kt_text_modal_fill per part,
    then the parts moved together); ``ok`` is reused as the mask of the rows taken."""
    n = starts.size
    ok8 = ok.view(np.uint8)
    rows = np.empty(n, np.int64)
    out = {name: np.empty(n, np.int32) for name in ("cpu", "pid", "comm", "event", "buffer")}
    ps = np.empty(n, np.int64)
    pe = np.empty(n, np.int64)
    columns: list[np.ndarray] = [rows, ts, out["cpu"], out["pid"], out["comm"], out["event"], out["buffer"], ps, pe]
    of = keys.of

    def fill(i: int) -> int:  # part i's lines taken, written from index cuts[i] on
        lo, hi = cuts[i], cuts[i + 1]
        return int(lib.kt_text_modal_fill(
            ptr(text.buf), hi - lo, lo, ptr(starts[lo:]), ptr(ends[lo:]), ptr(ok8[lo:]), ptr(codes[lo:]),
            ptr(keys.good), ptr(keys.offset), ptr(of["pid"]), ptr(of["cpu"]), ptr(of["comm"]), ptr(of["event"]),
            ptr(of["buffer"]), *(ptr(column[lo:]) for column in columns)))

    got = _in_parts(fill, len(cuts) - 1)
    taken = got[0]
    for i in range(1, len(got)):  # close the gaps between the parts (the lines not taken: few)
        for column in columns:
            lib.kt_text_move(ptr(column), column.itemsize, cuts[i], taken, got[i])
        taken += got[i]
    # the columns below are views of n rows: text._merged_in_place inserts rows in place
    rows = rows[:taken]
    taken_mask = ok  # reused: exactly the rows taken
    taken_mask[:] = False
    taken_mask[rows] = True
    result = FastPrefixes(
        rows=rows,
        ts=ts[:taken],
        frac_digits=np.full(n, lay.colon - lay.dot - 1, dtype=np.uint32)[:taken],  # (the column type)
        cpu=out["cpu"][:taken],
        pid=out["pid"][:taken],
        comm=Interned(out["comm"][:taken], list(keys.comm)),
        event=Interned(out["event"][:taken], list(keys.event)),
        buffer=Interned(out["buffer"][:taken], list(keys.buffer)),
        payload_start=ps[:taken],
        payload_end=pe[:taken],
    )
    return result, taken_mask


def _parse_block(
    text: ByteText,
    starts: I64,
    ends: I64,
    lay: Layout,
    check_cr: bool,
    keys: dict[bytes, int],
    info: list[_KeyInfo | None],
    ok: Mask,
    ts: I64,
    key: NDArray[np.int32],
    pay: I64,
) -> None:
    """Fill ``ok``, ``ts``, ``key`` (numbers in ``info``) and ``pay`` of one block of lines."""
    ns_off = lay.colon + 2  # event name start
    codes, reps = _codes(_block_words(text, starts, ends, lay, check_cr, ok, ts), ok)
    # number every distinct key of the block (decoded once for the whole text)
    local = np.zeros(reps.size, dtype=np.int32)
    good = np.zeros(reps.size, dtype=bool)
    offset = np.zeros(reps.size, dtype=np.int64)
    for j, r in enumerate(reps.tolist()):
        start = int(starts[r])
        raw = text.piece(start, start + lay.rb + 1) + text.piece(start + ns_off, start + ns_off + KEY2)
        number = keys.get(raw)
        if number is None:
            number = keys[raw] = len(info)
            info.append(_decode_key(text.data, start, lay, ns_off))
        item = info[number]
        local[j] = number
        good[j] = item is not None
        offset[j] = item[5] if item is not None else 0
    ok &= good[codes]
    key[:] = local[codes]
    pay[:] = offset[codes]
    far = np.flatnonzero((pay < 0) & ok)
    if far.size:
        pos = -pay[far]
        after = text.window(starts[far] + ns_off, KEY2 + 16)  # where a long name's payload starts
        k, found = _payload_starts(after[:, KEY2:], pos, ends[far] - starts[far])
        pay[far] = k
        ok[far] &= found


def _block_words(
    text: ByteText, starts: I64, ends: I64, lay: Layout, check_cr: bool, ok: Mask, ts: I64
) -> list[U64]:
    """Fill ``ok`` (the layout's columns and timestamp) and ``ts``; the key words of each line."""
    buf = text.buf
    # wide enough for the key bytes and the 8-byte words read at the seconds and the fraction
    width = (max(lay.colon + 2, lay.dot + 9) + 7) // 8 * 8
    ns_off = lay.colon + 2  # event name start
    ok[:] = (ends - starts >= ns_off + 1) & (starts + ns_off + KEY2 + 16 <= buf.size)
    ok &= starts + width + 8 <= buf.size
    s = np.where(ok, starts, 0)
    win = text.window(s, width)  # (n, width)
    ok &= win[:, lay.lb] == 91
    ok &= win[:, lay.rb] == 93
    ok &= win[:, lay.dot] == 46
    ok &= win[:, lay.colon] == 58
    ok &= win[:, lay.colon + 1] == 32
    # timestamp: \s+ sec '.' frac
    sec_ok, sec_v = _seconds(win, lay)
    frac_ok, frac_v = _fraction(win, lay)
    ok &= sec_ok & frac_ok
    frac_len = lay.colon - lay.dot - 1
    ts[:] = sec_v * 1_000_000_000 + frac_v * 10 ** (9 - frac_len)
    if check_cr:
        ok &= buf[np.maximum(ends - 1, 0)] != 13
    # the key: bytes [0, rb] of the line and KEY2 bytes from the event name
    kwords = (lay.rb + 1 + 7) // 8
    key1 = win[:, : kwords * 8].view(np.uint64)
    tail = (lay.rb + 1) % 8
    key2 = text.window(s + ns_off, KEY2)[:, :KEY2].view(np.uint64)
    words = [key1[:, j] for j in range(kwords)]
    if tail:
        words[-1] = words[-1] & np.uint64((1 << (8 * tail)) - 1)
    words += [key2[:, j] for j in range(KEY2 // 8)]
    return words


def _payload_starts(tail: NDArray[np.uint8], pos: I64, pe: I64) -> tuple[I64, Mask]:
    """First non-space in ``tail`` (the 16 bytes from ``pos``), and where that is a payload start."""
    k = (tail != 32).argmax(axis=1)
    at = tail[np.arange(pos.size), k]
    found = ((at > 32) & (at < 127)) | (at == 10)
    ps = np.where(found, pos + k, pe)
    found &= ps <= pe
    return ps, found


def _column_word(win: NDArray[np.uint8], offset: int) -> U64:
    """The 8 bytes at ``offset`` of every row of a contiguous window, as one little-endian word."""
    return np.ndarray(shape=(win.shape[0],), dtype="<u8", buffer=win, offset=offset, strides=(win.shape[1],))


ONES = 0x0101010101010101
ALL = (1 << 64) - 1


def _seconds(win: NDArray[np.uint8], lay: Layout) -> tuple[Mask, I64]:
    """``\\s+\\d+`` between ']' and '.': right-aligned digits after at least one space."""
    size = lay.dot - lay.rb - 1
    if size > 8 or lay.dot < 8:  # a wide column (or one too near the line start for a word): byte by byte
        sec = win[:, lay.rb + 1 : lay.dot]
        sd = (sec - np.uint8(48)) < 10
        ok = (sec[:, 0] == 32) & sd[:, -1] & ((sec == 32) | sd).all(axis=1)
        ok &= ~(sd[:, :-1] & ~sd[:, 1:]).any(axis=1)
        ok &= ~sd[:, : max(0, size - 10)].any(axis=1)  # at most 10 digits (the ns fit int64)
        value = _digits_value(sec[:, -10:])
        return ok & (value < MAX_TS_SECONDS), value
    x = _column_word(win, lay.dot - 8)
    region = np.uint64((ALL << (8 * (8 - size))) & ALL)
    x = x & region
    ok = (x | np.uint64(0x10 * ONES)) & np.uint64(0xF0 * ONES) & region == np.uint64(0x30 * ONES) & region
    digit = (x >> np.uint64(4)) & np.uint64(ONES) & region  # 1 in digit bytes (0x3_), 0 in 0x2_ bytes
    low = x & np.uint64(0x0F * ONES)
    ok &= (low & ~(digit * np.uint64(0x0F))) == 0  # the 0x2_ bytes are spaces
    ok &= ((low + np.uint64(0x06 * ONES)) & np.uint64(0x10 * ONES)) == 0  # digits are 0-9
    full = digit * np.uint64(0xFF)
    below = ~full
    ok &= (below & (below + np.uint64(1))) == 0  # the digits are one run at the right end
    ok &= (digit >> np.uint64(56)) == 1  # at least one digit
    ok &= ((x >> np.uint64(8 * (8 - size))) & np.uint64(0xFF)) == 32  # and a space before them
    return ok, _swar8(low).astype(np.int64)


def _fraction(win: NDArray[np.uint8], lay: Layout) -> tuple[Mask, I64]:
    """The digits between '.' and ':' (at most 9)."""
    size = lay.colon - lay.dot - 1
    head = min(size, 8)
    x = _column_word(win, lay.dot + 1)
    region = np.uint64((1 << (8 * head)) - 1)
    x = x & region
    ok = (x & np.uint64(0xF0 * ONES)) == np.uint64(0x30 * ONES) & region
    low = x & np.uint64(0x0F * ONES)
    ok &= ((low + np.uint64(0x06 * ONES)) & np.uint64(0x10 * ONES)) == 0
    value = _swar8(low << np.uint64(8 * (8 - head))).astype(np.int64)
    if size == 9:
        last = win[:, lay.colon - 1]
        ok &= (last - np.uint8(48)) < 10
        value = value * 10 + (last & np.uint8(15))
    return ok, value


def _digits_value(cols: NDArray[np.uint8]) -> I64:
    """Decimal value of each row of ASCII digits (spaces count as 0)."""
    value = np.zeros(cols.shape[0], dtype=np.int64)
    for j in range(cols.shape[1]):
        value *= 10
        value += cols[:, j] & np.uint8(15)
    return value


def _codes(words: list[U64], ok: Mask) -> tuple[NDArray[np.int64], I64]:
    """Dense codes of the word tuples and one representative row per code; rows that differ from
    their code's representative (a hash collision, or not ``ok`` already) are cleared in ``ok``."""
    n = ok.size
    h = np.full(n, MUL1, dtype=np.uint64)
    for w in words:
        h ^= w
        h *= MUL2
        h ^= h >> S29
    h[~ok] = np.uint64(0)  # one bucket for the rejects
    codes = _dense(h)
    count = int(codes.max()) + 1 if n else 0
    rep = np.zeros(count, dtype=np.int64)
    rep[codes] = np.arange(n)
    back = rep[codes]
    for w in words:
        ok &= w == w[back]  # a collision: those rows leave this tier (rare)
    return codes, rep


def _dense(h: U64) -> NDArray[np.int64]:
    for mult in (0xD6E8FEB86659FD93, 0xA0761D6478BD642F, 0xE7037ED1A0B428DB):
        bucket = (h * np.uint64(mult)) >> np.uint64(48)
        table = np.zeros(1 << 16, dtype=np.uint64)
        table[bucket] = h
        if bool((table[bucket] == h).all()):
            used = np.zeros(1 << 16, dtype=np.int64)
            used[bucket] = 1
            ids = np.cumsum(used) - 1
            return ids[bucket]
    _, inverse = np.unique(h, return_inverse=True)
    return inverse.astype(np.int64)


def _decode_key(data: bytes | mmap.mmap, start: int, lay: Layout, ns_off: int) -> _KeyInfo | None:
    """(buffer, comm, pid, cpu, event, payload offset) of a key, as the exact regex reads the line."""
    key1 = data[start : start + lay.rb + 1]
    key2 = data[start + ns_off : start + ns_off + KEY2]
    if not all(32 <= b < 127 for b in key1) or key1.count(b"[") != 1:
        return None
    m = _KEY1_RE.fullmatch(key1)
    if m is None:
        return None
    buffer, comm, pid, cpu = m.group(1) or b"", m.group(2), int(m.group(3)), int(m.group(4))
    if len(m.group(3)) > 9 or len(m.group(4)) > 9 or pid > MAX_PID or cpu > MAX_CPU_ID:
        return None
    m2 = _KEY2_RE.match(key2)
    if m2 is None:
        return None
    if m2.end() >= len(key2):  # the payload starts further on: found line by line
        return buffer, comm, pid, cpu, m2.group(1), -(ns_off + m2.end())
    nxt = key2[m2.end()]
    if nxt == 10:  # empty payload: the line ends right there
        return buffer, comm, pid, cpu, m2.group(1), ns_off + m2.end()
    if nxt <= 32 or nxt >= 127:
        return None
    return buffer, comm, pid, cpu, m2.group(1), ns_off + m2.end()


def merge_prefixes(parts: list[FastPrefixes]) -> FastPrefixes:
    """One FastPrefixes (rows in line order) from several, remapping the interned codes."""
    parts = [p for p in parts if p.rows.size] or parts[:1]
    if len(parts) == 1:
        return parts[0]

    def merged(get: str) -> Interned:
        values: dict[bytes, int] = {}
        codes = []
        for p in parts:
            interned: Interned = getattr(p, get)
            remap = np.array([values.setdefault(v, len(values)) for v in interned.values] or [0],
                             dtype=np.int32)
            codes.append(remap[interned.codes])
        return Interned(np.concatenate(codes), list(values))

    rows = np.concatenate([p.rows for p in parts])
    out = FastPrefixes(
        rows=rows,
        ts=np.concatenate([p.ts for p in parts]),
        frac_digits=np.concatenate([p.frac_digits for p in parts]),
        cpu=np.concatenate([p.cpu for p in parts]),
        pid=np.concatenate([p.pid for p in parts]),
        comm=merged("comm"),
        event=merged("event"),
        buffer=merged("buffer"),
        payload_start=np.concatenate([p.payload_start for p in parts]),
        payload_end=np.concatenate([p.payload_end for p in parts]),
    )
    if bool((rows[1:] > rows[:-1]).all()):
        return out
    return out.subset(np.argsort(rows, kind="stable"))


