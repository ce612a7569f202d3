#!/usr/bin/env python3
"""How ``kvmtrace analyze`` time and memory grow with the capture: one line per (capture, chunk size).

Each run is a fresh ``kvmtrace analyze CAPTURE --json --no-cache [--chunk-mb N]`` process; its wall
time and peak RSS (``wait4``: the whole process) are printed beside the capture's events and trace
data, and the interrupts it found. ``--chunk-mb`` values: ``auto`` (the default rule: chunks of
256 MB over 512 MB of trace file), ``0`` (whole capture in memory) or a size in MB. Same documents
across chunk sizes are checked (``same``: the JSON is identical to the first run's of that capture).

    scripts/bench_analyze.py /work/rec/hog1m /work/rec/hog10m --chunk-mb 0 auto 64
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _run(args: list[str]) -> tuple[float, int, bytes]:
    """Wall seconds, peak RSS bytes, stdout of one process."""
    started = time.perf_counter()
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    out = proc.stdout.read()
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        sys.exit(f"{' '.join(args)}: exit {proc.returncode}: {err.decode(errors='replace')[-300:]}")
    return wall, usage.ru_maxrss * 1024, out


def _events(capture: str) -> int:
    """Events in the capture, counted a time chunk at a time (a 100 M-event capture does not fit whole)."""
    code = ("import sys; from pathlib import Path; from kvmtrace.capture import find_trace, open_capture\n"
            "from kvmtrace.ingest.tracedat.reader import time_chunks\n"
            "p = Path(sys.argv[1]); e = [None, *time_chunks(find_trace(p)[0], 256 << 20), None]\n"
            "print(sum(open_capture(p, use_cache=False, window=(a, None if b is None else b - 1)).tables.events.height"
            " for a, b in zip(e[:-1], e[1:])))")
    _, _, out = _run([sys.executable, "-c", code, capture])
    return int(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("captures", nargs="+")
    ap.add_argument("--chunk-mb", nargs="+", default=["auto"])
    a = ap.parse_args()
    print(f"{'capture':28s} {'events':>12s} {'file MB':>8s} {'chunk':>6s} {'wall s':>7s} {'peak GB':>8s} "
          f"{'B/event':>8s} {'irq/wakeup':>11s} same")
    for capture in a.captures:
        events = _events(capture)
        p = Path(capture)
        trace = p / "trace.dat" if p.is_dir() else p
        first: str | None = None
        for chunk in a.chunk_mb:
            args = [sys.executable, "-m", "kvmtrace", "analyze", capture, "--json", "--no-cache"]
            if chunk != "auto":
                args += ["--chunk-mb", chunk]
            wall, peak, out = _run(args)
            digest = hashlib.sha256(out).hexdigest()
            first = first or digest
            doc = json.loads(out)  # guest interrupts, or the host's own threads' wakeups without a guest
            irqs = doc["interrupts"]["count"] if "interrupts" in doc else doc["native"]["wakeups"]["count"]
            print(f"{p.name:28s} {events:12,d} {trace.stat().st_size / 2**20:8.0f} {chunk:>6s} {wall:7.1f} "
                  f"{peak / 2**30:8.2f} {peak / events:8.0f} {irqs:11,d} {'yes' if digest == first else 'NO'}",
                  flush=True)


if __name__ == "__main__":
    main()
