"""``kvmtrace analyze`` over time chunks: a trace.dat larger than memory, analysed one chunk at a time,
with the same result as the whole capture in memory.

The trace data is cut into chunks of about equal size by the pages' timestamps
(``ingest.tracedat.reader.time_chunks``); a chunk owns the interrupts that start in its
``[start_ns, end_ns)`` (model/chunking.py). Three passes read one chunk at a time, never two:

1. **scan**: what each chunk holds (events, vCPU threads, markers, hrtimer expiries for the mono
   clock) and where each vCPU thread and CPU stands at its edges: its last ``kvm_entry`` or
   ``sched_switch`` before the chunk (how much history the chunk must be read with, so that a vCPU
   blocked or a CPU held since long before the edge is seen as it is) and the first ``kvm_entry``
   after it (how much future, so that an interrupt that starts in the chunk ends in it).
2. **evidence**: each chunk's interrupts and the deadline evidence they anchor; together they give
   the capture's clock maps exactly as one in-memory fit would (model/deadlines.py). The host's own
   real-time threads likewise: counted over all chunks, each one's deadline grid fitted once to all
   its expiries (model/wakeups.py ``sleep_fits``).
3. **analysis**: each chunk's latency analysis with those maps and the capture's vCPU threads, and
   its host threads' wakeups (analysis/native.py); their interrupts (wakeups), blame shares,
   deadlines, stalls and throttled intervals are concatenated, with interrupt numbers and event
   indices made the capture's own.

Peak memory is that of one chunk with its history and future (``--chunk-mb``) plus the answer (one
row per interrupt); time is about three reads and one analysis of the whole capture.
"""

from __future__ import annotations

import gc
import io
import tempfile
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import polars as pl

from kvmtrace.analysis.latency import ChunkContext, LatencyAnalysis, missing_event_notes, unknown_deadline_notes
from kvmtrace.analysis.native import NativeAnalysis, NativeChunk, cyclictest_intervals, missing_events, wakeup_notes
from kvmtrace.analysis.window import Window, resolve_window
from kvmtrace.capture import Capture, Manifest, find_trace, is_tracedat, open_capture, phases_with_manifest
from kvmtrace.ingest.readreport import ReadReport, merge_reports
from kvmtrace.ingest.tables import EventTables
from kvmtrace.model.blame import SHARE_SCHEMA
from kvmtrace.model.chunking import owned_rows
from kvmtrace.model.clocks import MonoClock, MonoEvidence, mono_evidence, mono_from
from kvmtrace.model.deadlines import (
    DEADLINES_UNKNOWN_NOTE,
    DeadlineEvidence,
    DeadlineMaps,
    Deadlines,
    deadline_evidence,
    deadline_maps,
)
from kvmtrace.model.interrupts import interrupts
from kvmtrace.model.phases import phases_from_markers
from kvmtrace.model.throttling import throttling_of
from kvmtrace.model.vcpus import VCPU_SCHEMA, entries_by_thread, entry_event
from kvmtrace.model.wakeups import SleepFit, any_timer_wakeups, own_sleeps, realtime_threads, sleep_fits, woken_enough
from kvmtrace.progress import step

DEFAULT_CHUNK_MB = 256  # trace data per chunk: about 8 M events, about 2 GB of tables and models
AUTO_CHUNK_MB = 512  # a larger trace.dat is read in chunks unless told otherwise (about 3.5 GB in memory)
SCAN_LEAD_NS = 50_000_000  # history every read gets: the IRQ around an hrtimer expiry at the edge
MIN_MARGIN_NS = 50_000_000  # history and future every analysed chunk gets at least
MAX_MARGIN_NS = 1_000_000_000
IDX_COLUMNS = ("t_idx", "entry_idx", "w_idx", "switch_idx")
NO_START = -(1 << 62)


@dataclass
class ChunkScan:
    """What pass 1 learns of one chunk (its own ``[start_ns, end_ns)``)."""

    start_ns: int
    end_ns: int | None
    events: int = 0
    first_ts: int | None = None
    last_ts: int | None = None
    names: set[str] = field(default_factory=set)
    vcpus: pl.DataFrame = field(default_factory=pl.DataFrame)  # vcpu_tid, comm, entries, cpus, first/last_entry_ns
    last_switch: pl.DataFrame = field(default_factory=pl.DataFrame)  # cpu, last_switch_ns
    markers: pl.DataFrame = field(default_factory=pl.DataFrame)
    mono: MonoEvidence | None = None
    read: ReadReport = field(default_factory=ReadReport)  # of its own span
    per_type: pl.DataFrame = field(default_factory=pl.DataFrame)  # event, len: its own events per type
    per_cpu: pl.DataFrame = field(default_factory=pl.DataFrame)  # cpu, len


@dataclass
class Plan:
    """The chunks and what each needs read: ``reads[i]`` (start_ns, end_ns) holds chunk i with its
    history and future; ``events_before[i]``: events of the capture before chunk i."""

    capture: Capture  # the first chunk's capture without its events: the file's facts, manifest, path
    scans: list[ChunkScan]
    reads: list[tuple[int | None, int | None]]
    events_before: list[int]
    vcpus: pl.DataFrame
    names: set[str]
    first_ts: int
    last_ts: int
    markers: pl.DataFrame
    mono: MonoClock | None


def _read(path: Path, span: tuple[int | None, int | None]) -> Capture:
    return open_capture(path, use_cache=False, window=span)


def _owned_count(ts: pl.Series, start_ns: int, end_ns: int | None) -> tuple[int, int]:
    """(events before start_ns, events in [start_ns, end_ns)) of a sorted ts column."""
    before = int(ts.search_sorted(start_ns, side="left"))
    end = int(ts.search_sorted(end_ns, side="left")) if end_ns is not None else ts.len()
    return before, end - before


def _compact(df: pl.DataFrame) -> pl.DataFrame:
    """``df`` in buffers of its own: a few rows kept from a chunk must not keep the chunk's string heap
    alive (polars strings are views into shared buffers)."""
    buf = io.BytesIO()
    df.write_ipc(buf, compression="uncompressed")
    buf.seek(0)
    return pl.read_ipc(buf)


def _scan(t: EventTables, start_ns: int, end_ns: int | None) -> ChunkScan:
    ts = t.events["ts"]
    before, n = _owned_count(ts, start_ns, end_ns)
    scan = ChunkScan(start_ns, end_ns, n)
    if n:
        scan.first_ts, scan.last_ts = int(ts[before]), int(ts[before + n - 1])
    scan.names = {name for name, tab in t.by_event.items() if tab.height}
    entry = entry_event(t)
    if t.has(entry):
        scan.vcpus = _compact(entries_by_thread(t, owned_rows(t.table(entry), start_ns, end_ns, "ts")))
    if t.has("sched_switch"):
        scan.last_switch = (owned_rows(t.table("sched_switch"), start_ns, end_ns, "ts")
                            .group_by("cpu").agg(pl.col("ts").max().alias("last_switch_ns")))
    scan.markers = _compact(owned_rows(t.markers(), start_ns, end_ns, "ts").with_columns(
        (pl.col("idx").cast(pl.Int64) - before).alias("idx")))  # made global in plan()
    scan.mono = mono_evidence(t).owned(start_ns, end_ns)
    owned = t.events.slice(before, n)
    scan.read = t.report.within(start_ns, None if end_ns is None else end_ns - 1, owned)
    scan.per_type = owned.group_by("event").len().with_columns(pl.col("event").cast(pl.String))
    scan.per_cpu = owned.group_by("cpu").len()
    return scan


def _merged_vcpus(scans: list[ChunkScan]) -> pl.DataFrame:
    parts = [s.vcpus.with_columns(pl.lit(i).alias("chunk")) for i, s in enumerate(scans) if s.vcpus.height]
    if not parts:
        return pl.DataFrame(schema=VCPU_SCHEMA)
    df = pl.concat(parts).sort("chunk")
    return (df.group_by("vcpu_tid")
            .agg(pl.col("comm").last(), pl.col("entries").sum(), pl.col("cpus").explode().unique().sort())
            .sort("vcpu_tid").select(list(VCPU_SCHEMA)).cast(VCPU_SCHEMA))  # type: ignore[arg-type]


def _edge_state(scans: list[ChunkScan], column: str, frame: str, i: int, latest: bool) -> dict[int, int]:
    """Per key (vCPU thread or CPU), its ``column`` in the chunks before i (latest) or from i on (earliest)."""
    key = "vcpu_tid" if frame == "vcpus" else "cpu"
    chunks = scans[:i][::-1] if latest else scans[i:]
    out: dict[int, int] = {}
    for s in chunks:
        df = getattr(s, frame)
        if df.height:
            for k, v in df.select(key, column).iter_rows():
                out.setdefault(int(k), int(v))
    return out


def _active(scans: list[ChunkScan], i: int) -> set[int]:
    return {int(x) for s in scans[i:i + 2] if s.vcpus.height for x in s.vcpus["vcpu_tid"].to_list()}


def _margins(scans: list[ChunkScan], i: int) -> tuple[int | None, int | None]:
    """The read of chunk i: back to where its vCPU threads last entered the guest and its CPUs last
    switched task, on to where the vCPUs it saw next enter the guest and the next chunk's first event."""
    s = scans[i]
    span = (s.last_ts or s.start_ns) - (s.first_ts or s.start_ns)
    margin = max(MIN_MARGIN_NS, min(MAX_MARGIN_NS, span // 8))
    start: int | None = None
    if i > 0:
        active = _active(scans, i)
        entered = [v for k, v in _edge_state(scans, "last_entry_ns", "vcpus", i, True).items() if k in active]
        switched = [v for k, v in _edge_state(scans, "last_switch_ns", "last_switch", i, True).items()
                    if s.last_switch.height and k in set(s.last_switch["cpu"].to_list())]
        start = min([s.start_ns - margin, *entered, *switched])
    end: int | None = None
    if s.end_ns is not None:
        seen = set(s.vcpus["vcpu_tid"].to_list()) if s.vcpus.height else set()
        nexts = [v for k, v in _edge_state(scans, "first_entry_ns", "vcpus", i + 1, False).items() if k in seen]
        following = next((x.first_ts for x in scans[i + 1:] if x.first_ts is not None), None)
        end = max([s.end_ns + margin, *nexts, *([following] if following is not None else [])])
    return start, end


def plan(path: Path, edges: list[int]) -> Plan:
    """Pass 1: scan every chunk (module docstring)."""
    bounds = [NO_START, *edges]
    scans = []
    for i, start in enumerate(bounds):
        end = bounds[i + 1] if i + 1 < len(bounds) else None
        step(f"scanning chunk {i + 1} of {len(bounds)}")
        cap = _read(path, (None if i == 0 else start - SCAN_LEAD_NS, None if end is None else end - 1))
        scans.append(_scan(cap.tables, start, end))
        if i == 0:
            first = cap
            first.tables = _empty_like(cap.tables)
        del cap
        gc.collect()
    first.tables.report = merge_reports([s.read for s in scans])
    before = [0]
    for s in scans:
        before.append(before[-1] + s.events)
    markers = pl.concat([s.markers.with_columns(pl.col("idx") + before[i]) for i, s in enumerate(scans)
                         if s.markers.height] or [scans[0].markers]).with_columns(pl.col("idx").cast(pl.UInt32))
    firsts = [s.first_ts for s in scans if s.first_ts is not None]
    lasts = [s.last_ts for s in scans if s.last_ts is not None]
    return Plan(first, scans, [_margins(scans, i) for i in range(len(scans))], before[:-1], _merged_vcpus(scans),
                set().union(*(s.names for s in scans)), min(firsts, default=0), max(lasts, default=0), markers,
                mono_from(first.tables.meta.clock, MonoEvidence.concat([s.mono for s in scans if s.mono is not None])))


def _empty_like(t: EventTables) -> EventTables:
    """``t``'s file facts, formats and read report, without its events."""
    return EventTables(events=t.events.clear(), by_event={}, formats=t.formats, meta=t.meta, report=t.report,
                       cmdlines=t.cmdlines)


def _chunks(p: Plan) -> list[tuple[int, ChunkScan, tuple[int | None, int | None]]]:
    return [(i, s, p.reads[i]) for i, s in enumerate(p.scans)]


@dataclass
class _Wakers:
    """What the host-native analysis would explain (analysis/native.py ``tids``), counted chunk by chunk."""

    timer_wakeups: list[pl.DataFrame] = field(default_factory=list)  # pid, len
    sleeps: list[pl.DataFrame] = field(default_factory=list)  # pid, now_ns, expires_ns of their own sleeps
    realtime: set[int] = field(default_factory=set)  # switched in at a real-time priority
    seen: set[int] = field(default_factory=set)  # switched in at all

    def add(self, t: EventTables, mono: MonoClock | None, s: ChunkScan) -> None:
        if not t.has("sched_switch"):
            return
        sw = t.table("sched_switch")
        self.seen |= set(sw["next_pid"].unique().to_list())
        self.realtime |= realtime_threads(sw)
        tw = owned_rows(any_timer_wakeups(t, None, mono), s.start_ns, s.end_ns, "w_ts")
        self.timer_wakeups.append(tw.group_by("pid").len())
        self.sleeps.append(own_sleeps(tw).select("pid", "now_ns", "expires_ns"))

    def threads(self, known: list[int], exclude: set[int]) -> list[int]:
        """``measuring_threads`` over the whole capture, without the vCPU threads."""
        known = [k for k in known if k in self.seen]
        if known:
            return [k for k in known if k not in exclude]
        if not self.timer_wakeups:
            return []
        counts = pl.concat(self.timer_wakeups).group_by("pid").agg(pl.col("len").sum())
        return [tid for tid in woken_enough(counts, self.realtime).to_list() if tid not in exclude]

    def fits(self, tids: list[int], intervals: dict[int, int]) -> dict[int, SleepFit]:
        """``sleep_fits`` of these threads over all chunks: what one read of the whole capture would fit."""
        sleeps = pl.concat(self.sleeps).filter(pl.col("pid").is_in(tids))
        return sleep_fits(sleeps, intervals)


def clock_maps(path: Path, p: Plan, wakers: _Wakers) -> DeadlineMaps:
    """Pass 2: the capture's deadline maps from every chunk's evidence (module docstring)."""
    tids = p.vcpus["vcpu_tid"]
    parts = []
    for i, s, span in _chunks(p):
        step(f"deadline evidence, chunk {i + 1} of {len(p.scans)}")
        t = _read(path, span).tables
        parts.append(deadline_evidence(t, interrupts(t, tids, part=True), tids, p.mono).owned(s.start_ns, s.end_ns))
        wakers.add(t, p.mono, s)
        del t
        gc.collect()
    return deadline_maps(p.mono, DeadlineEvidence.concat(parts))


@dataclass
class _Pieces:
    """What pass 3 keeps of each chunk: its interrupts and their blame shares spilled to Parquet in
    ``folder`` (so that only one chunk's tables are in memory), the rest in memory (small)."""

    folder: Path
    chunks: int = 0
    deadlines: list[pl.DataFrame] = field(default_factory=list)
    compared: dict[str, list[pl.DataFrame]] = field(default_factory=dict)
    stalls: list[pl.DataFrame] = field(default_factory=list)
    throttled: list[pl.DataFrame] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    last: Deadlines | None = None
    irqs: int = 0

    def spill(self, name: str, df: pl.DataFrame) -> None:
        df.write_parquet(self.folder / f"{name}-{self.chunks:05d}.parquet", compression="lz4", statistics=False)

    def files(self, name: str) -> list[Path]:
        return sorted(self.folder.glob(f"{name}-*.parquet"))


@dataclass
class ChunkedLatency(LatencyAnalysis):
    """The latency analysis of a capture read in chunks: its blame shares stay in Parquet files (read
    when asked for), which live as long as it does (``spilled``)."""

    share_files: list[Path] = field(default_factory=list)
    spilled: tempfile.TemporaryDirectory[str] | None = None

    def share_rows(self) -> pl.LazyFrame:
        return pl.scan_parquet(self.share_files) if self.share_files else pl.DataFrame(schema=SHARE_SCHEMA).lazy()

    @cached_property
    def shares(self) -> pl.DataFrame:
        return self.share_rows().collect()


def _global_idx(df: pl.DataFrame, offset: int, columns: tuple[str, ...]) -> pl.DataFrame:
    return df.with_columns((pl.col(c).cast(pl.Int64) + offset).cast(pl.UInt32) for c in columns if c in df.columns)


def _keep(pieces: _Pieces, a: LatencyAnalysis, s: ChunkScan, offset: int) -> None:
    table, shares = a.table, a.shares
    irq_no = pl.col("irq_no") + pieces.irqs
    pieces.spill("table", _global_idx(table, offset, IDX_COLUMNS).with_columns(irq_no))
    pieces.spill("shares", shares.with_columns(irq_no))
    pieces.irqs += table.height
    pieces.chunks += 1
    found = owned_rows(a.found, s.start_ns, s.end_ns, "t_ns").select("t_idx")
    d = a.deadlines
    pieces.deadlines.append(_compact(_global_idx(d.table.join(found, on="t_idx", how="semi"), offset, ("t_idx",))))
    for name, j in d.compared.items():
        pieces.compared.setdefault(name, []).append(_global_idx(j.join(found, on="t_idx", how="semi"), offset,
                                                                ("t_idx",)))
    pieces.stalls.append(_global_idx(owned_rows(a.stalls, s.start_ns, s.end_ns, "start_ns"), offset,
                                     ("start_idx", "end_idx")))
    pieces.throttled.append(_compact(owned_rows(a.throttling.intervals, s.start_ns, s.end_ns, "start_ns")))
    pieces.notes.extend(a.notes)
    pieces.last = d


@dataclass
class ChunkedAnalyses:
    """What ``analyze`` finds in a capture read in chunks: the guest's interrupts (None: no guest) and
    the host's own real-time threads (None: none, or the events they need are missing)."""

    capture: Capture  # the capture's facts, markers and phases, without its events
    window: Window
    latency: ChunkedLatency | None
    native: NativeAnalysis | None


def chunk_bytes_for(trace: Path, chunk_mb: int | None) -> int | None:
    """How much trace data each chunk of ``trace`` holds, or None to read it whole: a text capture,
    ``chunk_mb`` 0, or (``chunk_mb`` None) a file of at most AUTO_CHUNK_MB."""
    if chunk_mb == 0 or not is_tracedat(trace):
        return None
    if chunk_mb is None and trace.stat().st_size <= AUTO_CHUNK_MB << 20:
        return None
    return (chunk_mb or DEFAULT_CHUNK_MB) << 20


def summary_of(path: Path, chunk_bytes: int) -> tuple[Capture, Plan] | None:
    """Pass 1 alone: the capture's facts, markers and phases without its events, and what each chunk
    holds (``kvmtrace info`` of a large capture); None when it fits in one chunk."""
    trace, manifest = find_trace(path)
    from kvmtrace.ingest.tracedat.reader import time_chunks

    edges = time_chunks(trace, chunk_bytes)
    if not edges:
        return None
    p = plan(path, edges)
    return _summary_capture(p, manifest), p


def analyze_chunked(path: Path, spec: str | None, worst_n: int, chunk_bytes: int = DEFAULT_CHUNK_MB << 20
                    ) -> ChunkedAnalyses | None:
    """``analyze`` of a window of a large trace.dat, read in chunks of about ``chunk_bytes`` of trace data;
    None when it fits in one chunk, or has neither a guest nor host threads to explain (then read it
    whole, which says so)."""
    found = summary_of(path, chunk_bytes)
    if found is None:
        return None
    summary, p = found
    manifest = summary.manifest
    window = resolve_window(path, spec, pl.DataFrame({"ts": [p.first_ts, p.last_ts]}), summary.phases)
    wakers = _Wakers()
    maps = clock_maps(path, p, wakers)
    guest = p.vcpus.height > 0
    tids = wakers.threads([int(x) for x in summary.cyclictest["tid"].unique().to_list()],
                          set(p.vcpus["vcpu_tid"].to_list()))
    native = bool(tids) and not missing_events(lambda name: name in p.names)
    if not guest and not native:
        return None  # nothing to explain: read it whole (for the error that says so)
    fitted = (p.mono, wakers.fits(tids, cyclictest_intervals(summary.cyclictest))) if native else (None, {})
    folder = tempfile.TemporaryDirectory(prefix="kvmtrace-chunks-")
    pieces = _Pieces(Path(folder.name))
    hosts = _NativePieces()
    for i, s, span in _chunks(p):
        step(f"interrupts, chunk {i + 1} of {len(p.scans)}")
        cap = _read(path, span)
        before, _ = _owned_count(cap.tables.events["ts"], s.start_ns, s.end_ns)
        offset = p.events_before[i] - before
        if guest:
            a = LatencyAnalysis(cap, window, worst_n, chunk=ChunkContext(p.vcpus, maps, s.start_ns, s.end_ns))
            _keep(pieces, a, s, offset)
            del a
        if native:
            hosts.keep(NativeAnalysis(cap, window.start_ns, window.end_ns, worst_n,
                                      chunk=NativeChunk(pl.Series("tid", tids, pl.Int32), fitted, s.start_ns,
                                                        s.end_ns)),
                       s, offset)
        del cap
        gc.collect()
    step("joining the chunks")
    latency = None
    if guest:
        latency = _merged(p, summary, window, worst_n, pieces, manifest)
        latency.spilled = folder
    return ChunkedAnalyses(summary, window, latency,
                           hosts.merged(summary, window, worst_n, tids, p.names, manifest) if native else None)


@dataclass
class _NativePieces:
    """What pass 3 keeps of each chunk's native analysis (small: one row per wakeup of a few threads)."""

    tables: list[pl.DataFrame] = field(default_factory=list)
    shares: list[pl.DataFrame] = field(default_factory=list)
    throttled: list[pl.DataFrame] = field(default_factory=list)
    wakeups: int = 0

    def keep(self, na: NativeAnalysis, s: ChunkScan, offset: int) -> None:
        irq_no = pl.col("irq_no") + self.wakeups
        self.tables.append(_compact(_global_idx(na.table, offset, ("w_idx", "switch_idx")).with_columns(irq_no)))
        self.shares.append(_compact(na.shares.with_columns(irq_no)))
        self.throttled.append(_compact(owned_rows(na.throttling.intervals, s.start_ns, s.end_ns, "start_ns")))
        self.wakeups += na.table.height

    def merged(self, cap: Capture, window: Window, worst_n: int, tids: list[int], names: set[str],
               manifest: Manifest | None) -> NativeAnalysis:
        na = NativeAnalysis(cap, window.start_ns, window.end_ns, worst_n)
        table = pl.concat(self.tables)
        shares = pl.concat(self.shares)
        na.__dict__.update(tids=pl.Series("tid", tids, pl.Int32), table=table, shares=shares, _shares=shares,
                           throttling=throttling_of(pl.concat(self.throttled), manifest.host if manifest else None))
        na.notes = wakeup_notes(table, lambda name: name in names)
        return na


def _summary_capture(p: Plan, manifest: Manifest | None) -> Capture:
    cap = p.capture
    cap.read_window = None
    cap.__dict__["markers"] = p.markers
    first, last = p.first_ts, p.last_ts
    cap.__dict__["phases"] = phases_with_manifest(
        phases_from_markers(p.markers, first, last, cap.marker_pattern()), manifest)
    return cap


def _merged(p: Plan, cap: Capture, window: Window, worst_n: int, pieces: _Pieces,
            manifest: Manifest | None) -> ChunkedLatency:
    a = ChunkedLatency(cap, window, worst_n, share_files=pieces.files("shares"))
    table = pl.read_parquet(pieces.files("table"))
    last = pieces.last
    assert last is not None
    dtable = pl.concat(pieces.deadlines)
    compared = {k: pl.concat(v) for k, v in pieces.compared.items()}
    # a chunk without deadlines says they are unknown; the capture has them when another chunk found some
    notes = [n for n in dict.fromkeys(pieces.notes) if not (dtable.height and n == DEADLINES_UNKNOWN_NOTE)]
    deadlines = Deadlines(dtable, last.counter, last.mono, compared, notes)
    throttling = throttling_of(pl.concat(pieces.throttled), manifest.host if manifest else None)
    a.notes = [*missing_event_notes(lambda name: name in p.names), *notes, *unknown_deadline_notes(table)]
    a.__dict__.update(vcpus=p.vcpus, table=table, deadlines=deadlines,
                      _deadlines=deadlines, stalls=pl.concat(pieces.stalls), throttling=throttling)
    return a
