"""Benchmark kvmtrace's readers against ``trace-cmd report`` on the same capture, in one run.

For a trace.dat CAPTURE, each repeat runs, in a fresh subprocess:

* ours: ``read_tracedat(CAPTURE)`` with every table built (common table and typed tables);
  wall time of the whole child, time of the read itself, and the child's peak RSS (wait4);
* trace-cmd: ``trace-cmd report -i CAPTURE > /dev/null``, wall time and peak RSS.

It prints events, median seconds, events/s, the speed ratio (trace-cmd time / ours), peak RSS
and bytes per event, and checks the project's targets (>= 10 M events/s, >= 10x trace-cmd,
< 150 bytes/event at peak). ``--text FILE`` times ``kvmtrace.ingest.text.reader.read_text`` the same
way against >= 3 M lines/s (skipped with a message when that module is absent). ``--profile`` runs the trace.dat reader
once in this process under cProfile, with per-phase timings from the reader's progress callback.

Usage::

    bench_read.py CAPTURE [--repeat 3] [--text FILE] [--profile] [--no-trace-cmd]
"""

from __future__ import annotations

import argparse
import cProfile
import importlib.util
import json
import os
import pstats
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET_RATE = 10e6
TARGET_RATIO = 10.0
TARGET_BYTES = 150.0
TARGET_TEXT_RATE = 3e6

CHILD = """
import json, resource, sys, time
t0 = time.perf_counter()
from {module} import {func} as read
t1 = time.perf_counter()
tables = read(sys.argv[1])
rows = tables.events.height
typed = sum(t.height for t in tables.by_event.values())
t2 = time.perf_counter()
print(json.dumps({{"events": rows, "typed_rows": typed, "tables": len(tables.by_event),
                  "import_s": t1 - t0, "read_s": t2 - t1,
                  "lost": tables.report.total_lost()}}))
"""
IMPORT_ONLY = "import polars, numpy, kvmtrace.ingest.tracedat.decode, kvmtrace.ingest.tracedat.reader"


@dataclass
class Run:
    """One timed subprocess."""

    wall_s: float
    rss_bytes: int
    read_s: float | None = None
    events: int | None = None


def run_child(cmd: list[str], stdout: int | None = subprocess.PIPE) -> tuple[Run, str]:
    """Run ``cmd``; wall time and peak RSS of exactly that child (os.wait4)."""
    with tempfile.TemporaryFile() as errfile:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=stdout, stderr=errfile, cwd=ROOT)
        out = proc.stdout.read().decode() if proc.stdout else ""
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            errfile.seek(0)
            err = errfile.read().decode(errors="replace")
            raise SystemExit(f"{' '.join(cmd[:3])} ... failed ({proc.returncode}):\n{err[-2000:]}")
    return Run(wall, usage.ru_maxrss * 1024), out


def ours(capture: Path, module: str, func: str) -> Run:
    """Time one of our readers on ``capture`` in a fresh interpreter."""
    code = CHILD.format(module=module, func=func)
    run, out = run_child([sys.executable, "-c", code, str(capture)])
    info = json.loads(out.strip().splitlines()[-1])
    run.read_s, run.events = info["read_s"], info["events"]
    return run


def trace_cmd(capture: Path) -> Run:
    """Time ``trace-cmd report -i capture > /dev/null``."""
    run, _ = run_child(["trace-cmd", "report", "-i", str(capture)], stdout=subprocess.DEVNULL)
    return run


def median(runs: list[Run], attr: str) -> float:
    return statistics.median(float(getattr(r, attr)) for r in runs)


def row(label: str, events: int, runs: list[Run], ratio_to: float | None) -> str:
    """One table line; wall seconds include the interpreter's start and imports."""
    wall = median(runs, "wall_s")
    rss = median(runs, "rss_bytes")
    read = f"{median(runs, 'read_s'):8.2f}" if runs[0].read_s is not None else f"{'':8}"
    ratio = f"{ratio_to / wall:7.1f}x" if ratio_to else f"{'':8}"
    return (f"{label:<22}{events:>12,}{wall:9.2f}{read}{events / wall / 1e6:10.2f}"
            f"{ratio}{rss / 2**20:10.0f}{rss / events:9.0f}")


HEADER = (f"{'reader':<22}{'events':>12}{'wall s':>9}{'read s':>8}{'M ev/s':>10}"
          f"{'tc/ours':>8}{'peak MB':>10}{'B/event':>9}")


def bench_tracedat(capture: Path, repeat: int, with_trace_cmd: bool) -> None:
    """Alternate our reader and trace-cmd so machine noise hits both alike; print the table."""
    mine: list[Run] = []
    theirs: list[Run] = []
    for _ in range(repeat):
        mine.append(ours(capture, "kvmtrace.ingest.tracedat.reader", "read_tracedat"))
        if with_trace_cmd:
            theirs.append(trace_cmd(capture))
    events = int(mine[0].events or 0)
    tc_wall = median(theirs, "wall_s") if theirs else None
    print(f"\n{capture} ({capture.stat().st_size / 1e6:.1f} MB), median of {repeat}")
    print(HEADER)
    print(row("kvmtrace read_tracedat", events, mine, tc_wall))
    if theirs:
        print(row("trace-cmd report", events, theirs, None))
    _targets(events, mine, tc_wall)


def _targets(events: int, mine: list[Run], tc_wall: float | None) -> None:
    wall, read, rss = median(mine, "wall_s"), median(mine, "read_s"), median(mine, "rss_bytes")
    checks = [
        (f"events/s (wall) {events / wall / 1e6:.2f} M", events / wall >= TARGET_RATE),
        (f"events/s (read only) {events / read / 1e6:.2f} M", events / read >= TARGET_RATE),
        (f"peak bytes/event {rss / events:.0f}", rss / events < TARGET_BYTES),
    ]
    if tc_wall:
        ratio = tc_wall / wall
        checks.append((f"vs trace-cmd report {ratio:.1f}x", ratio >= TARGET_RATIO))
    print("targets: " + "; ".join(f"{text} {'OK' if ok else 'MISSED'}" for text, ok in checks))


def bench_text(path: Path, repeat: int) -> None:
    """Time kvmtrace.ingest.text.reader.read_text, if that module exists."""
    if importlib.util.find_spec("kvmtrace.ingest.text.reader") is None:
        print(f"\n--text {path}: skipped, kvmtrace.ingest.text.reader is not there yet")
        return
    runs = [ours(path, "kvmtrace.ingest.text.reader", "read_text") for _ in range(repeat)]
    events = int(runs[0].events or 0)
    print(f"\n{path} ({path.stat().st_size / 1e6:.1f} MB text), median of {repeat}")
    print(HEADER)
    print(row("kvmtrace read_text", events, runs, None))
    wall, read = median(runs, "wall_s"), median(runs, "read_s")
    checks = [(f"lines/s (wall) {events / wall / 1e6:.2f} M", events / wall >= TARGET_TEXT_RATE),
              (f"lines/s (read only) {events / read / 1e6:.2f} M", events / read >= TARGET_TEXT_RATE)]
    print("targets: " + "; ".join(f"{text} {'OK' if ok else 'MISSED'}" for text, ok in checks))


def baseline_rss() -> None:
    """Peak RSS of an interpreter that only imports the reader (part of every peak above)."""
    run, _ = run_child([sys.executable, "-c", IMPORT_ONLY])
    print(f"\nimport-only child: {run.wall_s:.2f} s, peak RSS {run.rss_bytes / 2**20:.0f} MB")


def profile(capture: Path, top: int) -> None:
    """Per-phase timings (progress callback) and a cProfile of one read in this process."""
    from kvmtrace.ingest.tracedat.decode import decode_tracedat
    from kvmtrace.ingest.tracedat.reader import read_structure

    marks: list[tuple[str, float]] = []
    prof = cProfile.Profile()
    t0 = time.perf_counter()
    prof.enable()
    f = read_structure(capture)
    marks.append(("read_structure (parse, inflate)", time.perf_counter()))
    tables = decode_tracedat(f, lambda label, _frac: marks.append((label, time.perf_counter())))
    prof.disable()
    print(f"\nphases ({tables.events.height:,} events; time until the next mark, profiler on):")
    prev_label, prev = "start", t0
    for label, t in marks:
        print(f"  {t - prev:8.2f} s  {prev_label}")
        prev_label, prev = label, t
    stats = pstats.Stats(prof).strip_dirs()
    for key in ("tottime", "cumulative"):
        print(f"\ntop {top} by {key}:")
        stats.sort_stats(key).print_stats(top)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("capture", nargs="?", type=Path, help="trace.dat to read")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--text", type=Path, help="also time read_text on this text capture")
    ap.add_argument("--no-trace-cmd", action="store_true", help="skip trace-cmd report")
    ap.add_argument("--profile", action="store_true", help="cProfile one read of CAPTURE")
    ap.add_argument("--top", type=int, default=25, help="profile lines to print")
    args = ap.parse_args(argv)
    if args.capture is None and args.text is None:
        ap.error("give a CAPTURE, --text FILE, or both")
    baseline_rss()
    if args.capture is not None:
        bench_tracedat(args.capture, args.repeat, not args.no_trace_cmd)
    if args.text is not None:
        bench_text(args.text, args.repeat)
    if args.profile and args.capture is not None:
        profile(args.capture, args.top)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
