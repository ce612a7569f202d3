"""The text reader's native kernels (native_text.c) called with ctypes: line bounds, and ``-R``
payloads packed, split and read in C (the dominant-layout prefix kernels are called from text_modal).

Each function is the twin of a numpy one with the same results (text_fast.line_bounds,
text_typed.compact_groups, text_raw.split, text_raw.parse_ints). The payloads of each event type are
first packed into one block, in one pass over the text in line order, so that reading one type
touches a small contiguous piece of memory.
"""

from __future__ import annotations

import ctypes

import numpy as np
from numpy.typing import NDArray

from kvmtrace.ingest.native import library, ptr
from kvmtrace.ingest.text_fast import I64, ByteText, Parsed
from kvmtrace.ingest.text_raw import Spans

SPLIT_SPANS, SPLIT_UNSURE, SPLIT_NO_MATCH = 0, 1, 2


def text_library() -> ctypes.CDLL | None:
    """The loaded kernels when the engine is native, else None (then the numpy path runs)."""
    return library()


def split(lib: ctypes.CDLL, text: ByteText, ps: I64, pe: I64, keys: list[str]) -> Spans | bool:
    """text_raw.split on the payloads [ps, pe) of ``text``: the spans, False (no match) or True (unsure)."""
    count = len(keys)
    if count == 0 or ps.size == 0:
        return True
    raw = [k.encode() for k in keys]
    key_bytes = np.frombuffer(b"".join(raw) + b"\0", dtype=np.uint8)
    key_off = np.concatenate([[0], np.cumsum([len(k) for k in raw])]).astype(np.int64)
    ps = np.ascontiguousarray(ps, np.int64)
    pe = np.ascontiguousarray(pe, np.int64)
    n = ps.size
    vs = np.empty((count, n), np.int64)
    ve = np.empty((count, n), np.int64)
    code = lib.kt_text_split(ptr(text.buf), n, ptr(ps), ptr(pe), count, ptr(key_bytes), ptr(key_off),
                             ptr(vs), ptr(ve))
    if code == SPLIT_NO_MATCH:
        return False
    if code == SPLIT_UNSURE:
        return True
    return Spans(list(vs), list(ve))


def parse_ints(lib: ctypes.CDLL, text: ByteText, vs: I64, ve: I64, hex_default: bool) -> Parsed:
    """text_raw.parse_ints in C: magnitude, sign, and where the value was read."""
    vs = np.ascontiguousarray(vs, np.int64)
    ve = np.ascontiguousarray(ve, np.int64)
    n = vs.size
    value = np.empty(n, np.uint64)
    negative = np.empty(n, np.bool_)
    ok = np.empty(n, np.bool_)
    lib.kt_text_ints(ptr(text.buf), n, ptr(vs), ptr(ve), int(hex_default), ptr(value), ptr(negative), ptr(ok))
    return Parsed(value, negative, ok)


def line_bounds(lib: ctypes.CDLL, buf: NDArray[np.uint8]) -> tuple[I64, I64]:
    """text_fast.line_bounds in C: start and end (without the newline) of every line."""
    count = int(lib.kt_text_count_lines(ptr(buf), buf.size))
    starts = np.empty(count + 1, np.int64)
    ends = np.empty(count + 1, np.int64)
    lib.kt_text_lines(ptr(buf), buf.size, ptr(starts), ptr(ends))
    if starts[-1] == buf.size:  # text ends with a newline: no extra empty line
        starts, ends = starts[:-1], ends[:-1]
    return starts, ends


PACK_TAIL = 64  # zero bytes after the last payload (windows read up to 32 bytes past a value start)


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
