"""The text reader's native kernels (text/kernels.c) called with ctypes: line bounds, and ``-R``
payloads packed, split and read in C (the dominant-layout prefix kernels are called from modal).

Each function is the twin of a numpy one with the same results (bytetext.line_bounds,
typed.compact_groups; fields: raw.split with raw.parse_ints and the integer columns of
typed._int_column, in one pass). The payloads of each event type are
first packed into one block, in one pass over the text in line order, so that reading one type
touches a small contiguous piece of memory.
"""

from __future__ import annotations

import ctypes
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from kvmtrace.ingest.kernels import intern_spans, library, ptr
from kvmtrace.ingest.text.bytetext import I64, ByteText, Interned

SPLIT_SPANS, SPLIT_UNSURE, SPLIT_NO_MATCH = 0, 1, 2


def text_library() -> ctypes.CDLL | None:
    """The loaded kernels when the engine is native, else None (then the numpy path runs)."""
    return library()


FIELD_DEC, FIELD_HEX, FIELD_SPANS, FIELD_SKIP = 0, 1, 2, 3  # kt_text_fields' kinds
BAD_CAP = 1024  # values in another form noted at first (more: the kernel runs again)
INT64: np.dtype[Any] = np.dtype(np.int64)


@dataclass
class FieldSpec:
    """How kt_text_fields gives one field: ``kind`` (FIELD_*); for integers cut to ``abs(bits)`` bits
    (sign-extended when negative, 64: whole) and stored as ``dtype``."""

    kind: int
    bits: int = 64
    dtype: np.dtype[Any] = INT64


@dataclass
class Fields:
    """kt_text_fields' columns: per field an integer array, a (starts, ends) pair of value spans, or
    None (skipped); ``bad[j]`` the rows of field j whose value is in another form, and its spans."""

    columns: list[np.ndarray | tuple[I64, I64] | None]
    bad: list[tuple[I64, I64, I64]]


def fields(lib: ctypes.CDLL, text: ByteText, ps: I64, pe: I64, keys: list[str], specs: list[FieldSpec]
           ) -> Fields | bool:
    """raw.split on the payloads [ps, pe) of ``text`` with the integers read in the same pass
    (typed._int_column's values before the fix of those in another form): the columns, False
    (no match) or True (unsure)."""
    count = len(keys)
    if count == 0 or ps.size == 0:
        return True
    raw = [k.encode() for k in keys]
    key_bytes = np.frombuffer(b"".join(raw) + b"\0", dtype=np.uint8)
    key_off = np.concatenate([[0], np.cumsum([len(k) for k in raw])]).astype(np.int64)
    ps = np.ascontiguousarray(ps, np.int64)
    pe = np.ascontiguousarray(pe, np.int64)
    n = ps.size
    columns: list[np.ndarray | tuple[I64, I64] | None] = []
    out_a = np.zeros(count, np.uint64)
    out_b = np.zeros(count, np.uint64)
    for j, spec in enumerate(specs):
        if spec.kind == FIELD_SKIP:
            columns.append(None)
        elif spec.kind == FIELD_SPANS:
            pair = (np.empty(n, np.int64), np.empty(n, np.int64))
            out_a[j], out_b[j] = pair[0].ctypes.data, pair[1].ctypes.data
            columns.append(pair)
        else:
            column = np.empty(n, spec.dtype)
            out_a[j] = column.ctypes.data
            columns.append(column)
    kind = np.array([s.kind for s in specs], np.int32)
    bits = np.array([s.bits for s in specs], np.int32)
    width = np.array([s.dtype.itemsize for s in specs], np.int32)
    cap = BAD_CAP
    while True:
        bad = np.empty((cap, 4), np.int64)
        nbad = np.zeros(1, np.int64)
        code = lib.kt_text_fields(ptr(text.buf), n, ptr(ps), ptr(pe), count, ptr(key_bytes), ptr(key_off),
                                  ptr(kind), ptr(bits), ptr(width), ptr(out_a), ptr(out_b), ptr(bad), cap,
                                  ptr(nbad))
        if code == SPLIT_NO_MATCH:
            return False
        if code == SPLIT_UNSURE:
            return True
        if int(nbad[0]) <= cap:
            break
        cap = int(nbad[0])
    bad = bad[: int(nbad[0])]
    by_field = []
    for j in range(count):
        mine = bad[bad[:, 0] == j] if bad.size else bad
        by_field.append((mine[:, 1].copy(), mine[:, 2].copy(), mine[:, 3].copy()))
    return Fields(columns, by_field)


def line_bounds(lib: ctypes.CDLL, buf: NDArray[np.uint8]) -> tuple[I64, I64]:
    """bytetext.line_bounds in C: start and end (without the newline) of every line."""
    n = buf.size
    cut = _cut(buf) if n >= LINES_SPLIT else n
    if cut >= n:  # one part
        count = int(lib.kt_text_count_lines(ptr(buf), n))
        starts = np.empty(count + 1, np.int64)
        ends = np.empty(count + 1, np.int64)
        lib.kt_text_lines(ptr(buf), n, ptr(starts), ptr(ends))
        if starts[-1] == n:  # text ends with a newline: no extra empty line
            starts, ends = starts[:-1], ends[:-1]
        return starts, ends
    parts = [(0, cut), (cut, n)]  # on two threads
    with ThreadPoolExecutor(max_workers=len(parts)) as pool:
        counts = list(pool.map(lambda part: int(lib.kt_text_count_lines(ptr(buf[part[0] :]), part[1] - part[0])),
                               parts))
        count = sum(counts)
        starts = np.empty(count + 1, np.int64)
        ends = np.empty(count + 1, np.int64)
        firsts = [0, counts[0]]
        list(pool.map(lambda k: lib.kt_text_lines_part(ptr(buf), parts[k][0], parts[k][1], ptr(starts[firsts[k] :]),
                                                        ptr(ends[firsts[k] :]), int(k == len(parts) - 1)),
                      range(len(parts))))
    if starts[-1] == buf.size:  # text ends with a newline: no extra empty line
        starts, ends = starts[:-1], ends[:-1]
    return starts, ends


LINES_SPLIT = 1 << 20  # texts this large are cut in two for two threads (line_bounds)


def _cut(buf: NDArray[np.uint8]) -> int:
    """Just after the first '\n' from the middle of ``buf`` (its size when there is none)."""
    at = buf.size // 2
    while at < buf.size:
        hits = np.flatnonzero(buf[at : at + 65536] == 10)
        if hits.size:
            return at + int(hits[0]) + 1
        at += 65536
    return buf.size


PACK_TAIL = 64  # zero bytes after the last payload (windows read up to 32 bytes past a value start)
PACK_THREADS = 2  # pack_codes copies on this many threads (groups split by bytes)
PACK_THREADED = 1 << 16  # rows from which it does


def pack_groups(lib: ctypes.CDLL, text: ByteText, ps_all: I64, pe_all: I64, groups: list[I64]
                ) -> list[tuple[ByteText, I64, I64]]:
    """The payloads of each group of rows (an event type) packed one after the other into one block,
    copied in one pass in line order: per group, the block and its payloads' starts and ends there."""
    dest = np.full(ps_all.size, -1, np.int64)
    length = pe_all - ps_all
    bounds = []
    total = 0
    for rows in groups:
        lens = length[rows]
        ends = np.cumsum(lens) + total
        begins = ends - lens
        dest[rows] = begins
        bounds.append((begins, ends))
        total = int(ends[-1]) if ends.size else total
    out = np.empty(total + PACK_TAIL, np.uint8)  # every byte before the tail is written
    out[total:] = 0
    ps_c = np.ascontiguousarray(ps_all, np.int64)
    pe_c = np.ascontiguousarray(pe_all, np.int64)
    lib.kt_text_pack(ptr(text.buf), ps_c.size, ptr(ps_c), ptr(pe_c), ptr(dest), ptr(out))  # (2 threads: no gain)
    packed = ByteText(out)
    return [(packed, start, end) for start, end in bounds]


GROUP_CODES_LIMIT = 1 << 20  # larger category codes: numpy's argsort


@dataclass
class Groups:
    """The rows of each event code present, as a stable argsort by code splits them (in code order):
    ``rows[k]`` those of code ``code[k]``, which start at ``start[k]`` of ``order``; ``fast[k]`` when
    every one has a payload span, ``size[k]`` their payload bytes."""

    order: I64
    rows: list[I64]
    code: list[int]
    start: list[int]
    fast: list[bool]
    size: list[int]

    def reorder(self, perm: list[int]) -> None:
        self.rows = [self.rows[k] for k in perm]
        self.code = [self.code[k] for k in perm]
        self.start = [self.start[k] for k in perm]
        self.fast = [self.fast[k] for k in perm]
        self.size = [self.size[k] for k in perm]


def group_rows(lib: ctypes.CDLL, codes: NDArray[np.unsignedinteger[Any]], ps: I64, pe: I64) -> Groups | None:
    """kt_text_group: text._typed_tables' argsort / split / fast check in one counting sort (None when
    the codes are too large for it)."""
    n = codes.size
    top = int(codes.max()) + 1 if n else 0
    if top > GROUP_CODES_LIMIT:
        return None
    codes = np.ascontiguousarray(codes, np.uint32)
    ps = np.ascontiguousarray(ps, np.int64)
    pe = np.ascontiguousarray(pe, np.int64)
    count = np.empty(max(top, 1), np.int64)
    fast = np.empty(max(top, 1), np.uint8)
    size = np.empty(max(top, 1), np.int64)
    order = np.empty(n, np.int64)
    lib.kt_text_group(n, ptr(codes), top, ptr(ps), ptr(pe), ptr(count), ptr(order), ptr(fast), ptr(size))
    present = np.flatnonzero(count[:top])
    begin = (np.cumsum(count[:top]) - count[:top])[present].tolist()
    sizes = count[present].tolist()
    return Groups(
        order=order,
        rows=[order[b : b + s] for b, s in zip(begin, sizes, strict=True)],
        code=present.tolist(),
        start=begin,
        fast=fast[present].astype(bool).tolist(),
        size=size[present].tolist(),
    )


def pack_codes(lib: ctypes.CDLL, text: ByteText, ps_all: I64, pe_all: I64, codes: NDArray[np.unsignedinteger[Any]],
               groups: Groups, kinds: list[int]) -> list[tuple[ByteText, I64, I64]]:
    """pack_groups for the groups ``kinds`` of group_rows' ``groups`` (rows of a code), in C from the
    start: the same blocks, and the payloads' starts and ends there."""
    top = max(groups.code, default=0) + 1
    total = sum(groups.size[k] for k in kinds)
    # two threads, each copying the groups of one half of the bytes (its own codes' base >= 0)
    bases = [np.full(top, -1, np.int64) for _ in range(PACK_THREADS)]
    slot = np.zeros(top, np.int64)
    at = 0
    for k in kinds:
        bases[min(PACK_THREADS * at // max(total, 1), PACK_THREADS - 1)][groups.code[k]] = at
        slot[groups.code[k]] = groups.start[k]
        at += groups.size[k]
    out = np.empty(total + PACK_TAIL, np.uint8)  # every byte before the tail is written
    out[total:] = 0
    n = codes.size
    pbeg = np.empty(n, np.int64)  # only the packed groups' slots are written (and touched)
    pend = np.empty(n, np.int64)
    codes = np.ascontiguousarray(codes, np.uint32)
    ps_c = np.ascontiguousarray(ps_all, np.int64)
    pe_c = np.ascontiguousarray(pe_all, np.int64)

    def run(base: I64) -> None:
        lib.kt_text_pack_codes(ptr(text.buf), n, ptr(ps_c), ptr(pe_c), ptr(codes), ptr(base), ptr(slot), ptr(out),
                               ptr(pbeg), ptr(pend))

    if n < PACK_THREADED:
        for base in bases:
            run(base)
    else:
        with ThreadPoolExecutor(max_workers=PACK_THREADS) as pool:
            list(pool.map(run, bases))
    packed = ByteText(out)
    spans = [(groups.start[k], groups.start[k] + groups.rows[k].size) for k in kinds]
    return [(packed, pbeg[a:b], pend[a:b]) for a, b in spans]


def open_gaps(lib: ctypes.CDLL, arrays: list[np.ndarray], final: I64) -> list[np.ndarray] | None:
    """Each array (a view of the start of a larger one) grown in place by ``final.size`` rows that go
    to the positions ``final`` (increasing), the others kept in order around them (the twin of
    np.insert, without a copy); None when some array has no room behind it."""
    m = final.size
    out = []
    for a in arrays:
        base = a.base
        if (not isinstance(base, np.ndarray) or base.ndim != 1 or base.dtype != a.dtype or a.ndim != 1
                or not a.flags.c_contiguous or not base.flags.c_contiguous
                or a.ctypes.data != base.ctypes.data or base.size < a.size + m):
            return None
        out.append(base[: a.size + m])
    final = np.ascontiguousarray(final, np.int64)
    for a, full in zip(arrays, out, strict=True):
        lib.kt_text_open_gaps(ptr(full), full.itemsize, a.size, ptr(final), m)
    return out


def intern(lib: ctypes.CDLL, text: ByteText, pos: I64, length: I64) -> Interned:
    """bytetext.intern in C (any length): a code per distinct byte string text[pos : pos + length], the
    values numbered in order of first appearance."""
    codes, values = intern_spans(lib, text.buf, pos, length)
    return Interned(codes, values)
