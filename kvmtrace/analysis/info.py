"""``kvmtrace info``: the facts of a capture as one JSON-ready document (format, kernel, clock, CPUs,
time span, events per type and CPU, what the read lost or skipped, markers, phases)."""

from __future__ import annotations

from typing import Any

from kvmtrace.arch.detect import machine
from kvmtrace.capture import Capture
from kvmtrace.ingest import kernels

INFO_VERSION = 1
def info_dict(cap: Capture) -> dict[str, Any]:
    t = cap.tables
    ev = t.events
    meta = t.meta
    counts = ev.group_by("event").len().sort(["len", "event"], descending=[True, False])
    per_cpu = ev.group_by("cpu").len().sort("cpu")
    exit_fmt = t.formats.get("kvm_exit")
    arch = machine(meta.uname, set(t.by_event), {f.name for f in exit_fmt.payload_fields} if exit_fmt else set())
    first = int(ev["ts"].min()) if ev.height else None  # type: ignore[arg-type]
    last = int(ev["ts"].max()) if ev.height else None  # type: ignore[arg-type]
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
            "total": ev.height,
            "per_type": {str(r["event"]): int(r["len"]) for r in counts.iter_rows(named=True)},
            "per_cpu": {str(r["cpu"]): int(r["len"]) for r in per_cpu.iter_rows(named=True)},
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
