"""``kvmtrace vcpus``: the vCPU threads of a window, the time each spent in each state, who held the
CPU while a vCPU was runnable, and RT throttling, as one report."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import polars as pl

from kvmtrace.analysis.window import Window
from kvmtrace.capture import Capture
from kvmtrace.ingest.tables import EventTables
from kvmtrace.model.blame import waiting_holders
from kvmtrace.model.blockers import cpu_segments
from kvmtrace.model.stalls import stalls
from kvmtrace.model.throttling import Throttling, rt_throttling
from kvmtrace.model.vcpus import state_summary, state_timeline, vcpu_threads


@dataclass
class VcpusReport:
    """The vCPU threads (``threads``), their state intervals clipped to the window (``timeline``,
    docs/stages.md "vCPU states"), time per state, and the CPU holders while they were runnable."""

    threads: pl.DataFrame
    timeline: pl.DataFrame
    holders: pl.DataFrame
    throttling: Throttling
    read: dict[str, Any]  # ReadReport.section of the window
    kind: str = "vcpus"

    @property
    def time_per_state(self) -> pl.DataFrame:
        return state_summary(self.timeline)

    def rows(self) -> pl.DataFrame:
        return self.timeline

    def to_json(self) -> dict[str, Any]:
        return {"kvmtrace_vcpus": 1, "vcpus": self.threads.to_dicts(), "time_per_state": self.time_per_state.to_dicts(),
                "waiting_holders": self.holders.to_dicts(), "rt_throttling": self.throttling.to_dict(),
                "read": self.read}


def timeline_in(tables: EventTables, threads: pl.DataFrame, window: Window) -> pl.DataFrame:
    """The vCPU threads' state intervals that overlap ``window``, clipped to it."""
    timeline = state_timeline(tables, threads["vcpu_tid"])
    return timeline.filter(pl.col("end_ns") >= window.start_ns, pl.col("start_ns") <= window.end_ns).with_columns(
        pl.col("start_ns").clip(lower_bound=window.start_ns), pl.col("end_ns").clip(upper_bound=window.end_ns))


def vcpus_report(cap: Capture, window: Window) -> VcpusReport:
    """The report of one window (analysis/window.py)."""
    tables = cap.tables
    threads = vcpu_threads(tables)
    timeline = timeline_in(tables, threads, window)
    throttling = rt_throttling(tables, cap.manifest.host if cap.manifest else None)
    holders = waiting_holders(timeline, cpu_segments(tables, stalls(tables)), throttling)
    return VcpusReport(threads, timeline, holders, throttling, tables.report.section(window.start_ns, window.end_ns))
