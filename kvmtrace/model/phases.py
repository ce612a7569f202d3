"""Phases of a capture, cut by marker events (``print`` / ``tracing_mark_write``).

Rules (documented in docs/capture.md):
- ``<ANY>_<NAME>_START`` / ``_BEGIN`` opens phase ``name`` (lower case, last word before the
  suffix: ``L2_CYCLICTEST_START`` -> ``cyclictest``); ``<ANY>_<NAME>_END`` / ``_STOP`` closes it.
- ``kvmtrace phase NAME begin|end`` (written by ``kvmtrace record``) and ``PHASE NAME START|END`` do the
  same; a user's own convention is a regular expression with the groups ``name`` and ``edge``
  (``--phase-pattern``, or ``phase_pattern`` in capture.json), tried first.
- ``boot``: from the first event to the first marker saying the guest is up (``*_SHELL``,
  ``*_BOOTED``, ``*_READY``, ``kvmtrace phase boot end``), when there is one.
- A phase opened and never closed ends at the last event of the capture (``end_marker`` null).
- cyclictest summary lines (``T: 0 (  86) P:80 I:1000 C:   9475 Min: ... Max: ...``) become a
  results table.
"""

from __future__ import annotations

import re

import polars as pl

from kvmtrace.ingest.cyclictest import SUMMARY_RE

_EDGE_RE = re.compile(r"^(?:\S*_)?(?P<name>[A-Za-z0-9]+)_(?P<edge>START|BEGIN|END|STOP)\b", re.IGNORECASE)
_KVMTRACE_RE = re.compile(r"^kvmtrace[: ]+phase\s+(?P<name>\S+)\s+(?P<edge>begin|start|end|stop)\b")
_PHASE_RE = re.compile(r"^PHASE\s+(?P<name>\S+)\s+(?P<edge>START|BEGIN|END|STOP)\b", re.IGNORECASE)
CONVENTIONS = (_KVMTRACE_RE, _PHASE_RE, _EDGE_RE)
_BOOTED_RE = re.compile(r"^(?:\S*_)?(?:SHELL|BOOTED|READY)\b")

PHASE_SCHEMA = {
    "name": pl.String(), "start_ns": pl.Int64(), "end_ns": pl.Int64(), "duration_ns": pl.Int64(),
    "start_marker": pl.String(), "end_marker": pl.String(),
}


def compile_pattern(pattern: str) -> re.Pattern[str]:
    """A user's marker pattern: a regular expression with the named groups ``name`` and ``edge`` (the
    edge's text is start, begin, end or stop); one clear error otherwise."""
    from kvmtrace.errors import CaptureError

    try:
        rx = re.compile(pattern, re.IGNORECASE)
    except re.error as exc:
        raise CaptureError(None, None, f"phase pattern {pattern!r}: not a regular expression ({exc})") from None
    if not {"name", "edge"} <= set(rx.groupindex):
        raise CaptureError(None, None, f"phase pattern {pattern!r}: expected the named groups (?P<name>...) and "
                                       "(?P<edge>...) (edge: start, begin, end or stop)")
    return rx


def _edge(text: str, user: re.Pattern[str] | None = None) -> tuple[str, bool] | None:
    for rx in (user, *CONVENTIONS):
        m = rx.match(text) if rx is not None else None
        if m and m["edge"].lower() in ("start", "begin", "end", "stop"):
            return m["name"].lower(), m["edge"].lower() in ("start", "begin")
    return None


def phases_from_markers(markers: pl.DataFrame, first_ts: int | None, last_ts: int | None,
                        pattern: re.Pattern[str] | None = None) -> pl.DataFrame:
    """One row per phase: name, start_ns, end_ns, duration_ns, start_marker, end_marker (``pattern``:
    a user's marker convention, tried first)."""
    rows: list[dict[str, object]] = []
    open_phases: dict[str, dict[str, object]] = {}
    boot_done = False
    for ts, text in zip(markers["ts"].to_list(), markers["text"].to_list(), strict=True):
        text = (text or "").strip()
        booted = _BOOTED_RE.match(text) or text.startswith("kvmtrace phase boot end")
        if not boot_done and first_ts is not None and booted:
            rows.append({"name": "boot", "start_ns": first_ts, "end_ns": ts, "start_marker": None,
                         "end_marker": text})
            boot_done = True
            continue
        edge = _edge(text, pattern)
        if edge is None:
            continue
        name, is_start = edge
        if is_start:
            open_phases[name] = {"name": name, "start_ns": ts, "end_ns": None, "start_marker": text, "end_marker": None}
        elif name in open_phases:
            row = open_phases.pop(name)
            row.update(end_ns=ts, end_marker=text)
            rows.append(row)
    for row in open_phases.values():
        row["end_ns"] = last_ts
        rows.append(row)
    df = pl.DataFrame(rows, schema={k: v for k, v in PHASE_SCHEMA.items() if k != "duration_ns"})
    return (df.with_columns((pl.col("end_ns") - pl.col("start_ns")).alias("duration_ns"))
              .select(list(PHASE_SCHEMA)).sort("start_ns"))


def cyclictest_results(markers: pl.DataFrame) -> pl.DataFrame:
    """cyclictest summary lines found in markers: one row per line (times in microseconds)."""
    rows = []
    for ts, text in zip(markers["ts"].to_list(), markers["text"].to_list(), strict=True):
        m = SUMMARY_RE.search(text or "")
        if m:
            rows.append({"ts": ts, **{k: int(v) for k, v in m.groupdict().items()}})
    schema = {"ts": pl.Int64(), **{k: pl.Int64() for k in SUMMARY_RE.groupindex}}
    return pl.DataFrame(rows, schema=schema)


def phase_of(ts: pl.Expr, phases: pl.DataFrame) -> pl.Expr:
    """An expression naming the phase each timestamp falls in (the innermost, latest-starting one)."""
    expr: pl.Expr = pl.lit(None, dtype=pl.String)
    for row in phases.sort("start_ns").iter_rows(named=True):
        inside = (ts >= row["start_ns"]) & (ts <= row["end_ns"])
        expr = pl.when(inside).then(pl.lit(row["name"])).otherwise(expr)
    return expr
