"""The part of a capture an analysis looks at: one resolver for every command's ``--window``.

``--window`` takes a phase name (docs/capture.md: phases come from markers), ``all``, or
``START:END`` in seconds of trace time (either side may be left out). Without it: the
``cyclictest`` phase when the capture has one, else everything. A bad value, or a window that
holds no event, is one clear line (exit code 2).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from kvmtrace.errors import CaptureError

DEFAULT_PHASE = "cyclictest"


@dataclass(frozen=True)
class Window:
    """A time range of one capture, and what it was called."""

    name: str
    start_ns: int
    end_ns: int

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "start_ns": self.start_ns, "end_ns": self.end_ns,
                "duration_ns": self.end_ns - self.start_ns}

    def holds(self, ts: pl.Expr) -> pl.Expr:
        return ts.is_between(self.start_ns, self.end_ns)


def resolve_window(path: str | Path | None, spec: str | None, events: pl.DataFrame, phases: pl.DataFrame) -> Window:
    """The window ``spec`` names in a capture (module docstring)."""
    first, last = (int(events["ts"][0]), int(events["ts"][-1])) if events.height else (0, 0)
    names = phases["name"].to_list()
    if spec is None:
        spec = DEFAULT_PHASE if DEFAULT_PHASE in names else "all"
    if spec == "all":
        return Window("all", first, last)
    if ":" in spec:
        return _range(path, spec, first, last)
    rows = phases.filter(pl.col("name") == spec)
    if rows.height == 0:
        raise CaptureError(path, None, f"--window {spec!r}: no such phase (phases: {', '.join(names) or 'none'}; "
                                       "or 'all', or START:END seconds)")
    return Window(spec, int(rows["start_ns"][0]), int(rows["end_ns"][0]))


def _seconds_range(spec: str) -> tuple[int | None, int | None]:
    """``START:END`` in seconds as ns, None for a side left out; ValueError or OverflowError otherwise."""
    lo, _, hi = spec.partition(":")
    return (round(float(lo) * 1e9) if lo.strip() else None, round(float(hi) * 1e9) if hi.strip() else None)


def _range(path: str | Path | None, spec: str, first: int, last: int) -> Window:
    try:
        lo, hi = _seconds_range(spec)
    except (ValueError, OverflowError):
        raise CaptureError(path, None, f"--window {spec!r}: expected a phase name, 'all' or START:END "
                                       "in seconds") from None
    start = first if lo is None else lo
    end = last if hi is None else hi
    if end <= start:
        raise CaptureError(path, None, f"--window {spec!r}: the end is not after the start")
    if end < first or start > last:
        raise CaptureError(path, None, f"--window {spec!r}: the capture spans {first / 1e9:.6f} .. "
                                       f"{last / 1e9:.6f} s: no event in this window")
    return Window(spec, start, end)


def explicit_range(spec: str | None) -> tuple[int | None, int | None] | None:
    """``START:END`` seconds as (start_ns, end_ns), None for an open side; None when ``spec`` is not
    such a range (a phase, ``all``, nothing) or not a valid one (the resolver then says why)."""
    if spec is None or ":" not in spec:
        return None
    try:
        start, end = _seconds_range(spec)
    except (ValueError, OverflowError):
        return None
    return None if start is not None and end is not None and end <= start else (start, end)
