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

``--corpus DIR`` does the same for every capture of a corpus built by scripts/bench/corpus.py
(its corpus.json names each capture's group and, for the field-kind captures, the kind; without
it every ``*.dat`` in DIR): one line per capture, then the median of each figure over the corpus
and the captures that miss a target. ``--engine native|numpy`` sets KVMTRACE_ENGINE for our child.

Usage::

    bench_read.py CAPTURE [--repeat 3] [--text FILE] [--profile] [--no-trace-cmd] [--engine numpy]
    bench_read.py --corpus DIR [--repeat 3] [--engine native|numpy] [--only NAME,...]
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
from kvmtrace.ingest import kernels
print(json.dumps({{"events": rows, "typed_rows": typed, "tables": len(tables.by_event),
                  "import_s": t1 - t0, "read_s": t2 - t1,
                  "lost": tables.report.total_lost(), "engine": kernels.engine().name}}))
"""
IMPORT_ONLY = "import polars, numpy, kvmtrace.ingest.tracedat.decode, kvmtrace.ingest.tracedat.reader"


@dataclass
class Run:
    """One timed subprocess."""

    wall_s: float
    rss_bytes: int
    read_s: float | None = None
    events: int | None = None
    engine: str = ""


def child_env(engine: str | None) -> dict[str, str] | None:
    """The environment of our child: this one, with KVMTRACE_ENGINE set when an engine is chosen."""
    return {**os.environ, "KVMTRACE_ENGINE": engine} if engine else None


def run_child(cmd: list[str], stdout: int | None = subprocess.PIPE,
              env: dict[str, str] | None = None) -> tuple[Run, str]:
    """Run ``cmd``; wall time and peak RSS of exactly that child (os.wait4)."""
    with tempfile.TemporaryFile() as errfile:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=stdout, stderr=errfile, cwd=ROOT, env=env)
        out = proc.stdout.read().decode() if proc.stdout else ""
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            errfile.seek(0)
            err = errfile.read().decode(errors="replace")
            raise SystemExit(f"{' '.join(cmd[:3])} ... failed ({proc.returncode}):\n{err[-2000:]}")
    return Run(wall, usage.ru_maxrss * 1024), out


def ours(capture: Path, module: str, func: str, engine: str | None = None) -> Run:
    """Time one of our readers on ``capture`` in a fresh interpreter."""
    code = CHILD.format(module=module, func=func)
    run, out = run_child([sys.executable, "-c", code, str(capture)], env=child_env(engine))
    info = json.loads(out.strip().splitlines()[-1])
    run.read_s, run.events, run.engine = info["read_s"], info["events"], info["engine"]
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


def measure(capture: Path, repeat: int, with_trace_cmd: bool, engine: str | None) -> tuple[list[Run], list[Run]]:
    """Alternate our reader and trace-cmd so machine noise hits both alike; their runs."""
    mine: list[Run] = []
    theirs: list[Run] = []
    for _ in range(repeat):
        mine.append(ours(capture, "kvmtrace.ingest.tracedat.reader", "read_tracedat", engine))
        if with_trace_cmd:
            theirs.append(trace_cmd(capture))
    return mine, theirs


def bench_tracedat(capture: Path, repeat: int, with_trace_cmd: bool, engine: str | None = None) -> None:
    """Time our reader against trace-cmd on one capture; print the table and the targets."""
    mine, theirs = measure(capture, repeat, with_trace_cmd, engine)
    events = int(mine[0].events or 0)
    tc_wall = median(theirs, "wall_s") if theirs else None
    print(f"\n{capture} ({capture.stat().st_size / 1e6:.1f} MB), median of {repeat}, {mine[0].engine} engine")
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


# ----------------------------------------------------------------------------- --corpus DIR


@dataclass
class Member:
    """One capture of a corpus: its name, what it is (group, or the field kind), its file."""

    name: str
    label: str
    path: Path


@dataclass
class Figures:
    """One capture's medians and the targets they meet."""

    name: str
    label: str
    events: int
    wall_s: float
    read_s: float
    rss_bytes: float
    tc_wall_s: float | None
    engine: str = ""

    @property
    def rate_wall(self) -> float:
        return self.events / self.wall_s

    @property
    def rate_read(self) -> float:
        return self.events / self.read_s

    @property
    def ratio(self) -> float | None:
        return self.tc_wall_s / self.wall_s if self.tc_wall_s else None

    @property
    def bytes_per_event(self) -> float:
        return self.rss_bytes / max(1, self.events)

    def misses(self) -> list[str]:
        """The targets missed, each with its figure."""
        out = []
        if self.rate_wall < TARGET_RATE:
            out.append(f"wall {self.rate_wall / 1e6:.2f} M/s < {TARGET_RATE / 1e6:.0f} M")
        if self.rate_read < TARGET_RATE:
            out.append(f"read {self.rate_read / 1e6:.2f} M/s < {TARGET_RATE / 1e6:.0f} M")
        if self.ratio is not None and self.ratio < TARGET_RATIO:
            out.append(f"trace-cmd {self.ratio:.1f}x < {TARGET_RATIO:.0f}x")
        if self.bytes_per_event >= TARGET_BYTES:
            out.append(f"peak {self.bytes_per_event:.0f} B/event >= {TARGET_BYTES:.0f}")
        return out


def corpus_members(folder: Path) -> list[Member]:
    """The captures of a corpus: corpus.json's members in its order (field kinds labelled by their
    kind, others by their group), else every ``*.dat`` in the folder."""
    manifest = folder / "corpus.json"
    if not manifest.exists():
        return [Member(p.stem, "", p) for p in sorted(folder.glob("*.dat"))]
    members = []
    for e in json.loads(manifest.read_text())["members"]:
        label = e["label"] if e["group"] == "field" else e["group"] + (" (replicated)" if e["replicated"] else "")
        if (folder / e["file"]).exists():
            members.append(Member(e["name"], label, folder / e["file"]))
    return members


def figures(member: Member, repeat: int, with_trace_cmd: bool, engine: str | None) -> Figures:
    mine, theirs = measure(member.path, repeat, with_trace_cmd, engine)
    return Figures(member.name, member.label, int(mine[0].events or 0), median(mine, "wall_s"),
                   median(mine, "read_s"), median(mine, "rss_bytes"),
                   median(theirs, "wall_s") if theirs else None, mine[0].engine)


CORPUS_HEADER = (f"{'capture':<23}{'kind':<37}{'events':>12}{'wall s':>8}{'read s':>8}{'M/s wall':>9}"
                 f"{'M/s read':>9}{'tc/ours':>8}{'peak MB':>8}{'B/ev':>6}  targets")


def corpus_line(f: Figures) -> str:
    ratio = f"{f.ratio:7.1f}x" if f.ratio is not None else f"{'':8}"
    missed = f.misses()
    verdict = "all met" if not missed else "MISSED " + ", ".join(m.split()[0] for m in missed)
    return (f"{f.name:<23}{f.label[:36]:<37}{f.events:>12,}{f.wall_s:8.2f}{f.read_s:8.2f}"
            f"{f.rate_wall / 1e6:9.2f}{f.rate_read / 1e6:9.2f}{ratio}{f.rss_bytes / 2**20:8.0f}"
            f"{f.bytes_per_event:6.0f}  {verdict}")


def median_line(rows: list[Figures]) -> str:
    """The median of each figure over the corpus, in the columns of :func:`corpus_line`."""
    def med(values: list[float]) -> float:
        return statistics.median(values) if values else float("nan")
    ratios = [r.ratio for r in rows if r.ratio is not None]
    ratio = f"{med(ratios):7.1f}x" if ratios else f"{'':8}"
    return (f"{'median':<23}{f'{len(rows)} captures':<37}{med([r.events for r in rows]):>12,.0f}"
            f"{med([r.wall_s for r in rows]):8.2f}{med([r.read_s for r in rows]):8.2f}"
            f"{med([r.rate_wall for r in rows]) / 1e6:9.2f}{med([r.rate_read for r in rows]) / 1e6:9.2f}{ratio}"
            f"{med([r.rss_bytes for r in rows]) / 2**20:8.0f}{med([r.bytes_per_event for r in rows]):6.0f}")


def bench_corpus(folder: Path, repeat: int, with_trace_cmd: bool, engine: str | None,
                 only: str | None = None) -> list[Figures]:
    """One line per capture as it is measured, then the medians and the captures missing targets."""
    members = corpus_members(folder)
    if only:
        wanted = {n.strip() for n in only.split(",")}
        members = [m for m in members if m.name in wanted]
    if not members:
        raise SystemExit(f"{folder}: no captures (build one with scripts/bench/corpus.py)")
    print(f"\ncorpus {folder}: {len(members)} captures, median of {repeat}, engine {engine or 'default'}, "
          f"targets >= {TARGET_RATE / 1e6:.0f} M events/s (wall and read), >= {TARGET_RATIO:.0f}x trace-cmd "
          f"report, < {TARGET_BYTES:.0f} B/event peak")
    print(CORPUS_HEADER, flush=True)
    rows = []
    for m in members:
        rows.append(figures(m, repeat, with_trace_cmd, engine))
        print(corpus_line(rows[-1]), flush=True)
    print(median_line(rows))
    print(f"engine reported by the reader: {', '.join(sorted({r.engine for r in rows}))}")
    print_misses(rows)
    return rows


def print_misses(rows: list[Figures]) -> None:
    missed = [(r, r.misses()) for r in rows if r.misses()]
    print(f"\n{len(missed)} of {len(rows)} captures miss a target" + (":" if missed else ""))
    for r, what in missed:
        print(f"  {r.name}: {'; '.join(what)}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("capture", nargs="?", type=Path, help="trace.dat to read")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--text", type=Path, help="also time read_text on this text capture")
    ap.add_argument("--no-trace-cmd", action="store_true", help="skip trace-cmd report")
    ap.add_argument("--profile", action="store_true", help="cProfile one read of CAPTURE")
    ap.add_argument("--top", type=int, default=25, help="profile lines to print")
    ap.add_argument("--corpus", type=Path, help="time every capture of this corpus folder (corpus.py)")
    ap.add_argument("--only", help="with --corpus: only these captures (comma-separated names)")
    ap.add_argument("--engine", choices=("native", "numpy"), help="KVMTRACE_ENGINE for our reader")
    args = ap.parse_args(argv)
    if args.capture is None and args.text is None and args.corpus is None:
        ap.error("give a CAPTURE, --text FILE, --corpus DIR, or several")
    baseline_rss()
    if args.corpus is not None:
        bench_corpus(args.corpus, args.repeat, not args.no_trace_cmd, args.engine, args.only)
    if args.capture is not None:
        bench_tracedat(args.capture, args.repeat, not args.no_trace_cmd, args.engine)
    if args.text is not None:
        bench_text(args.text, args.repeat)
    if args.profile and args.capture is not None:
        profile(args.capture, args.top)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
