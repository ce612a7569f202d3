"""``kvmtrace export``: one analysis window as a trace file for a timeline viewer (docs/export.md)."""

from __future__ import annotations

import time
from pathlib import Path

from kvmtrace.analysis.latency import LatencyAnalysis
from kvmtrace.capture import Capture
from kvmtrace.errors import CaptureError
from kvmtrace.render.chrome_json import write_chrome_json
from kvmtrace.render.perfetto import write_perfetto
from kvmtrace.render.timeline import build_timeline

TARGETS = ("perfetto", "chrome-json")


def export(a: LatencyAnalysis, to: str, out: Path, guest: Capture | None = None) -> str:
    """Write the timeline of ``a`` as ``to`` (``perfetto`` or ``chrome-json``) to ``out``; a one-line summary."""
    if to not in TARGETS:
        raise CaptureError(None, None, f"--to {to!r}: expected one of {', '.join(TARGETS)}")
    started = time.monotonic()
    tl = build_timeline(a, guest)
    if to == "perfetto":
        st = write_perfetto(tl, out)
        what = (f"{st.slices:,} slices, {st.instants:,} instants, {st.counter_points:,} counter points, "
                f"{st.flows:,} flows")
    else:
        meta = {"kvmtrace_export": 1, "capture": str(a.capture.path), "window": a.window.to_dict()}
        what = f"{write_chrome_json(tl, out, meta):,} trace events"
    size = out.stat().st_size
    notes = "".join(f"; {n}" for n in tl.notes)
    return (f"wrote {out} ({size / 1e6:.1f} MB, {to}): {len(tl.tracks)} tracks, {what}, "
            f"{(tl.end_ns - tl.start_ns) / 1e9:.3f} s of trace in {time.monotonic() - started:.1f} s{notes}")
