"""cyclictest's own output read as data: ``-v`` per-loop lines, ``T:`` summaries, ``-h`` histograms,
rt-tests ``--json`` files, and the breaktrace marker.

``-v`` prints one line per loop, ``thread: loop: latency`` (microseconds, the wakeup's lateness
against the loop's deadline as cyclictest measured it); the ``T:`` line sums each thread up
(``T: 0 ( 247) P:80 I:1000 C: 3459 Min: 427 Act: 7785 Avg: 2284 Max: 12149``). ``-h N`` prints a
histogram (``000012 000002``: microseconds, count per thread) and ``# Total:``, ``# Min/Avg/Max
Latencies:``, ``# Histogram Overflows:`` and ``# Thread 0: 01598 01949`` (the loops over N) lines,
which become a summary row (thread 0). ``--json=FILE`` writes the same per thread. ``-b N
--tracemark`` writes ``hit latency threshold (4789 > 400)`` into the trace when it breaks.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
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
HIST_RE = re.compile(r"^#\s*(Total|Min Latencies|Avg Latencies|Max Latencies|Histogram Overflows):\s*([\d\s]+)$")
OVERFLOW_AT_RE = re.compile(r"^#\s*Thread\s+(\d+):\s*([\d\s]*)$")
HIST_ROW_RE = re.compile(r"^\d{6}(\s+\d+)+\s*$")
BREAK_RE = re.compile(r"hit latency threshold \((\d+) > (\d+)\)")
HIST_KEYS = {"Total": "loops", "Min Latencies": "min_us", "Avg Latencies": "avg_us", "Max Latencies": "max_us",
             "Histogram Overflows": "overflows"}
MAX_LINE = 4096


@dataclass
class CyclictestOutput:
    """Per-loop latencies (``loops``: LOOP_SCHEMA) and summaries (``summary``: SUMMARY_SCHEMA)."""

    path: Path
    loops: pl.DataFrame
    summary: pl.DataFrame
    other_lines: int
    histogram: dict[str, int] = field(default_factory=dict)  # thread 0's -h summary: loops, min/avg/max_us, overflows
    histogram_range: int = 0  # -h N: microseconds covered by the histogram (its rows)
    overflow_loops: list[int] = field(default_factory=list)  # -h: the loops (of thread 0) over the histogram's range


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
    text = raw.decode("utf-8", "replace")
    if text.lstrip().startswith("{"):
        return _read_json(path, text)
    hist: dict[str, int] = {}
    overflow: list[int] = []
    rows = 0
    for line in text.splitlines():  # one line per loop: output of a tool, not a trace
        line = line[:MAX_LINE]
        m = VERBOSE_RE.match(line)
        if m:
            loops.append((int(m[1]), int(m[2]), int(m[3])))
            continue
        s = SUMMARY_RE.search(line)
        h = HIST_RE.match(line)
        o = OVERFLOW_AT_RE.match(line)
        if s:
            summaries.append({k: int(v) for k, v in s.groupdict().items()})
        elif h:
            hist[HIST_KEYS[h[1]]] = int(h[2].split()[0])
        elif o and o[1] == "0":
            overflow = [int(x) for x in o[2].split()]
        elif HIST_ROW_RE.match(line):
            rows += 1
        else:
            other += 1
    if not loops and not summaries and not hist:
        raise CaptureError(path, "line 1", "expected cyclictest output: -v lines 'thread: loop: latency' or a "
                                           "'T: ...' summary")
    loop_df = pl.DataFrame(loops, schema=LOOP_SCHEMA, orient="row")
    return CyclictestOutput(path, loop_df, pl.DataFrame(summaries, schema=SUMMARY_SCHEMA), other,
                            histogram=hist, histogram_range=rows, overflow_loops=overflow)


def _read_json(path: Path, text: str) -> CyclictestOutput:
    """rt-tests ``--json`` output: ``thread`` -> {``cycles``, ``min``, ``avg``, ``max``, ``histogram``...}."""
    try:
        doc = json.loads(text)
        threads = doc["thread"]
        rows = [{"thread": int(k), "tid": int(v.get("tid", 0)), "prio": int(doc.get("priority", 0)),
                 "interval_us": int(doc.get("interval", 0)), "loops": int(v["cycles"]), "min_us": int(v["min"]),
                 "act_us": 0, "avg_us": round(float(v["avg"])), "max_us": int(v["max"])}
                for k, v in threads.items()]
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise CaptureError(path, None, f"expected rt-tests --json output with thread -> cycles/min/avg/max: "
                                       f"{type(exc).__name__} {exc}") from None
    return CyclictestOutput(path, pl.DataFrame(schema=LOOP_SCHEMA), pl.DataFrame(rows, schema=SUMMARY_SCHEMA), 0)


def breaktrace(markers: pl.DataFrame) -> dict[str, int] | None:
    """cyclictest -b's marker in a trace: {"ts", "latency_us", "threshold_us"} of the first, or None."""
    for ts, text in zip(markers["ts"].to_list(), markers["text"].to_list(), strict=True):
        m = BREAK_RE.search(text or "")
        if m:
            return {"ts": int(ts), "latency_us": int(m[1]), "threshold_us": int(m[2])}
    return None
