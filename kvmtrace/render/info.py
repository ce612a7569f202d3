"""``kvmtrace info``: the facts of a capture as a JSON-ready dict and as rich tables."""

from __future__ import annotations

import re
from typing import Any

from rich.console import Console
from rich.table import Table

from kvmtrace.capture import Capture
from kvmtrace.ingest import native
from kvmtrace.render.tables import facts_table

INFO_VERSION = 1
_ARCH_RE = re.compile(r"\b(aarch64|arm64|armv\d\w*|x86_64|i[3-6]86|riscv64|ppc64le|s390x)\b")


def guess_arch(uname: str | None, event_names: set[str], kvm_exit_fields: set[str]) -> str | None:
    """The traced machine's architecture: from uname, else from which KVM events it has."""
    if uname:
        m = _ARCH_RE.search(uname)
        if m:
            return {"arm64": "aarch64"}.get(m.group(1), m.group(1))
    if "esr_ec" in kvm_exit_fields or "kvm_wfx_arm64" in event_names:
        return "aarch64"
    if "exit_reason" in kvm_exit_fields or "kvm_inj_virq" in event_names:
        return "x86_64"
    if "kvm_exit" in event_names and kvm_exit_fields <= {"vcpu_pc"}:
        return "arm"
    return None


def info_dict(cap: Capture) -> dict[str, Any]:
    t = cap.tables
    ev = t.events
    meta = t.meta
    counts = ev.group_by("event").len().sort("len", descending=True)
    per_cpu = ev.group_by("cpu").len().sort("cpu")
    exit_fmt = t.formats.get("kvm_exit")
    arch = guess_arch(meta.uname, set(t.by_event), {f.name for f in exit_fmt.payload_fields} if exit_fmt else set())
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
    eng = native.engine()
    return "native kernels" if eng.name == "native" else f"numpy ({eng.detail})"


def _secs(ns: int | None) -> str:
    return "-" if ns is None else f"{ns / 1e9:.6f}"


def render_info(doc: dict[str, Any], console: Console) -> None:
    console.print(_facts_table(doc))
    console.print(_events_table(doc))
    console.print(_lost_table(doc))
    if doc["markers"] or doc["phases"]:
        console.print(_phases_table(doc))
    for line in _problems(doc):
        console.print(f"[yellow]{line}[/yellow]")


def _facts_table(doc: dict[str, Any]) -> Table:
    f = doc["format"]
    fmt = f"{f['kind']} v{f['version']}" if f["kind"] == "trace.dat" else f"text ({f['version']})"
    if f["kind"] == "trace.dat":
        fmt += f", {f['compression']}, {f['endian']} endian, {f['long_size']}-byte long, {f['page_size']}-byte pages"
    rows = [
        ("format", fmt),
        ("kernel", doc["kernel"]["uname"] or "unknown"),
        ("arch", doc["kernel"]["arch"] or "unknown"),
        ("clock", doc["clock"] or "unknown"),
        ("CPUs", str(doc["cpus"])),
        ("buffers", ", ".join(repr(b) for b in doc["buffers"]) or "-"),
        ("time span", f"{_secs(doc['time']['first_ns'])} .. {_secs(doc['time']['last_ns'])} s "
                      f"({_secs(doc['time']['span_ns'])} s)"),
        ("events", f"{doc['events']['total']:,}"),
        ("read by", doc["read_by"]),
    ]
    if doc["timestamp_correction"]:
        rows.append(("timestamps", ", ".join(doc["timestamp_correction"])))
    if doc["manifest"]:
        m = doc["manifest"]
        rows.append(("manifest", f"capture.json v{m['kvmtrace_capture']}, {m.get('side', 'host')} side"))
    return facts_table(f"Capture {doc['capture']}", rows)


def _events_table(doc: dict[str, Any]) -> Table:
    t = Table(title="Events per type", title_justify="left")
    t.add_column("event")
    t.add_column("count", justify="right")
    t.add_column("share", justify="right")
    total = max(1, doc["events"]["total"])
    for name, n in doc["events"]["per_type"].items():
        t.add_row(name, f"{n:,}", f"{100 * n / total:.1f}%")
    return t


def _lost_table(doc: dict[str, Any]) -> Table:
    read = doc["read"]
    t = Table(title="Lost events per CPU (ring-buffer page headers; kernel overrun at record time)",
              title_justify="left")
    for col in ("buffer", "cpu", "events", "lost", "pages flagged, count unknown", "kernel overrun"):
        t.add_column(col, justify="right" if col != "buffer" else "left")
    per_cpu = doc["events"]["per_cpu"]
    buffers = read["lost_events"] or {"": {}}
    for buf, lost in buffers.items():
        cpus = sorted(set(lost) | set(per_cpu), key=int)
        for cpu in cpus:
            t.add_row(repr(buf), cpu, f"{per_cpu.get(cpu, 0):,}", f"{lost.get(cpu, 0):,}",
                      str(read["lost_unknown_pages"].get(buf, {}).get(cpu, 0)),
                      str(read["kernel_overruns"].get(buf, {}).get(cpu, "-")))
    return t


def _phases_table(doc: dict[str, Any]) -> Table:
    t = Table(title="Markers and phases", title_justify="left")
    t.add_column("time (s)", justify="right")
    t.add_column("kind")
    t.add_column("text")
    rows = [(m["ts_ns"], "marker", m["text"]) for m in doc["markers"]]
    rows += [(p["start_ns"], "phase", f"{p['name']}: {_secs(p['start_ns'])} .. {_secs(p['end_ns'])} s "
              f"({_secs(p['duration_ns'])} s)") for p in doc["phases"]]
    for ts, kind, text in sorted(rows, key=lambda r: (r[0] or 0, r[1] != "phase")):
        t.add_row(_secs(ts), kind, text)
    return t


def _problems(doc: dict[str, Any]) -> list[str]:
    read = doc["read"]
    out = []
    lost = sum(n for per in read["lost_events"].values() for n in per.values())
    if lost:
        out.append(f"{lost:,} events were lost in the ring buffer (see the table above)")
    flagged = sum(n for per in read["lost_unknown_pages"].values() for n in per.values())
    if flagged:
        out.append(f"{flagged} pages say events were lost before them without a count")
    if read["skipped"]:
        out.append(f"{len(read['skipped'])} regions could not be decoded and were skipped:")
        out.extend(f"  {s['where']}: {s['reason']}" for s in read["skipped"][:20])
    if read["unknown_events"]:
        out.append("records of unknown event types: "
                   + ", ".join(f"{k} x{v}" for k, v in read["unknown_events"].items()))
    if read["unparsed_lines"]:
        out.append(f"{read['unparsed_lines']:,} text lines did not parse")
    return out

