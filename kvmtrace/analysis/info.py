"""``kvmtrace info``: the facts of a capture as one JSON-ready document (format, kernel, clock, CPUs,
time span, events per type and CPU, what the read lost or skipped, markers, phases)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl

from kvmtrace.arch.detect import machine
from kvmtrace.capture import Capture
from kvmtrace.ingest import kernels
from kvmtrace.ingest.tables import EventTables

if TYPE_CHECKING:
    from kvmtrace.analysis.chunked import Plan

INFO_VERSION = 1


@dataclass
class EventCounts:
    """How many events of each type and on each CPU, and their time span."""

    total: int
    per_type: pl.DataFrame  # event (String), len
    per_cpu: pl.DataFrame  # cpu, len
    first_ns: int | None
    last_ns: int | None
    names: set[str]  # the event types with events

    @classmethod
    def of(cls, t: EventTables) -> EventCounts:
        ev = t.events
        first = int(ev["ts"].min()) if ev.height else None  # type: ignore[arg-type]
        last = int(ev["ts"].max()) if ev.height else None  # type: ignore[arg-type]
        return cls(ev.height, ev.group_by("event").len().with_columns(pl.col("event").cast(pl.String)),
                   ev.group_by("cpu").len(), first, last, set(t.by_event))

    @classmethod
    def of_chunks(cls, p: Plan) -> EventCounts:
        """The counts of a capture read in chunks (analysis/chunked.py pass 1)."""
        def summed(frames: list[pl.DataFrame], key: str) -> pl.DataFrame:
            kept = [f for f in frames if f.height]
            return pl.concat(kept).group_by(key).agg(pl.col("len").sum()) if kept else pl.DataFrame(
                {key: [], "len": []}, schema={key: pl.String if key == "event" else pl.Int32, "len": pl.UInt32})

        some = any(s.first_ts is not None for s in p.scans)
        return cls(sum(s.events for s in p.scans), summed([s.per_type for s in p.scans], "event"),
                   summed([s.per_cpu for s in p.scans], "cpu"), p.first_ts if some else None,
                   p.last_ts if some else None, p.names)


def info_chunked(path: Path, chunk_mb: int | None) -> dict[str, Any] | None:
    """``info`` of a large trace.dat read in time chunks (the same document, one chunk in memory at a
    time); None to read it whole (chunked.chunk_bytes_for)."""
    from kvmtrace.analysis.chunked import chunk_bytes_for, summary_of
    from kvmtrace.capture import find_trace

    chunk_bytes = chunk_bytes_for(find_trace(path)[0], chunk_mb)
    found = summary_of(path, chunk_bytes) if chunk_bytes is not None else None
    if found is None:
        return None
    cap, p = found
    return info_dict(cap, EventCounts.of_chunks(p))


def info_dict(cap: Capture, counts: EventCounts | None = None) -> dict[str, Any]:
    """The info document of ``cap``; ``counts`` when its events are not in ``cap.tables`` (read in chunks)."""
    t = cap.tables
    c = counts if counts is not None else EventCounts.of(t)
    meta = t.meta
    per_type = c.per_type.sort(["len", "event"], descending=[True, False])
    exit_fmt = t.formats.get("kvm_exit")
    arch = machine(meta.uname, c.names, {f.name for f in exit_fmt.payload_fields} if exit_fmt else set())
    first, last = c.first_ns, c.last_ns
    return {
        "kvmtrace_info": INFO_VERSION,
        "capture": str(cap.path),
        "trace_file": str(cap.trace_path),
        "from_cache": cap.from_cache,
        "read_by": _read_by(cap),
        "format": {"kind": meta.kind, "version": meta.version, "compression": meta.compression,
                   "endian": meta.endian, "long_size": meta.long_size, "page_size": meta.page_size},
        "kernel": {"uname": meta.uname, "arch": arch, "tracer": meta.tracer_version},
        "clock": meta.clock,
        "clock_source": meta.options.get("clock_source", "the trace file"),
        "cpus": meta.cpus,
        "buffers": meta.buffers,
        "time": {"first_ns": first, "last_ns": last,
                 "span_ns": (last - first) if first is not None and last is not None else None},
        "events": {
            "total": c.total,
            "per_type": {str(r["event"]): int(r["len"]) for r in per_type.iter_rows(named=True)},
            "per_cpu": {str(r["cpu"]): int(r["len"]) for r in c.per_cpu.sort("cpu").iter_rows(named=True)},
        },
        "read": t.report.to_dict(),
        "markers": [{"ts_ns": r["ts"], "cpu": r["cpu"], "pid": r["pid"], "comm": r["comm"], "text": r["text"]}
                    for r in cap.markers.iter_rows(named=True)],
        "phases": cap.phases.to_dicts(),
        "cyclictest": cap.cyclictest.to_dicts(),
        "manifest": cap.manifest.to_dict() if cap.manifest else None,
        "timestamp_correction": meta.options.get("timestamp_correction", []),
    }


def _read_by(cap: Capture) -> str:
    """How the tables were made: the Parquet cache, the text readers, or a trace.dat engine."""
    if cap.from_cache:
        return "Parquet cache"
    if cap.tables.meta.kind != "trace.dat":
        return "text readers"
    eng = kernels.engine()
    return "native kernels" if eng.name == "native" else f"numpy ({eng.detail})"
