"""Lost events, recorded for real on this machine: page-header missed counts against the kernel's overrun.

One recording (module fixture) in a private tracefs instance with a tiny per-CPU buffer
(``buffer_size_kb`` 4: two 4 KiB sub-buffers plus the reader page) while a fork/exec loop
produces sched, irq and timer events for about a second; tracing is stopped, each CPU's
``per_cpu/cpuN/stats`` is read, and ``trace-cmd extract -k -B <instance>`` writes the trace.dat
(it reads ``trace_pipe_raw``, so page headers carry the kernel's missed-events flags/counts).

How the numbers relate (established by experiment on 6.18 and by the ring buffer's design):

* The writer, in overwrite mode, overruns the oldest sub-buffer and adds that sub-buffer's
  entries to the CPU's ``overrun`` counter (the ``overrun:`` line of the stats file).
* The reader learns about losses only when it swaps in a new reader page: it then takes
  ``lost = overrun - last_overrun`` and attaches it to the page it hands out, setting the
  MISSED_EVENTS bit of the commit word, and, when at least 8 bytes (a long) remain after the
  data, stores the count there and sets MISSED_STORED too.
* Nobody reads the instance while tracing runs, so the first page extract reads per CPU
  carries the whole ``overrun`` and no later page carries anything. Hence, per CPU: the
  stored counts sum to exactly ``overrun``, or (no room for the count) exactly one page is
  flagged without a count and nothing is stored. Events dropped without overwriting
  (``dropped events``, ``commit overrun``: both 0 in overwrite mode unless the writer laps
  itself) never reach a page header; they are not part of this relation.
* What survived is ``entries``: the events read back per CPU equal it exactly.
* ``trace-cmd report`` (3.1.6) prints ``CPU:N [n EVENTS DROPPED]`` (``[EVENTS DROPPED]`` when
  no count is stored) once per flagged page, not the kernel's ``[LOST n EVENTS]`` wording.

Why ``-k``: without it, ``trace-cmd extract -B NAME`` (3.1.6) resets the *top-level* instance as
``trace-cmd reset`` would (writes 0 to ``events/enable`` and every event filter, ``nop`` to
``current_tracer``, truncates ``trace``, toggles ``tracing_on``) and removes the instance. With
``-k`` it writes nothing to tracefs, but it still drains the top-level ``trace_pipe_raw``, so the
test skips when the top-level buffer holds unread events rather than consume someone's data.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import pytest

from kvmtrace.ingest.tables import EventTables
from kvmtrace.ingest.tracedat.reader import read_tracedat

TRACEFS = Path("/sys/kernel/tracing")
EVENT_SYSTEMS = ("sched", "irq", "timer")
BUFFER_KB = "4"
LOAD_SECONDS = 1.0
TOP_LEVEL_FILES = ("tracing_on", "current_tracer", "set_event", "trace_clock", "buffer_size_kb")
INSTANCE_PREFIX = "kvmtrace-"
DROPPED = re.compile(r"CPU:(\d+) \[(?:(\d+) EVENTS DROPPED|EVENTS DROPPED|LOST (\d+) EVENTS|LOST EVENTS)\]")


def _usable() -> bool:
    return os.geteuid() == 0 and (TRACEFS / "instances").is_dir() and shutil.which("trace-cmd") is not None


pytestmark = [
    pytest.mark.tracefs,
    pytest.mark.skipif(not _usable(), reason="needs root, tracefs at /sys/kernel/tracing and trace-cmd"),
]


@dataclass
class Recording:
    """One lossy recording and the kernel's figures for it."""

    instance: str
    path: Path
    stats: dict[int, dict[str, int]]  # cpu -> stats file fields (numbers only)
    top_before: dict[str, str]
    top_after: dict[str, str]
    leftover_instances: list[str]  # kvmtrace-* instances present after that were not before


def top_level_state() -> dict[str, str]:
    """The top-level files this test promises not to change."""
    return {name: (TRACEFS / name).read_text() for name in TOP_LEVEL_FILES}


def kvmtrace_instances() -> set[str]:
    return {p.name for p in (TRACEFS / "instances").iterdir() if p.name.startswith(INSTANCE_PREFIX)}


def read_stats(root: Path) -> dict[int, dict[str, int]]:
    """``per_cpu/cpuN/stats`` of an instance (or the top level): cpu -> integer fields."""
    out: dict[int, dict[str, int]] = {}
    for cpu_dir in sorted((root / "per_cpu").glob("cpu[0-9]*")):
        fields: dict[str, int] = {}
        for line in (cpu_dir / "stats").read_text().splitlines():
            key, _, value = line.partition(":")
            if value.strip().isdigit():
                fields[key.strip()] = int(value)
        out[int(cpu_dir.name[3:])] = fields
    return out


@contextmanager
def private_instance(name: str) -> Iterator[Path]:
    """Create ``instances/NAME``; always disable it and remove it afterwards."""
    root = TRACEFS / "instances" / name
    root.mkdir()
    try:
        yield root
    finally:
        if root.exists():
            (root / "events" / "enable").write_text("0")
            (root / "tracing_on").write_text("0")
            root.rmdir()


def generate_load(seconds: float) -> None:
    """A fork/exec loop: many short-lived tasks, so sched/irq/timer events at a high rate."""
    proc = subprocess.Popen(["sh", "-c", "while :; do /bin/true; done"])
    try:
        time.sleep(seconds)
    finally:
        proc.kill()
        proc.wait()


def record_lossy(root: Path, out: Path) -> dict[int, dict[str, int]]:
    """Trace into a tiny buffer under load, stop, read the stats, extract to ``out``."""
    (root / "tracing_on").write_text("0")
    (root / "buffer_size_kb").write_text(BUFFER_KB)
    for system in EVENT_SYSTEMS:
        (root / "events" / system / "enable").write_text("1")
    (root / "tracing_on").write_text("1")
    generate_load(LOAD_SECONDS)
    (root / "tracing_on").write_text("0")
    stats = read_stats(root)
    unread_top = sum(s.get("entries", 0) for s in read_stats(TRACEFS).values())
    if unread_top:
        pytest.skip(f"top-level buffer holds {unread_top} unread events; trace-cmd extract would consume them")
    subprocess.run(["trace-cmd", "extract", "-k", "-B", root.name, "-o", str(out)],
                   check=True, capture_output=True, cwd=out.parent)
    return stats


@pytest.fixture(scope="module")
def recording(tmp_path_factory: pytest.TempPathFactory) -> Recording:
    name = f"{INSTANCE_PREFIX}losttest-{os.getpid()}"
    out = tmp_path_factory.mktemp("lost") / "lost.dat"
    before, instances_before = top_level_state(), kvmtrace_instances()
    with private_instance(name) as root:
        stats = record_lossy(root, out)
    leftover = sorted(kvmtrace_instances() - instances_before)
    return Recording(name, out, stats, before, top_level_state(), leftover)


@pytest.fixture(scope="module")
def tables(recording: Recording) -> EventTables:
    return read_tracedat(recording.path)


def report_dropped(path: Path) -> tuple[dict[int, int], dict[int, int]]:
    """From ``trace-cmd report``: cpu -> summed dropped counts, cpu -> pages flagged without one."""
    text = subprocess.run(["trace-cmd", "report", "-i", str(path)], check=True,
                          capture_output=True, text=True).stdout
    counted: dict[int, int] = {}
    uncounted: dict[int, int] = {}
    for m in DROPPED.finditer(text):
        cpu, n = int(m.group(1)), m.group(2) or m.group(3)
        if n is None:
            uncounted[cpu] = uncounted.get(cpu, 0) + 1
        else:
            counted[cpu] = counted.get(cpu, 0) + int(n)
    return counted, uncounted


def test_recording_lost_events(recording: Recording) -> None:
    """The tiny buffer really overflowed (otherwise the other tests prove nothing)."""
    assert sum(s["overrun"] for s in recording.stats.values()) > 0, recording.stats


def test_page_missed_counts_equal_overrun(recording: Recording, tables: EventTables) -> None:
    lost = tables.report.lost_events.get(recording.instance, {})
    unknown = tables.report.lost_unknown_pages.get(recording.instance, {})
    for cpu, st in recording.stats.items():
        stored, flagged = lost.get(cpu, 0), unknown.get(cpu, 0)
        if flagged:  # the first page read had no room for the count: flag only
            assert (stored, flagged) == (0, 1), (cpu, st, stored, flagged)
            assert st["overrun"] > 0, (cpu, st)
        else:
            assert stored == st["overrun"], (cpu, st, stored)


def test_surviving_events_equal_entries(recording: Recording, tables: EventTables) -> None:
    per_cpu = dict(tables.events.group_by("cpu").len().iter_rows())
    for cpu, st in recording.stats.items():
        assert per_cpu.get(cpu, 0) == st["entries"], (cpu, st)
    assert set(tables.events["buffer"].unique().to_list()) <= {recording.instance}


def test_trace_cmd_report_agrees(recording: Recording, tables: EventTables) -> None:
    counted, uncounted = report_dropped(recording.path)
    lost = tables.report.lost_events.get(recording.instance, {})
    unknown = tables.report.lost_unknown_pages.get(recording.instance, {})
    assert counted == {c: n for c, n in lost.items() if n}
    assert uncounted == {c: n for c, n in unknown.items() if n}


def test_cpustat_overruns_keyed_by_buffer(recording: Recording, tables: EventTables) -> None:
    """kernel_overruns comes from the CPUSTAT option, which trace-cmd writes per buffer."""
    expected = {cpu: st["overrun"] for cpu, st in recording.stats.items()}
    got = dict(tables.report.kernel_overruns)
    assert got.get(recording.instance) == expected, got


def test_top_level_state_untouched(recording: Recording) -> None:
    assert recording.top_after == recording.top_before
    assert recording.leftover_instances == []


EVENT_CPU_TIME = re.compile(r"\[(\d+)\]\s+(?:\S+\s+)?(\d+)\.(\d{6}):")


def next_events_after_drops(path: Path) -> list[tuple[int, int]]:
    """From ``trace-cmd report``: for each DROPPED line, (cpu, the µs time of that CPU's next event)."""
    text = subprocess.run(["trace-cmd", "report", "-i", str(path)], check=True,
                          capture_output=True, text=True).stdout
    waiting: set[int] = set()
    found = []
    for line in text.splitlines():
        dropped = DROPPED.search(line)
        if dropped:
            waiting.add(int(dropped.group(1)))
            continue
        event = EVENT_CPU_TIME.search(line)
        if event and int(event.group(1)) in waiting:
            cpu = int(event.group(1))
            waiting.discard(cpu)
            found.append((cpu, int(event.group(2)) * 1_000_000 + int(event.group(3))))
    return found


def test_losses_are_timed_by_their_page(recording: Recording, tables: EventTables) -> None:
    """Each loss carries its page's start time: our first event of that CPU at or after it is the event
    trace-cmd report prints right after its DROPPED line, and the CPU's previous event comes before it."""
    losses = tables.report.losses
    assert len(losses) == len(next_events_after_drops(recording.path)) > 0
    ours = []
    for loss in losses:
        assert loss.buffer == recording.instance and loss.ts_ns is not None
        cpu_ts = tables.events.filter(pl.col("cpu") == loss.cpu)["ts"]
        after = cpu_ts.filter(cpu_ts >= loss.ts_ns)
        before = cpu_ts.filter(cpu_ts < loss.ts_ns)
        assert after.len() > 0
        assert before.len() == 0 or before.max() <= loss.ts_ns  # type: ignore[operator]
        ours.append((loss.cpu, (int(after.min()) + 500) // 1000))  # type: ignore[arg-type]  # report rounds to µs
    assert sorted(ours) == sorted(next_events_after_drops(recording.path))
    total = sum(x.count or 0 for x in losses)
    assert total == tables.report.total_lost()


def test_a_window_keeps_the_losses_timed_inside(recording: Recording, tables: EventTables) -> None:
    timed = sorted(x.ts_ns for x in tables.report.losses if x.ts_ns is not None)
    middle = timed[len(timed) // 2]
    cut = read_tracedat(recording.path, window=(middle, None))
    assert sorted(x.ts_ns for x in cut.report.losses if x.ts_ns is not None) == [t for t in timed if t >= middle]
    assert cut.report.total_lost() == sum(x.count or 0 for x in cut.report.losses)
