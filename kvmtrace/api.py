"""kvmtrace from Python (notebooks, scripts): ``cap = kvmtrace.open(path)``, then DataFrames.

Every method returns a polars DataFrame with the columns documented in docs/tables.md and
docs/stages.md, the same numbers the command line prints (tests/test_api.py). Analyses are computed
on first use and cached per window::

    import kvmtrace
    cap = kvmtrace.open("captures/board-vhe-guest-pair")
    irqs = cap.interrupts()                 # one row per guest interrupt (kvmtrace analyze / irqs)
    worst = irqs.sort("best_latency_ns", descending=True).head(5)
    cap.blame()                             # who caused the latency, over all interrupts
    cap.exits(window="all"), cap.faults(), cap.vcpus(), cap.events("sched_switch")
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from kvmtrace.capture import Capture, open_capture


@dataclass
class OpenCapture:
    """An opened capture (``kvmtrace.open``): its tables and analyses as DataFrames."""

    capture: Capture
    _latency: dict[tuple[str | None, int], Any] = field(default_factory=dict, repr=False)

    @property
    def path(self) -> Path:
        return self.capture.path

    def events(self, name: str | None = None) -> pl.DataFrame:
        """The common event table (docs/tables.md), or one event's typed table."""
        return self.capture.tables.events if name is None else self.capture.tables.table(name)

    def phases(self) -> pl.DataFrame:
        """Phases from the markers: name, start_ns, end_ns, duration_ns, start_marker, end_marker."""
        return self.capture.phases

    def markers(self) -> pl.DataFrame:
        return self.capture.markers

    def analysis(self, window: str | None = None, worst: int = 5) -> Any:
        """The latency analysis of a window (kvmtrace.analysis.latency.LatencyAnalysis), cached."""
        from kvmtrace.analysis.latency import analyze

        key = (window, worst)
        if key not in self._latency:
            self._latency[key] = analyze(self.capture, window, worst)
        return self._latency[key]

    def interrupts(self, window: str | None = None) -> pl.DataFrame:
        """One row per guest interrupt in the window (``kvmtrace irqs``; docs/stages.md)."""
        return self.analysis(window).table

    def blame(self, window: str | None = None, by_vcpu: bool = False) -> pl.DataFrame:
        """Causes of latency over all interrupts (``analyze --blame-out``)."""
        a = self.analysis(window)
        return a.blame_by_vcpu if by_vcpu else a.blame

    def vcpus(self, window: str | None = "all") -> pl.DataFrame:
        """The vCPU threads' state timeline (``kvmtrace vcpus --out``)."""
        from kvmtrace.analysis.vcpus import timeline_in
        from kvmtrace.analysis.window import resolve_window
        from kvmtrace.model.vcpus import vcpu_threads

        t = self.capture.tables
        w = resolve_window(self.path, window, t.events, self.capture.phases)
        return timeline_in(t, vcpu_threads(t), w)

    def exits(self, window: str | None = "all") -> pl.DataFrame:
        """One row per kvm_exit in the window (``kvmtrace exits --out``)."""
        from kvmtrace.analysis.exits import exits_report
        from kvmtrace.analysis.window import resolve_window

        w = resolve_window(self.path, window, self.capture.tables.events, self.capture.phases)
        return exits_report(self.capture.tables, self.capture.phases, str(self.path),
                            (w.name, w.start_ns, w.end_ns)).exits

    def faults(self, window: str | None = None) -> pl.DataFrame:
        """One row per stage-2 fault (``kvmtrace faults --out``); the whole capture by default."""
        from kvmtrace.analysis.faults import faults_report
        from kvmtrace.analysis.window import resolve_window

        cap = self.capture
        w = resolve_window(self.path, window, cap.tables.events, cap.phases) if window is not None else None
        memory = cap.manifest.guest_memory if cap.manifest else None
        return faults_report(cap.tables, cap.phases, str(self.path), (w.name, w.start_ns, w.end_ns) if w else None,
                             memory).faults

    def wakeups(self, window: str | None = None) -> pl.DataFrame:
        """A host's own real-time threads: one row per timer wakeup (``analyze`` without a guest)."""
        from kvmtrace.analysis.native import native_analysis
        from kvmtrace.analysis.window import resolve_window

        cap = self.capture
        w = resolve_window(self.path, window, cap.tables.events, cap.phases)
        return native_analysis(cap, w.start_ns, w.end_ns).table


def open(path: str | Path, use_cache: bool = True, phase_pattern: str | None = None) -> OpenCapture:
    """Open a capture (trace.dat, text, or capture directory) for analysis from Python;
    ``phase_pattern`` is the CLI's ``--phase-pattern`` (a regex with groups ``name`` and ``edge``)."""
    return OpenCapture(open_capture(path, use_cache=use_cache, phase_pattern=phase_pattern))
