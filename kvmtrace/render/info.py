"""``kvmtrace info`` on the terminal: the facts document (analysis/info.py) as rich tables."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from kvmtrace.ingest.readreport import SKIPPED_SHOWN, read_problems
from kvmtrace.render.tables import facts_table
from kvmtrace.units import seconds

SKIPPED_LISTED = 20  # skipped regions listed one per line


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
        ("time span", f"{seconds(doc['time']['first_ns'])} .. {seconds(doc['time']['last_ns'])} s "
                      f"({seconds(doc['time']['span_ns'])} s)"),
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
    rows += [(p["start_ns"], "phase", f"{p['name']}: {seconds(p['start_ns'])} .. {seconds(p['end_ns'])} s "
              f"({seconds(p['duration_ns'])} s)") for p in doc["phases"]]
    for ts, kind, text in sorted(rows, key=lambda r: (r[0] or 0, r[1] != "phase")):
        t.add_row(seconds(ts), kind, text)
    return t


def _problems(doc: dict[str, Any]) -> list[str]:
    """The read report's sentences (ingest/readreport.py), every skipped region named when there are many."""
    skipped = doc["read"]["skipped"]
    many = len(skipped) > SKIPPED_SHOWN
    listed = [f"  {s['where']}: {s['reason']}" for s in skipped[:SKIPPED_LISTED]] if many else []
    return [*read_problems(doc["read"]), *listed]

