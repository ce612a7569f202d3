"""cyclictest's own output read as data: ``-v`` per-loop lines and ``T:`` summaries.

``-v`` prints one line per loop, ``thread: loop: latency`` (microseconds, the wakeup's lateness
against the loop's deadline as cyclictest measured it); the ``T:`` line sums each thread up
(``T: 0 ( 247) P:80 I:1000 C: 3459 Min: 427 Act: 7785 Avg: 2284 Max: 12149``). Other lines
(headers, histograms) are ignored and counted.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from kvmtrace.errors import CaptureError

VERBOSE_RE = re.compile(r"^\s*(\d+):\s*(\d+):\s*(-?\d+)\s*$")
SUMMARY_RE = re.compile(
    r"T:\s*(?P<thread>\d+)\s*\(\s*(?P<tid>\d+)\)\s*P:\s*(?P<prio>\d+)\s*I:\s*(?P<interval_us>\d+)\s*"
    r"C:\s*(?P<loops>\d+)\s*Min:\s*(?P<min_us>\d+)\s*Act:\s*(?P<act_us>\d+)\s*Avg:\s*(?P<avg_us>\d+)\s*"
    r"Max:\s*(?P<max_us>\d+)")
LOOP_SCHEMA = {"thread": pl.Int32(), "loop": pl.Int64(), "latency_us": pl.Int64()}
SUMMARY_SCHEMA = {k: pl.Int64() for k in SUMMARY_RE.groupindex}
MAX_LINE = 4096


@dataclass
class CyclictestOutput:
    """Per-loop latencies (``loops``: LOOP_SCHEMA) and summaries (``summary``: SUMMARY_SCHEMA)."""

    path: Path
    loops: pl.DataFrame
    summary: pl.DataFrame
    other_lines: int


def read_cyclictest(path: Path) -> CyclictestOutput:
    """Parse a file of cyclictest output; a file with neither loops nor summaries is an error."""
    try:
        with open(path, "rb") as fh:
            raw = fh.read(256 << 20)
    except OSError as exc:
        raise CaptureError(path, None, f"cannot read cyclictest output: {exc.strerror}") from None
    loops: list[tuple[int, int, int]] = []
    summaries: list[dict[str, int]] = []
    other = 0
    for line in raw.decode("utf-8", "replace").splitlines():  # one line per loop: output of a tool, not a trace
        m = VERBOSE_RE.match(line[:MAX_LINE])
        if m:
            loops.append((int(m[1]), int(m[2]), int(m[3])))
            continue
        s = SUMMARY_RE.search(line[:MAX_LINE])
        if s:
            summaries.append({k: int(v) for k, v in s.groupdict().items()})
        else:
            other += 1
    if not loops and not summaries:
        raise CaptureError(path, "line 1", "expected cyclictest output: -v lines 'thread: loop: latency' or a "
                                           "'T: ...' summary")
    loop_df = pl.DataFrame(loops, schema=LOOP_SCHEMA, orient="row")
    return CyclictestOutput(path, loop_df, pl.DataFrame(summaries, schema=SUMMARY_SCHEMA), other)
