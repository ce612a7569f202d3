"""Turn a parsed trace.dat (structure + page records) into EventTables: the common table and typed tables.

Steps: walk each CPU's pages (``pages``), correct timestamps as trace-cmd does, merge all
buffers and CPUs into global time order (ties: buffer, then CPU, then stream order, like
``trace-cmd report``), then decode each event type's fields straight from the record bytes.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

from kvmtrace.errors import CaptureError
from kvmtrace.fileformats.formats import EventFormat
from kvmtrace.ingest import kernels
from kvmtrace.ingest.limits import MAX_CPU_ID, MAX_TS_NS, check_tables
from kvmtrace.ingest.readreport import Loss, ReadReport, SkippedRegion
from kvmtrace.ingest.tables import (
    COMMON_SCHEMA,
    CaptureMeta,
    EventTables,
    typed_key_names,
)
from kvmtrace.ingest.tracedat import native
from kvmtrace.ingest.tracedat.fields import (
    Blob,
    dynamic_series,
    event_columns,
    field_extent,
    field_series,
    plain_extent,
    plain_series,
)
from kvmtrace.ingest.tracedat.pages import PageRecords, walk_pages
from kvmtrace.ingest.tracedat.reader import BufferData, CpuData, TimestampCorrection, TraceDatFile

Progress = Callable[[str, float], None]
PAGE_TIME_SLICE = 32 << 20  # page headers are read this many bytes of pages at a time, then let go


@dataclass
class _Stream:
    """Records of one (buffer, cpu) after the page walk, with corrected timestamps."""

    buffer_index: int
    cpu: int
    ts: np.ndarray
    payload: np.ndarray  # byte address in the file's blob
    length: np.ndarray
    header: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None  # type, flags, preempt, pid (native walk)


def decode_tracedat(f: TraceDatFile, progress: Progress | None = None,
                    window: tuple[int | None, int | None] | None = None) -> EventTables:
    """The tables of a parsed trace.dat; with ``window`` (start_ns, end_ns), only the events in it:
    each CPU's pages are cut by their header timestamps before any record is decoded, and the rows
    at the edges by their own times (the same rows as a full read filtered by time, renumbered)."""
    report = ReadReport()
    layout = _common_layout(f.formats)
    formats = _formats_by_id(f.formats)
    lib = kernels.library() if len(f.blob) < 1 << 32 and layout == STANDARD_COMMON else None
    streams = _walk_all(f, report, progress, keep_header=lib is not None, window=window)
    if progress:
        progress("ordering events", 0.6)
    blob = Blob(f.blob, f.endian_char, f.path)
    fused = _merge_scatter_native(lib, streams, f, blob, formats, report) if lib is not None else None
    with ThreadPoolExecutor(max_workers=1) as side:  # the common table is built while the typed ones are
        if fused is not None:
            del streams
            common = side.submit(_common_table, fused[0])
            if progress:
                progress("decoding fields", 0.75)
            by_event = _typed_tables_native(blob, fused[1], report)
        else:  # the numpy engine, or a CPU whose time goes backwards (the stable sort orders it)
            merged = _merge_numpy(streams, f, blob, layout, formats, report)
            del streams
            common = side.submit(_common_table, merged)
            if progress:
                progress("decoding fields", 0.75)
            by_event = _typed_tables(blob, formats, merged, report)
        events = common.result()
    if progress:
        progress("done", 1.0)
    meta = _meta(f)
    report.kernel_overruns = _cpustat_overruns(f.options.get("CPUSTAT", []), report)
    tables = EventTables(events=events, by_event=by_event, formats={fmt.name: fmt for fmt in formats.values()},
                         meta=meta, report=report, cmdlines=dict(f.cmdlines))
    return tables.cut(*window) if window is not None else tables


@dataclass
class _Names:
    """A Categorical column as codes into a list of names."""

    codes: np.ndarray  # uint32, one per record
    names: list[str]

    def series(self) -> pl.Series:
        return pl.Series(self.names, dtype=pl.Categorical).gather(pl.Series(self.codes))


@dataclass
class _Common:
    """Every record in global order: the common table's columns."""

    ts: np.ndarray
    cpu: np.ndarray
    pid: np.ndarray
    flags: np.ndarray
    preempt: np.ndarray
    buffer: pl.Series  # Categorical
    event: _Names
    comm: _Names


@dataclass
class _Merged(_Common):
    """The numpy engine's merge: the common columns, and each record's type and payload."""

    type_id: np.ndarray
    payload: np.ndarray  # byte address in the blob
    lengths: np.ndarray


def _merge_scatter_native(lib: Any, streams: list[_Stream], f: TraceDatFile, blob: Blob,
                          formats: dict[int, EventFormat], report: ReadReport
                          ) -> tuple[_Common, list[native.TypeColumns]] | None:
    """The native engine: merge, common columns and typed columns in one pass per thread
    (native.merge_scatter)."""
    walked = [native.Walked(s.ts, s.payload, s.length, s.header, broken=[]) for s in streams]
    cut = native.parts(lib, walked, _workers())
    if cut is None:
        return None
    names = [f.buffers[s.buffer_index].name for s in streams] or [""]
    several_buffers = len(set(names)) > 1
    event_names, event_code_of_type = _type_names(cut.totals, formats)
    comm_names, comm_code_of_pid = _comm_table(f.cmdlines)
    out = native.merge_scatter(lib, walked, cut, [s.cpu for s in streams], several_buffers, blob.data, blob.e,
                                    formats, event_code_of_type, comm_code_of_pid)
    if out is None:
        return None
    _report_unknown(cut.totals, formats, report)
    for s in streams:
        s.ts, s.payload, s.length, s.header = np.zeros(0, np.int64), np.zeros(0, np.uint32), np.zeros(0, np.int16), None
    buffer = _buffer_column(names, out.stream, len(out.ts))
    common = _Common(out.ts, out.cpu, out.pid, out.flags, out.preempt, buffer,
                     _Names(out.event_code, event_names), _Names(out.comm_code, comm_names))
    return common, out.types


def _merge_numpy(streams: list[_Stream], f: TraceDatFile, blob: Blob, layout: dict[str, tuple[int, int]],
                 formats: dict[int, EventFormat], report: ReadReport) -> _Merged:
    """The numpy engine's merge: a stable sort by time (ties: buffer, CPU, stream order)."""
    order, ts = _global_order(streams)
    stream = _concat([np.full(len(s.payload), n, np.uint16) for n, s in enumerate(streams)], np.uint16)[order]
    payload = _take(streams, "payload", order, np.uint32 if len(f.blob) < 1 << 32 else np.int64)
    lengths = _take(streams, "length", order, np.int16)
    index = pl.Series(stream)  # polars gathers: numpy would first widen the index to int64
    cpu = pl.Series(np.array([s.cpu for s in streams] or [0], np.int32)).gather(index).to_numpy()
    buffer = _buffer_column([f.buffers[s.buffer_index].name for s in streams] or [""], stream, len(ts))
    del order, stream
    type_id, flags, preempt, pid = _common_fields(blob, payload, layout)
    counts = np.bincount(type_id, minlength=1) if len(type_id) else np.zeros(1, np.int64)
    _report_unknown(counts, formats, report)
    event_names, event_code_of_type = _type_names(counts, formats)
    event = _Names(pl.Series(event_code_of_type).gather(pl.Series(type_id)).to_numpy(), event_names)
    return _Merged(ts, cpu, pid, flags, preempt, buffer, event, _comm_codes(pid, f.cmdlines), type_id, payload,
                   lengths)


def _buffer_column(names: list[str], stream: np.ndarray | None, n: int) -> pl.Series:
    """The buffer name (Categorical) of each record from its stream number; one buffer: a constant."""
    if len(set(names)) == 1 or stream is None:
        return pl.select(pl.repeat(names[0], n, dtype=pl.Categorical)).to_series().alias("buffer")
    return pl.Series(names, dtype=pl.Categorical).gather(pl.Series(stream)).alias("buffer")


def _take(streams: list[_Stream], name: str, order: np.ndarray, dtype: type) -> np.ndarray:
    """One per-stream array joined and put in global order; the streams' copies are released."""
    joined = _concat([getattr(s, name) for s in streams], dtype)
    for s in streams:
        setattr(s, name, np.zeros(0, dtype))
    return joined[order]


def _global_order(streams: list[_Stream]) -> tuple[np.ndarray, np.ndarray]:
    """The merge of all streams by time (ties: buffer, CPU, stream order) and the merged times."""
    ts = _concat([s.ts for s in streams], np.int64)
    for s in streams:
        s.ts = np.zeros(0, np.int64)
    order = np.argsort(ts, kind="stable")
    return order, ts[order]


def _concat(parts: list[np.ndarray], dtype: type) -> np.ndarray:
    return np.concatenate(parts) if parts else np.zeros(0, dtype)


def _walk_all(f: TraceDatFile, report: ReadReport, progress: Progress | None, keep_header: bool = False,
              window: tuple[int | None, int | None] | None = None) -> list[_Stream]:
    todo = [(bi, b, c) for bi, b in enumerate(f.buffers) for c in b.cpus if c.length]
    if progress:
        progress("walking ring-buffer pages", 0.1)

    def walk(job: tuple[int, BufferData, CpuData]) -> tuple[int, PageRecords]:
        _bi, buf, cpu = job
        first, end = _page_range(f, buf, cpu, window)
        data = f.cpu_pages(cpu)[first * buf.page_size:end * buf.page_size]
        start = cpu.start + first * buf.page_size
        return first, walk_pages(data, buf.page_size, f.commit_size, f.page_data_offset, f.big_endian,
                                 (f.blob, start) if keep_header else None)

    with ThreadPoolExecutor(max_workers=_workers()) as pool:
        walked = list(pool.map(walk, todo))
    streams = []
    for (bi, buf, cpu), (first, rec) in zip(todo, walked, strict=True):
        _account(report, f, buf, cpu, rec, first)
        ts = _correct(rec.ts, cpu.cpu, f.correction, top_buffer=buf.name == "", path=f.path)
        start = cpu.start + first * buf.page_size
        streams.append(_Stream(bi, cpu.cpu, ts, _offset(rec.payload, start, len(f.blob)), rec.length, rec.header))
    for buf in f.buffers:
        for c in buf.cpus:
            if c.trailing_bytes:
                report.skipped.append(SkippedRegion(
                    f"buffer '{buf.name}' cpu {c.cpu} after page {c.length // buf.page_size}",
                    f"{c.trailing_bytes} bytes of a partial page at the end of the data", None))
    return streams


def _page_range(f: TraceDatFile, buf: BufferData, cpu: CpuData,
                window: tuple[int | None, int | None] | None) -> tuple[int, int]:
    """The pages of one CPU that may hold events of ``window``: from the last page starting at or before
    its start to the last page starting at or before its end, by the pages' header timestamps
    (corrected as record times are). All pages without a window, or when those times are not in
    order (damage): the records' own times then cut the tables."""
    n_pages = cpu.length // buf.page_size
    if window is None or n_pages == 0:
        return 0, n_pages
    page_ts = _page_times(f, buf, cpu)
    if n_pages > 1 and bool((np.diff(page_ts) < 0).any()):
        return 0, n_pages
    start_ns, end_ns = window
    first = max(0, int(np.searchsorted(page_ts, start_ns, side="right")) - 1) if start_ns is not None else 0
    end = int(np.searchsorted(page_ts, end_ns, side="right")) if end_ns is not None else n_pages
    return first, max(first, end)


def _page_times(f: TraceDatFile, buf: BufferData, cpu: CpuData) -> np.ndarray:
    """The header timestamp of each page of one CPU, corrected as record times are."""
    n_pages = cpu.length // buf.page_size
    pages = f.cpu_pages(cpu)[:n_pages * buf.page_size].reshape(n_pages, buf.page_size)
    raw = np.empty(n_pages, np.int64)
    per_slice = max(1, PAGE_TIME_SLICE // buf.page_size)
    for first in range(0, n_pages, per_slice):
        last = min(n_pages, first + per_slice)
        raw[first:last] = pages[first:last, 0:8].copy().view(f.endian_char + "u8").ravel()
        f.drop_pages(cpu.start + first * buf.page_size, cpu.start + last * buf.page_size)
    return _correct(raw, cpu.cpu, f.correction, top_buffer=buf.name == "", path=f.path)


def page_times(f: TraceDatFile) -> np.ndarray:
    """Every page's start time, all buffers and CPUs, sorted: where the trace data lies in time (each
    page holds about the same number of bytes of it)."""
    parts = [_page_times(f, buf, cpu) for buf in f.buffers for cpu in buf.cpus if cpu.length >= buf.page_size]
    return np.sort(np.concatenate(parts)) if parts else np.zeros(0, np.int64)


def _offset(addresses: np.ndarray, start: int, blob_size: int) -> np.ndarray:
    """Addresses within one CPU's pages -> addresses in the whole blob (32-bit while it is under 4 GiB)."""
    if blob_size < 1 << 32:
        return addresses.astype(np.uint32, copy=False) + np.uint32(start)
    return addresses.astype(np.int64) + start


def _account(report: ReadReport, f: TraceDatFile, buf: BufferData, cpu: CpuData, rec: PageRecords,
             first_page: int = 0) -> None:
    lost = int(rec.lost_per_page.sum())
    flagged = int(rec.lost_flag_pages.sum())
    report.lost_events.setdefault(buf.name, {})[cpu.cpu] = lost
    if flagged:
        report.lost_unknown_pages.setdefault(buf.name, {})[cpu.cpu] = flagged
    report.losses.extend(_losses(f, buf, cpu, rec, first_page))
    for bad in rec.bad_pages:
        page = first_page + bad.page
        where = (f"buffer '{buf.name}' cpu {cpu.cpu} page {page}"
                 + (f" (file offset {cpu.file_offset + page * buf.page_size:#x})" if not cpu.compressed else ""))
        kept = "" if bad.data_offset == 0 else "; the page's records before it are kept"
        report.skipped.append(SkippedRegion(where, bad.reason + kept,
                                            None))


def _losses(f: TraceDatFile, buf: BufferData, cpu: CpuData, rec: PageRecords, first_page: int) -> list[Loss]:
    """One Loss per page whose header says events were lost before it, timed by the page's start."""
    pages = np.flatnonzero((rec.lost_per_page > 0) | rec.lost_flag_pages)
    if pages.size == 0:
        return []
    header_bytes = ((first_page + pages) * buf.page_size)[:, None] + np.arange(8)
    raw = f.cpu_pages(cpu)[header_bytes].copy().view(f.endian_char + "u8").ravel().astype(np.int64)
    ts = _correct(raw, cpu.cpu, f.correction, top_buffer=buf.name == "", path=f.path)
    return [Loss(buf.name, cpu.cpu, int(t), None if bool(rec.lost_flag_pages[p]) else int(rec.lost_per_page[p]))
            for p, t in zip(pages.tolist(), ts.tolist(), strict=True)]


def _correct(ts: np.ndarray, cpu: int, c: TimestampCorrection, top_buffer: bool, path: str) -> np.ndarray:
    """Raw ring-buffer time -> reported ns: TIME_SHIFT, then TSC2NSEC, then OFFSET/DATE.

    Like trace-cmd report, TIME_SHIFT (guest -> host clock) applies to the top buffer only.
    """
    out = ts
    if top_buffer and c.time_shift is not None and cpu < len(c.time_shift.samples):
        out = _time_shift(out, c.time_shift.samples[cpu], c.time_shift.flags)
    if c.tsc2nsec is not None and c.tsc2nsec[0]:
        mult, shift, _ = c.tsc2nsec
        u = out.astype(np.uint64)
        lo, hi = u & np.uint64(0xFFFFFFFF), u >> np.uint64(32)
        res = (lo * np.uint64(mult)) >> np.uint64(shift)
        res = res + np.where(hi > 0, (hi * np.uint64(mult)) << np.uint64(32 - shift), np.uint64(0))
        out = res.astype(np.int64)
    if c.offset_ns:
        low, high = (int(out.min()), int(out.max())) if len(out) else (0, 0)
        if not (low + c.offset_ns >= -MAX_TS_NS - 1 and high + c.offset_ns <= MAX_TS_NS):
            raise CaptureError(path, None, f"timestamps up to {high} ns plus the OFFSET/DATE of {c.offset_ns} ns "
                               "do not fit 64 bits")
        out = out + np.int64(c.offset_ns)
    return out


def _time_shift(ts: np.ndarray, samples: tuple[np.ndarray, ...], flags: int) -> np.ndarray:
    times, offsets, scaling, fraction = samples
    n = len(times)
    if n == 0:
        return ts
    if n == 1:
        return ts + offsets[0]
    i = np.clip(np.searchsorted(times, ts, side="right") - 1, 0, n - 2)
    t0, t1, o0, o1 = times[i], times[i + 1], offsets[i], offsets[i + 1]
    if flags & 1:  # TRACECMD_TSYNC_FLAG_INTERPOLATE
        span = t1 - t0
        cor = o0 + ((ts - t0) * (o1 - o0) + span // 2) // np.where(span == 0, 1, span)
    else:
        cor = o0
    scaled = (ts * scaling[i]) >> fraction[i]
    return scaled + cor


def _formats_by_id(formats: list[EventFormat]) -> dict[int, EventFormat]:
    return {fmt.id: fmt for fmt in formats}


def _common_layout(formats: list[EventFormat]) -> dict[str, tuple[int, int]]:
    layout = {"common_type": (0, 2), "common_flags": (2, 1), "common_preempt_count": (3, 1), "common_pid": (4, 4)}
    for fmt in formats:
        for fld in fmt.fields:
            if fld.name in layout:
                layout[fld.name] = (fld.offset, fld.size)
        if fmt.fields:
            break
    return layout


STANDARD_COMMON = {"common_type": (0, 2), "common_flags": (2, 1), "common_preempt_count": (3, 1),
                   "common_pid": (4, 4)}


def _common_fields(blob: Blob, payload: np.ndarray, layout: dict[str, tuple[int, int]]
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """common_type, common_flags, common_preempt_count, common_pid of every record.

    With the standard 8-byte header (every kernel since 2.6) one gather reads all four."""
    if layout == STANDARD_COMMON:
        return _header_fields(blob._gather("S8", payload, 0), blob.e)
    return (blob.uint(payload, layout["common_type"][1], layout["common_type"][0]),
            blob.uint(payload, 1, layout["common_flags"][0]),
            blob.uint(payload, 1, layout["common_preempt_count"][0]),
            blob.integer(payload, 4, True, layout["common_pid"][0]))


def _header_fields(raw: np.ndarray, e: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """common_type, common_flags, common_preempt_count, common_pid from each record's 8 raw header bytes."""
    fields = raw.view(np.dtype({"names": ["type", "flags", "preempt", "pid"],
                                "formats": [e + "u2", "u1", "u1", e + "i4"], "offsets": [0, 2, 3, 4], "itemsize": 8}))
    return (fields["type"].astype(np.uint16), fields["flags"].copy(), fields["preempt"].copy(),
            fields["pid"].astype(np.int32))


def _common_table(m: _Common) -> pl.DataFrame:
    n = len(m.ts)
    df = pl.DataFrame({
        "idx": pl.Series(np.arange(n, dtype=np.uint32)),
        "ts": pl.Series(m.ts), "cpu": pl.Series(m.cpu), "pid": pl.Series(m.pid),
        "comm": m.comm.series(), "event": m.event.series(), "buffer": m.buffer,
        "flags": pl.Series(m.flags), "preempt": pl.Series(m.preempt),
    })
    return df.cast(COMMON_SCHEMA)  # type: ignore[arg-type]


def _type_names(counts: np.ndarray, formats: dict[int, EventFormat]) -> tuple[list[str], np.ndarray]:
    """Names of the type ids present (``counts`` per type id; unknown ids named
    ``unknown_type_N``) and the table type id -> code into them."""
    names = []
    code_of_type = np.zeros(max(len(counts), 1), np.uint32)
    for code, tid in enumerate(np.flatnonzero(counts)):
        fmt = formats.get(int(tid))
        names.append(fmt.name if fmt is not None else f"unknown_type_{int(tid)}")
        code_of_type[tid] = code
    return names, code_of_type


def _report_unknown(counts: np.ndarray, formats: dict[int, EventFormat], report: ReadReport) -> None:
    for tid in np.flatnonzero(counts):
        if int(tid) not in formats:
            report.unknown_events[f"id {int(tid)}"] = int(counts[tid])


def _comm_table(cmdlines: dict[int, str]) -> tuple[list[str], np.ndarray]:
    """Task names (``<...>`` unknown, ``<idle>`` for pid 0, then the saved cmdlines) and the
    table pid -> code for pids 0 .. the largest saved one; other pids are ``<...>``."""
    names = ["<...>", "<idle>", *sorted(set(cmdlines.values()))]
    code = {name: i for i, name in enumerate(names)}
    code_of_pid = np.zeros(max([p for p in cmdlines if p < 1 << 24] or [0]) + 1, np.uint32)
    for p, c in cmdlines.items():
        if 0 <= p < len(code_of_pid):
            code_of_pid[p] = code[c]
    code_of_pid[0] = 1
    return names, code_of_pid


def _comm_codes(pid: np.ndarray, cmdlines: dict[int, str]) -> _Names:
    names, code_of_pid = _comm_table(cmdlines)
    inside = (pid >= 0) & (pid < len(code_of_pid))
    codes = np.zeros(len(pid), np.uint32)
    codes[inside] = code_of_pid[pid[inside]]
    return _Names(codes, names)


def _typed_tables(blob: Blob, formats: dict[int, EventFormat], m: _Merged, report: ReadReport
                  ) -> dict[str, pl.DataFrame]:
    """One table per event type, with numpy (the reference for the native path below)."""
    by_type = np.argsort(m.type_id, kind="stable").astype(np.uint32)
    sorted_ids = m.type_id[by_type]
    bounds = np.flatnonzero(np.diff(sorted_ids)) + 1
    starts = np.concatenate(([0], bounds))
    ends = np.concatenate((bounds, [len(sorted_ids)]))
    jobs = [(formats[int(sorted_ids[lo])], by_type[lo:hi]) for lo, hi in zip(starts, ends, strict=True)
            if hi > lo and int(sorted_ids[lo]) in formats]
    jobs.sort(key=lambda job: -len(job[1]))
    notes: list[tuple[str, str]] = []

    def build(job: tuple[EventFormat, np.ndarray]) -> tuple[str, pl.DataFrame]:
        fmt, rows = job
        at = rows.astype(np.intp)  # numpy converts any other index type on every gather
        addr = m.payload[at].astype(np.intp)
        lengths = m.lengths[at].astype(np.int32)
        max_len = int(lengths.max(initial=0))
        _check_table(blob, fmt, len(rows), max_len)
        keys = _key_columns(fmt, rows.astype(np.uint32, copy=False), m.ts[at], m.cpu[at], m.pid[at])
        mine: list[str] = []
        columns = event_columns(blob, addr, lengths, fmt.payload_fields, mine)
        short = int((lengths < plain_extent(fmt, max_len)).sum())
        notes.extend((fmt.name, note) for note in _short_notes(fmt, short, max_len) + mine)
        return fmt.name, pl.DataFrame(keys + columns)

    with ThreadPoolExecutor(max_workers=_workers()) as pool:
        out = dict(pool.map(build, jobs))
    _report_fields(report, notes)
    return out


def _typed_tables_native(blob: Blob, types: list[native.TypeColumns], report: ReadReport
                         ) -> dict[str, pl.DataFrame]:
    """One table per event type from the columns kt_merge_scatter filled: keys and plain fields
    wrapped as they are; strings, dynamic and array fields cut from the payload addresses kept."""
    notes: list[tuple[str, str]] = []

    def build(col: native.TypeColumns) -> tuple[str, pl.DataFrame]:
        fmt = col.fmt
        keys = _key_columns(fmt, col.idx, col.ts, col.cpu, col.pid)
        lengths = None if col.length is None else col.length.astype(np.int32)
        fields = []
        mine: list[str] = []
        wide: np.ndarray | None = None  # the addresses as intp, for the numpy gathers
        for fld in fmt.payload_fields:
            if fld.name in col.raw:
                fields.append(plain_series(fld, col.raw[fld.name]))
                continue
            assert col.addr is not None and lengths is not None
            if fld.is_dynamic:
                fields.append(dynamic_series(blob, col.addr, lengths, fld, mine))
                continue
            wide = col.addr.astype(np.intp) if wide is None else wide
            fields.append(field_series(blob, wide, lengths, fld, mine))
        notes.extend((fmt.name, note) for note in _short_notes(fmt, col.short, col.max_len) + mine)
        return fmt.name, pl.DataFrame(keys + fields)

    for col in types:
        _check_table(blob, col.fmt, len(col.idx), col.max_len)
    with ThreadPoolExecutor(max_workers=_workers()) as pool:
        out = dict(pool.map(build, sorted(types, key=lambda c: -len(c.idx))))
    _report_fields(report, notes)
    return out


def _check_table(blob: Blob, fmt: EventFormat, rows: int, max_len: int) -> None:
    """The table limit (limits.check_tables): the typed table's columns before they are made."""
    per_row = 20 + sum(max(8, field_extent(f, max_len)) for f in fmt.payload_fields)
    check_tables(blob.path, f"the table of event {fmt.name} ({rows:,} rows of {per_row} bytes)", rows * per_row,
                 len(blob.data))


def _short_notes(fmt: EventFormat, short: int, max_len: int) -> list[str]:
    if not short:
        return []
    return [f"{short} records shorter than the format's fixed part ({plain_extent(fmt, max_len)} bytes): "
            "their fields past the record's end read as 0"]


def _report_fields(report: ReadReport, notes: list[tuple[str, str]]) -> None:
    for name, note in sorted(notes):
        report.skipped.append(SkippedRegion(f"event {name}", note, 0))


def _key_columns(fmt: EventFormat, idx: np.ndarray, ts: np.ndarray, cpu: np.ndarray, pid: np.ndarray
                 ) -> list[pl.Series]:
    keys = typed_key_names([fld.name for fld in fmt.payload_fields])
    return [pl.Series("idx", idx), pl.Series("ts", ts), pl.Series(keys["cpu"], cpu), pl.Series(keys["pid"], pid)]


def _workers() -> int:
    """Threads for the page walks and field decoding (numpy and polars release the GIL);
    ``KVMTRACE_THREADS`` overrides."""
    env = os.environ.get("KVMTRACE_THREADS", "")
    if env.isdigit() and int(env) > 0:
        return int(env)
    return max(1, min(4, os.cpu_count() or 1))


def _cpustat_overruns(texts: list[str], report: ReadReport) -> dict[str, dict[int, int]]:
    """'overrun:' of each CPUSTAT option (the kernel's per_cpu/cpuN/stats at record time), per buffer;
    a value that is not a count is left out and reported.

    trace-cmd writes the top buffer's CPUs first, then a ``Buffer: NAME`` text before each
    instance's CPUs."""
    out: dict[str, dict[int, int]] = {}
    buffer = ""
    for text in texts:
        fields = {k.strip(): v.strip() for k, v in (line.split(":", 1) for line in text.splitlines() if ":" in line)}
        if "Buffer" in fields and "CPU" not in fields:
            buffer = fields["Buffer"]
            continue
        cpu, overrun = _count(fields.get("CPU", "")), _count(fields.get("overrun", "0") or "0")
        if cpu is None or overrun is None or cpu > MAX_CPU_ID:
            report.skipped.append(SkippedRegion(f"option CPUSTAT of buffer '{buffer}'", "CPU "
                                                f"{fields.get('CPU', '')[:20]!r} overrun "
                                                f"{fields.get('overrun', '')[:20]!r}: not counts, not used", 0))
            continue
        out.setdefault(buffer, {})[cpu] = overrun
    return out


def _count(text: str) -> int | None:
    """A decimal count that fits 63 bits, or None."""
    if not (text.isascii() and text.isdigit()) or len(text) > 18:
        return None
    return int(text)


def _meta(f: TraceDatFile) -> CaptureMeta:
    top = next((b for b in f.buffers if b.name == ""), f.buffers[0] if f.buffers else None)
    ncpus = max((len(b.cpus) for b in f.buffers), default=0)
    options = {k: v for k, v in f.options.items() if k not in ("CPUSTAT",)}
    options["timestamp_correction"] = f.correction.describe()
    return CaptureMeta(
        path=f.path, kind="trace.dat", version=str(f.version), compression=f.compression,
        endian="big" if f.big_endian else "little", long_size=f.commit_size, page_size=f.page_size,
        clock=top.clock if top else None, cpus=f.cpu_count or ncpus,
        uname=f.options.get("UNAME"), tracer_version=f.options.get("VERSION"),
        buffers=[b.name for b in f.buffers], options=options,
    )
