"""``kvmtrace exits``: the exit profile of a window as one report (per class, per vCPU thread, per phase)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import polars as pl

from kvmtrace.ingest.tables import EventTables
from kvmtrace.model.exits import exit_table, summarise


@dataclass
class ExitsReport:
    """``kvmtrace exits``: the per-exit table and its summaries."""

    capture: str
    arch: str
    window: str | None
    span_ns: int
    exits: pl.DataFrame
    by_class: pl.DataFrame
    by_thread: pl.DataFrame
    by_phase: pl.DataFrame
    notes: list[str]
    read: dict[str, Any]  # ReadReport.section of the window
    kind: str = "exits"

    def rows(self) -> pl.DataFrame:
        """One row per exit (docs/stages.md "Exits")."""
        return self.exits

    def to_json(self) -> dict[str, Any]:
        return {"kvmtrace_exits": 1, "capture": self.capture, "arch": self.arch, "window": self.window,
                "span_ns": self.span_ns, "exits": self.exits.height,
                "by_class": self.by_class.to_dicts(), "by_thread": self.by_thread.to_dicts(),
                "by_phase": self.by_phase.to_dicts(), "read": self.read, "notes": self.notes}


def exits_report(t: EventTables, phases: pl.DataFrame, capture: str,
                 window: tuple[str, int, int] | None = None) -> ExitsReport:
    """Exits of the capture (or of a window: name, start_ns, end_ns): per class, per vCPU thread and class,
    per phase and class."""
    table = exit_table(t, phases)
    if window is None:
        ts = t.events["ts"]
        window = ("all", int(ts.min()), int(ts.max()))  # type: ignore[arg-type]
    name, start, end = window
    ex = table.exits.filter(pl.col("t_ns").is_between(start, end))
    span = end - start
    durations = phases.select(pl.col("name").alias("phase"), pl.col("duration_ns"))
    by_phase = (summarise(ex.with_columns(pl.col("phase").fill_null("(none)")), ["phase", "exit_class"], None)
                .join(durations, on="phase", how="left")
                .with_columns((pl.col("count") / (pl.col("duration_ns") / 1e9)).alias("rate_per_s"))
                .drop("duration_ns"))
    return ExitsReport(capture, table.arch, name, span, ex, summarise(ex, ["exit_class"], span),
                       summarise(ex, ["vcpu_tid", "exit_class"], span), by_phase, table.notes,
                       t.report.section(start, end))
