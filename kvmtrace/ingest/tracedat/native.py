"""numpy-facing wrappers of the trace.dat kernels in tracedat/kernels.c: the page walk of one CPU, and the
merge of all CPUs into global time order fused with the copy of every event into its type's
columns. decode.py chooses between these and the numpy engine."""

from __future__ import annotations

import ctypes
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from kvmtrace.fileformats.formats import EventFormat
from kvmtrace.ingest.kernels import pointers, ptr
from kvmtrace.ingest.tracedat.fields import field_extent, is_plain, plain_code

_P = ctypes.c_void_p


@dataclass
class Walked:
    """One CPU's data records in stream order, with their common header (kt_walk)."""

    ts: np.ndarray
    payload: np.ndarray  # uint32 byte address from the CPU's first page
    length: np.ndarray
    header: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None  # type, flags, preempt, pid
    broken: list[tuple[int, int, int, int]]  # (page, offset in its data, type_len, record length)


def walk(lib: ctypes.CDLL, blob: np.ndarray, start: int, n_pages: int, page_size: int, data_offset: int,
         big_endian: bool, size: np.ndarray, page_ts: np.ndarray, header: bool) -> Walked:
    """kt_walk on one CPU's pages (at ``start`` in ``blob``).

    The outputs are sized for the most records the pages could hold (8 bytes each); the part
    never written is never touched, so it costs address space, not memory."""
    blob = np.ascontiguousarray(blob)
    capacity = n_pages * ((page_size - data_offset) // 8 + 1)
    ts = np.empty(capacity, np.int64)
    payload = np.empty(capacity, np.uint32)
    length = np.empty(capacity, np.int16)
    head = [np.empty(capacity, dt) for dt in (np.uint16, np.uint8, np.uint8, np.int32)] if header else []
    broken = np.zeros((n_pages, 4), np.int64)
    n_broken = np.zeros(1, np.int64)
    size = np.ascontiguousarray(size, np.int64)
    page_ts = np.ascontiguousarray(page_ts, np.int64)
    n = lib.kt_walk(ptr(blob), len(blob), start, n_pages, page_size, data_offset, int(big_endian), ptr(size),
                    ptr(page_ts), ptr(ts), ptr(payload), ptr(length), *(ptr(h) for h in head or (None,) * 4), capacity,
                    ptr(broken), n_pages, ptr(n_broken))
    if n < 0:
        raise AssertionError("kt_walk: record capacity exceeded")  # impossible: a record takes 8 bytes at least
    bad = [(int(pg), int(pos), int(tl), int(rec)) for pg, pos, tl, rec in broken[: int(n_broken[0])]]
    kept = (head[0][:n], head[1][:n], head[2][:n], head[3][:n]) if head else None
    return Walked(ts[:n], payload[:n], length[:n], kept, bad)


@dataclass
class TypeColumns:
    """One event type's rows, in global order."""

    fmt: EventFormat
    idx: np.ndarray  # uint32 row in the common table
    ts: np.ndarray
    cpu: np.ndarray
    pid: np.ndarray
    addr: np.ndarray | None  # uint32 payload address, when some field is not plain (strings, arrays)
    length: np.ndarray | None  # int16 payload length, when a field is a trailing array
    raw: dict[str, np.ndarray]  # plain field -> raw values (file byte order; char arrays (n, width) uint8)
    max_len: int = 0  # the longest record of the type: fields are read inside records only
    short: int = 0  # records shorter than the plain fields' extent (their bytes past the end read 0)


@dataclass
class Parts:
    """How the merge is cut into time parts (one per thread), and what each part holds."""

    cuts: np.ndarray  # (parts + 1, streams): where each stream is cut
    type_counts: np.ndarray  # (parts, type ids): records of each type id in each part
    max_len: np.ndarray  # (type ids,): the longest record of each type id

    @property
    def totals(self) -> np.ndarray:
        """Records per type id in the whole capture."""
        return self.type_counts.sum(axis=0)


@dataclass
class Merged:
    """Every record in global order (the common table's columns, names as category codes) and
    every type's columns."""

    ts: np.ndarray
    cpu: np.ndarray
    stream: np.ndarray | None  # uint16 stream number (kept only when asked for)
    flags: np.ndarray
    preempt: np.ndarray
    pid: np.ndarray
    event_code: np.ndarray  # uint32: event_code_of_type[type id]
    comm_code: np.ndarray  # uint32: comm_code_of_pid[pid], 0 outside the table
    types: list[TypeColumns]


class _MergeScatter(ctypes.Structure):
    """struct MergeScatter of tracedat/kernels.c, field for field."""

    _fields_ = [
        ("k", ctypes.c_int32), *((name, _P) for name in (
            "ts", "count", "addr", "len", "type", "flags", "preempt", "pid", "stream_cpu")),
        ("first_row", ctypes.c_int64), *((name, _P) for name in (
            "ts_out", "cpu_out", "stream_out", "flags_out", "preempt_out", "pid_out", "event_out",
            "event_code_of_type", "comm_out", "comm_code_of_pid")),
        ("n_pids", ctypes.c_int64), ("blob", _P),
        ("blob_len", ctypes.c_int64), ("slot_of_type", _P), ("n_types", ctypes.c_int32), *((name, _P) for name in (
            "cursor", "idx_out", "slot_ts", "slot_cpu", "slot_pid", "slot_addr", "slot_len", "rec_size",
            "short_count", "field_first", "field_count", "f_offset", "f_size", "f_stride", "f_dst", "heap", "pos",
            "head")),
    ]


def parts(lib: ctypes.CDLL, streams: list[Walked], count: int) -> Parts | None:
    """The merge's cut into ``count`` time parts, at quantiles of the longest stream, and the
    type ids each part holds. None when the streams cannot be merged here (a stream visibly out
    of time order, no common headers kept, or more than 65535 streams)."""
    if len(streams) > 65535 or any(s.header is None for s in streams):
        return None
    cuts = _cuts([np.ascontiguousarray(s.ts) for s in streams], count)
    if cuts is None:
        return None
    n_types = 1 + max((int(s.header[0].max(initial=0)) for s in streams if s.header is not None), default=0)
    max_len = np.zeros(n_types, np.int64)
    for s in streams:
        if s.header is not None:
            head, length = np.ascontiguousarray(s.header[0]), np.ascontiguousarray(s.length, np.int16)
            lib.kt_type_max_len(ptr(head), ptr(length), len(length), n_types, ptr(max_len))
    return Parts(cuts, _type_counts(streams, cuts, n_types), max_len)


def merge_scatter(lib: ctypes.CDLL, streams: list[Walked], cut: Parts, stream_cpu: list[int], keep_stream: bool,
                  blob: np.ndarray, endian: str, formats: dict[int, EventFormat], event_code_of_type: np.ndarray,
                  comm_code_of_pid: np.ndarray) -> Merged | None:
    """kt_merge_scatter: the walked streams (each in time order, headers kept) merged in global time
    order (ties: the lower stream), each record's common columns written (event and comm as
    category codes through the given tables), and every event of a type in ``formats`` copied
    into its type's key columns and plain fields (fields.is_plain); the parts of ``cut`` run on
    parallel threads. None when a stream is not in time order (the caller then sorts with numpy)."""
    cuts = cut.cuts
    totals = cut.totals
    n_types = len(totals)
    present = [int(t) for t in np.flatnonzero(totals) if int(t) in formats]
    types = [_allocate(formats[t], int(totals[t]), endian, int(cut.max_len[t])) for t in present]
    slot_of_type = np.full(n_types, -1, np.int32)
    slot_of_type[present] = np.arange(len(present), dtype=np.int32)
    cursors = np.zeros((len(cuts) - 1, max(len(types), 1)), np.int64)
    if present:
        cursors[:, : len(types)] = np.cumsum(cut.type_counts[:, present], axis=0) - cut.type_counts[:, present]
    n = int(cuts[-1].sum())
    out = Merged(np.empty(n, np.int64), np.empty(n, np.int32), np.empty(n, np.uint16) if keep_stream else None,
                 np.empty(n, np.uint8), np.empty(n, np.uint8), np.empty(n, np.int32), np.empty(n, np.uint32),
                 np.empty(n, np.uint32), types)
    codes = (np.ascontiguousarray(event_code_of_type[:n_types], np.uint32),
             np.ascontiguousarray(comm_code_of_pid, np.uint32))
    if len(codes[0]) < n_types:
        raise ValueError("event_code_of_type must cover every type id")
    plan = _Plan(streams, np.array(stream_cpu or [0], np.int32), blob, slot_of_type, types, out, codes,
                 len(cuts) - 1)

    def run(p: int) -> int:
        return plan.run(lib, cuts[p], cuts[p + 1], cursors[p], p)

    with ThreadPoolExecutor(max_workers=max(1, len(cuts) - 1)) as pool:
        results = list(pool.map(run, range(len(cuts) - 1)))
    for slot, col in enumerate(types):
        col.short = int(plan.short[:, slot].sum())
    return out if all(r == 0 for r in results) else None


class _Plan:
    """The arrays one kt_merge_scatter call points to, except the per-part ranges."""

    def __init__(self, streams: list[Walked], stream_cpu: np.ndarray, blob: np.ndarray, slot_of_type: np.ndarray,
                 types: list[TypeColumns], out: Merged, codes: tuple[np.ndarray, np.ndarray], parts: int) -> None:
        self.streams, self.stream_cpu, self.out = streams, stream_cpu, out
        self.event_code_of_type, self.comm_code_of_pid = codes
        self.blob = np.ascontiguousarray(blob)
        self.slot_of_type = slot_of_type
        fields = [(slot, f, col.raw[f.name]) for slot, col in enumerate(types) for f in col.fmt.payload_fields
                  if f.name in col.raw]
        slots = max(len(types), 1)
        self.field_count = np.bincount([slot for slot, _f, _d in fields], minlength=slots).astype(np.int32)
        self.field_first = (np.cumsum(self.field_count) - self.field_count).astype(np.int32)
        self.rec_size = np.array([max((f.offset + field_extent(f, c.max_len) for f in c.fmt.payload_fields
                                       if f.name in c.raw), default=0) for c in types] or [0], np.int64)
        self.short = np.zeros((parts, slots), np.int64)  # per part and slot
        self.f_offset = np.array([f.offset for _s, f, _d in fields] or [0], np.int32)
        self.f_size = np.array([field_extent(f, types[slot].max_len) for slot, f, _d in fields] or [0], np.int32)
        self.f_stride = np.array([dst.strides[0] for _s, _f, dst in fields] or [0], np.int32)
        self.f_dst = pointers([dst for _s, _f, dst in fields])
        self.slot_columns = [pointers([getattr(c, k) for c in types])
                             for k in ("idx", "ts", "cpu", "pid", "addr", "length")]

    def run(self, lib: ctypes.CDLL, lo: np.ndarray, hi: np.ndarray, cursor: np.ndarray, part: int) -> int:
        k = len(self.streams)
        first = int(lo.sum())
        end = int(hi.sum())
        columns = [[s.ts, s.payload, s.length, *(s.header or ())] for s in self.streams]
        stream_ptrs = [pointers([col[c][a:b] for col, a, b in zip(columns, lo, hi, strict=True)])
                       for c in range(7)]  # ts, payload, length, type, flags, preempt, pid; alive during the call
        counts = (hi - lo).astype(np.int64)
        cursor = np.ascontiguousarray(cursor, np.int64)
        work = (np.empty(max(k, 1), np.int32), np.empty(max(k, 1), np.int64), np.empty(max(k, 1), np.int64))
        o = self.out
        outs = [None if a is None else a[first:end] for a in (o.ts, o.cpu, o.stream, o.flags, o.preempt, o.pid)]
        args = _MergeScatter(
            k, ptr(stream_ptrs[0]), ptr(counts), *(ptr(p) for p in stream_ptrs[1:]),
            ptr(self.stream_cpu), first, *(ptr(a) for a in outs), ptr(o.event_code[first:end]),
            ptr(self.event_code_of_type), ptr(o.comm_code[first:end]), ptr(self.comm_code_of_pid),
            len(self.comm_code_of_pid), ptr(self.blob), len(self.blob),
            ptr(self.slot_of_type), len(self.slot_of_type), ptr(cursor), *(ptr(a) for a in self.slot_columns),
            ptr(self.rec_size), ptr(self.short[part]), ptr(self.field_first), ptr(self.field_count),
            ptr(self.f_offset), ptr(self.f_size),
            ptr(self.f_stride), ptr(self.f_dst), *(ptr(w) for w in work))
        return int(lib.kt_merge_scatter(ctypes.addressof(args)))


def _type_counts(streams: list[Walked], cuts: np.ndarray, n_types: int) -> np.ndarray:
    """(parts, n_types): how many records of each type id each time part holds."""
    counts = np.zeros((len(cuts) - 1, n_types), np.int64)
    for p in range(len(cuts) - 1):
        for s, stream in enumerate(streams):
            if stream.header is not None:
                counts[p] += np.bincount(stream.header[0][cuts[p][s]:cuts[p + 1][s]], minlength=n_types)
    return counts


def _cuts(ts: list[np.ndarray], parts: int) -> np.ndarray | None:
    """(parts + 1, streams) positions where each stream is cut: at the same times in every stream,
    taken at quantiles of the longest one (records with equal times stay in one part, so the
    merged order is the same). None when a stream is visibly not in time order at a cut
    (kt_merge_scatter checks the rest)."""
    lens = np.array([len(t) for t in ts], np.int64)
    longest = ts[int(lens.argmax())] if len(ts) else np.zeros(0, np.int64)
    pivots = sorted({int(longest[len(longest) * i // parts]) for i in range(1, parts)} if len(longest) else set())
    rows = [np.zeros(len(ts), np.int64)]
    for pivot in pivots:
        rows.append(np.array([np.searchsorted(t, pivot, side="left") for t in ts], np.int64))
    rows.append(lens)
    cuts = np.array(rows)
    for t, column in zip(ts, cuts.T, strict=True):
        for c in column[1:-1]:
            if 0 < c < len(t) and t[c - 1] > t[c]:
                return None
    if (np.diff(cuts, axis=0) < 0).any():
        return None
    return cuts


def _allocate(fmt: EventFormat, n: int, endian: str, max_len: int) -> TypeColumns:
    raw = {}
    for f in fmt.payload_fields:
        if is_plain(f, max_len):
            raw[f.name] = (np.zeros((n, field_extent(f, max_len)), np.uint8) if f.is_string
                           else np.empty(n, np.dtype(plain_code(f, endian))))
    needs_addr = len(raw) < len(fmt.payload_fields)
    return TypeColumns(fmt, np.empty(n, np.uint32), np.empty(n, np.int64), np.empty(n, np.int32),
                       np.empty(n, np.int32), np.empty(n, np.uint32) if needs_addr else None,
                       np.empty(n, np.int16) if needs_addr else None, raw, max_len)
