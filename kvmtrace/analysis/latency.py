"""Interrupt latency analysis: every guest interrupt in a window, its stages, causes and verdicts.

``analyze(capture, window)`` assembles the models (vCPUs, interrupts, deadlines, CPU ownership,
stalls, real-time throttling, blame) into one per-interrupt table (columns: docs/stages.md) and a
summary document (docs/json-output.md): percentiles, a stage breakdown, a histogram, blame over
all interrupts (overall and per vCPU), and the worst interrupts, each with a plain-language
verdict in the spirit of ``rtla timerlat -a``.

Every interrupt has a *best known latency* (``best_latency_ns``): from the guest's deadline where
the host can know it (``latency_basis`` ``deadline``), else from the host interrupt
(``host_irq``: a lower bound; on the running path the host IRQ is the guest timer firing, so the
bound is tight), or, for a timer that expired while the vCPU was preempted, from the switch-out
(``preemption``: an upper bound). The worst list ranks by it, so no large delay is hidden.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import polars as pl

from kvmtrace.analysis.verdicts import STAGE_WORDS, dominant_stage, verdict
from kvmtrace.analysis.window import Window, resolve_window
from kvmtrace.capture import Capture
from kvmtrace.model.blame import SHARE_SCHEMA, Charges, blame_table, charges
from kvmtrace.model.blockers import cpu_segments, wait_shares
from kvmtrace.model.chunking import owned_rows
from kvmtrace.model.deadlines import DeadlineMaps, Deadlines, with_deadlines
from kvmtrace.model.interrupts import INTERRUPT_SCHEMA, STAGE_COLUMNS, STAGES, interrupts
from kvmtrace.model.requires import requires_events
from kvmtrace.model.stalls import stalls
from kvmtrace.model.throttling import Throttling, rt_throttling
from kvmtrace.model.vcpus import state_timeline, vcpu_threads
from kvmtrace.progress import step
from kvmtrace.units import fmt_ns

__all__ = ["STAGE_WORDS", "LatencyAnalysis", "Window", "analyze", "choose_window", "fmt_ns"]

ANALYZE_VERSION = 2
PERCENTILES = (0.5, 0.95, 0.99)
TABLE_SCHEMA: dict[str, pl.DataType] = {
    **INTERRUPT_SCHEMA, "best_latency_ns": pl.Int64(), "latency_basis": pl.String(),
    "cause_kind": pl.String(), "cause": pl.String(), "cause_pid": pl.Int32(), "cause_ns": pl.Int64(),
    "irq_no": pl.UInt32(), "irq_cpu": pl.Int32(),
}
HIDDEN = {"t_idx", "entry_idx", "w_idx", "switch_idx", "irq_no"}


def choose_window(cap: Capture, spec: str | None) -> Window:
    """The window ``spec`` names in this capture (analysis/window.py)."""
    return resolve_window(cap.path, spec, cap.tables.events, cap.phases)


@dataclass
class LatencyAnalysis:
    """Per-interrupt table, blame and summaries for one window of one capture."""

    capture: Capture
    window: Window
    worst_n: int = 5
    notes: list[str] = field(default_factory=list)
    # one time chunk of a larger capture (analysis/chunked.py): the capture's vCPU threads and clock
    # maps, and the chunk's own [start_ns, end_ns) (end None: open) that its interrupts must start in
    chunk: ChunkContext | None = None

    @cached_property
    def vcpus(self) -> pl.DataFrame:
        return self.chunk.vcpus if self.chunk is not None else vcpu_threads(self.capture.tables)

    @cached_property
    def states(self) -> pl.DataFrame:
        step("vCPU states")
        return state_timeline(self.capture.tables, self.vcpus["vcpu_tid"])

    @cached_property
    def stalls(self) -> pl.DataFrame:
        return stalls(self.capture.tables)

    @cached_property
    def throttling(self) -> Throttling:
        manifest = self.capture.manifest
        return rt_throttling(self.capture.tables, manifest.host if manifest else None)

    @cached_property
    def segments(self) -> pl.DataFrame:
        step("who held each CPU")
        return cpu_segments(self.capture.tables, self.stalls)

    @cached_property
    def deadlines(self) -> Deadlines:
        _ = self.table
        return self._deadlines

    @cached_property
    def table(self) -> pl.DataFrame:
        """One row per interrupt in the window (docs/stages.md), with deadlines, blockers and causes."""
        t = self.capture.tables
        if self.chunk is None:
            self.notes.extend(missing_event_notes(t.has))
        step("interrupts")
        df = interrupts(t, self.vcpus["vcpu_tid"], part=self.chunk is not None)
        step("deadlines")
        df, self._deadlines = with_deadlines(t, df, self.vcpus["vcpu_tid"], self.chunk.maps if self.chunk else None)
        self.found = df.select("t_idx", "t_ns")  # every interrupt the deadlines were sought for
        self.notes.extend(self._deadlines.notes)
        # a timer injected at a switch-in is an interrupt of the preemption only if its deadline fell
        # inside it (or, the deadline unknown, the save at the switch-out found it still ahead: ISTATUS
        # clear); otherwise it was already pending (docs/stages.md, preempted path)
        ahead = self._deadlines.held.select("t_idx", (~pl.col("istatus")).alias("ahead_at_save"))
        df = df.join(ahead, on="t_idx", how="left")
        known = pl.col("deadline_ns").is_not_null()
        fell_inside = pl.when(known).then(pl.col("deadline_ns") >= pl.col("preempted_at_ns"))
        df = df.filter((pl.col("path") != "preempted")
                       | fell_inside.otherwise(pl.col("ahead_at_save")).fill_null(False)).drop("ahead_at_save")
        df = df.filter(pl.col("t_ns").is_between(self.window.start_ns, self.window.end_ns))
        if self.chunk is not None:
            df = owned_rows(df, self.chunk.start_ns, self.chunk.end_ns, "t_ns")
        else:
            self.notes.extend(unknown_deadline_notes(df))
        # preempted path without a deadline: it expired during the preemption, so from the switch-out is
        # an upper bound (the host cannot tell how early in it)
        from_preemption = pl.col("latency_ns").is_null() & pl.col("preempted_at_ns").is_not_null()
        df = df.with_columns(
            pl.when(from_preemption).then(pl.col("entry_at_ns") - pl.col("preempted_at_ns"))
              .otherwise(pl.coalesce("latency_ns", "total_ns")).alias("best_latency_ns"),
            pl.when(pl.col("latency_ns").is_not_null()).then(pl.lit("deadline"))
              .when(from_preemption).then(pl.lit("preemption")).otherwise(pl.lit("host_irq"))
              .alias("latency_basis"),
            t.at(pl.col("t_idx"), "cpu").alias("irq_cpu"),
        ).sort("t_ns", "vcpu_tid").with_row_index("irq_no")
        step("blockers")
        df = self._with_blockers(df)
        step("blame")
        self._charges = charges(df, self.states, self.segments, self.throttling, self.notes)
        df = df.join(self._charges.top(), on="irq_no", how="left")
        return df.select(list(TABLE_SCHEMA)).cast(TABLE_SCHEMA).sort("t_ns")  # type: ignore[arg-type]

    @cached_property
    def shares(self) -> pl.DataFrame:
        """Every interrupt's latency charged to causes (docs/stages.md, "Blame")."""
        return self.charged.table()

    @cached_property
    def charged(self) -> Charges:
        """``shares`` with causes as categories (model/blame.py)."""
        _ = self.table
        return self._charges

    @cached_property
    def blame(self) -> pl.DataFrame:
        return blame_table(self.share_rows(), self.table)

    @cached_property
    def blame_by_vcpu(self) -> pl.DataFrame:
        return blame_table(self.share_rows(), self.table, by_vcpu=True)

    def share_rows(self) -> pl.LazyFrame:
        """``shares`` as a query in no particular order, its causes as categories or strings (a chunked analysis
        keeps them on disk as SHARE_SCHEMA: analysis/chunked.py)."""
        return self.charged.rows.lazy()

    def _with_blockers(self, df: pl.DataFrame) -> pl.DataFrame:
        waits = df.filter(pl.col("path") == "blocked").select(
            pl.col("t_idx").alias("key"), pl.col("wait_cpu").alias("cpu"), pl.col("w_idx").alias("start_idx"),
            pl.col("switch_idx").alias("end_idx"), pl.col("wakeup_ns").alias("start_ns"),
            pl.col("switch_in_ns").alias("end_ns"))
        top = (wait_shares(waits, self.segments).group_by("key", maintain_order=True).first()
               .select(pl.col("key").alias("t_idx"), pl.col("owner").alias("blocker_comm"),
                       pl.col("owner_pid").alias("blocker_pid"), pl.col("share_ns").alias("blocker_ns")))
        return df.drop("blocker_comm", "blocker_pid", "blocker_ns", strict=False).join(top, on="t_idx", how="left")

    def causes(self, irq_no: int) -> list[dict[str, Any]]:
        """One interrupt's causes, largest first (grouped by cause and CPU)."""
        rows = (self.share_rows().filter(pl.col("irq_no") == irq_no).collect().cast(SHARE_SCHEMA)  # type: ignore[arg-type]
                .sort("share_ns", descending=True, maintain_order=True))
        merged = (rows.group_by("cause_kind", "cause", "cause_pid", "cpu", maintain_order=True)
                  .agg(pl.col("state").first(), pl.col("share_ns").sum())  # worded by its largest piece's state
                  .sort(["share_ns", "cause"], descending=[True, False]))
        return merged.to_dicts()

    # ---- summaries ------------------------------------------------------------------------
    def percentiles(self, column: str, table: pl.DataFrame | None = None) -> dict[str, Any]:
        s = (self.table if table is None else table)[column].drop_nulls()
        if s.len() == 0:
            return {"count": 0}
        out: dict[str, Any] = {"count": s.len(), "min": int(s.min()), "mean": round(float(s.mean()), 1)}  # type: ignore[arg-type]
        for q in PERCENTILES:
            out[f"p{round(q * 100)}"] = int(s.quantile(q, interpolation="nearest"))  # type: ignore[arg-type]
        out["max"] = int(s.max())  # type: ignore[arg-type]
        return out

    def stage_summary(self, table: pl.DataFrame | None = None) -> dict[str, dict[str, Any]]:
        tab = self.table if table is None else table
        total = tab["total_ns"].sum()
        out = {}
        for stage, col in zip(STAGES, STAGE_COLUMNS, strict=True):
            s = tab[col].drop_nulls()
            if s.len() == 0:
                continue
            out[stage] = {
                "count": s.len(), "sum_ns": int(s.sum()),
                "share": round(float(s.sum()) / float(total), 4) if total and stage != "timer" else None,
                "p50": int(s.quantile(0.5, interpolation="nearest")),  # type: ignore[arg-type]
                "p99": int(s.quantile(0.99, interpolation="nearest")),  # type: ignore[arg-type]
                "max": int(s.max()),  # type: ignore[arg-type]
            }
        return out

    def histogram(self, column: str = "best_latency_ns") -> list[dict[str, Any]]:
        """Counts per power-of-two microsecond bucket (log counts are for the renderer)."""
        s = self.table[column].drop_nulls()
        if s.len() == 0:
            return []
        us = (s.cast(pl.Float64) / 1000).clip(lower_bound=1)
        bucket = us.log(2).floor().cast(pl.Int32)
        counts = bucket.value_counts().sort(bucket.name)
        return [{"from_us": 2 ** int(b), "to_us": 2 ** (int(b) + 1), "count": int(n)}
                for b, n in counts.iter_rows()]

    def worst(self) -> list[dict[str, Any]]:
        """The worst interrupts by best known latency, each with its causes and verdict."""
        order = self.table.select(pl.arg_sort_by(["best_latency_ns", "t_ns"], descending=[True, False],
                                                 nulls_last=True).head(self.worst_n)).to_series()
        out = []
        for r in self.table[order].to_dicts():  # sorting the key columns only, not the whole table
            causes = self.causes(r["irq_no"])
            out.append({**_clean(r), "dominant_stage": dominant_stage(r), "causes": causes[:5],
                        "verdict": verdict(r, causes, self.throttling)})
        return out

    def per_vcpu(self) -> list[dict[str, Any]]:
        """Latency and stage summaries of each vCPU thread (when there are several)."""
        out = []
        for tid in self.vcpus["vcpu_tid"].to_list():
            mine = self.table.filter(pl.col("vcpu_tid") == tid)
            out.append({"vcpu_tid": tid, "interrupts": mine.height,
                        "by_path": {str(k): int(v) for k, v in mine.group_by("path").len().sort("path").iter_rows()},
                        "best_latency_ns": self.percentiles("best_latency_ns", mine),
                        "latency_ns": self.percentiles("latency_ns", mine),
                        "stages": self.stage_summary(mine)})
        return out

    def document(self) -> dict[str, Any]:
        cap = self.capture
        tab = self.table
        per_vcpu = self.per_vcpu() if self.vcpus.height > 1 else []
        return {
            "kvmtrace_analyze": ANALYZE_VERSION,
            "capture": str(cap.path),
            "window": self.window.to_dict(),
            "vcpus": self.vcpus.to_dicts(),
            "interrupts": {
                "count": tab.height,
                "by_path": {str(k): int(v) for k, v in tab.group_by("path").len().sort("path").iter_rows()},
                "by_irq": {str(k): int(v) for k, v in tab.group_by("irq").len().sort("irq").iter_rows()},
                "by_basis": {str(k): int(v) for k, v in tab.group_by("latency_basis").len().sort("latency_basis")
                             .iter_rows()},
                "total_ns": self.percentiles("total_ns"),
                "latency_ns": self.percentiles("latency_ns"),
                "best_latency_ns": self.percentiles("best_latency_ns"),
                "timer_ns": self.percentiles("timer_ns"),
                "stages": self.stage_summary(),
                "histogram": self.histogram(),
                "worst": self.worst(),
            },
            "per_vcpu": per_vcpu,
            "blame": self.blame.head(20).to_dicts(),
            "blame_by_vcpu": self.blame_by_vcpu.to_dicts() if per_vcpu else [],
            "deadlines": self.deadlines.to_dict(),
            "stalls": self._stalls_in_window().to_dicts(),
            "rt_throttling": self.throttling.to_dict(),
            "cyclictest": cap.cyclictest.to_dicts(),
            "read": cap.tables.report.section(self.window.start_ns, self.window.end_ns),
            "notes": list(dict.fromkeys(self.notes)),
        }

    def _stalls_in_window(self) -> pl.DataFrame:
        w = self.window
        return self.stalls.filter(pl.col("end_ns") >= w.start_ns, pl.col("start_ns") <= w.end_ns).drop(
            "start_idx", "end_idx")


@dataclass(frozen=True)
class ChunkContext:
    """What one time chunk's analysis takes from the whole capture (analysis/chunked.py)."""

    vcpus: pl.DataFrame
    maps: DeadlineMaps
    start_ns: int
    end_ns: int | None  # None: open (the last chunk)


def missing_event_notes(has: Callable[[str], bool]) -> list[str]:
    """What the analysis cannot see for lack of events (``has``: does the capture hold this event)."""
    notes = []
    if not has("sched_switch") or not has("sched_wakeup"):
        notes.append("no sched_switch/sched_wakeup events: blocked-path interrupts and vCPU waits "
                     "cannot be reconstructed; record with -e sched:sched_switch -e sched:sched_wakeup")
    if not has("irq_handler_entry"):
        notes.append("no irq_handler_entry events: host interrupts unknown, running-path interrupts "
                     "cannot be found; record with -e irq:irq_handler_entry -e irq:irq_handler_exit")
    if not has("softirq_entry"):
        notes.append("no softirq events: softirq time is charged to the task it interrupted")
    return notes


def unknown_deadline_notes(table: pl.DataFrame) -> list[str]:
    """The timer interrupts of ``table`` whose latency is counted from the host interrupt, if any."""
    unknown = table.filter(pl.col("deadline_ns").is_null(), pl.col("kind") == "timer").height
    if not unknown:
        return []
    return [f"{unknown:,} timer interrupts have no known deadline: their latency is counted from "
            "the host interrupt (a lower bound; on the running path the guest programs its timer "
            "without exiting, and the host interrupt is that timer firing)"]


def _clean(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if k not in HIDDEN}


@requires_events("kvm:kvm_entry", "kvm:kvm_exit", analysis="kvmtrace analyze",
                 hint="no vCPU threads: record the kvm events on the KVM host")
def analyze(cap: Capture, window: str | None = None, worst_n: int = 5) -> LatencyAnalysis:
    """The latency analysis of one window (see ``choose_window``)."""
    return LatencyAnalysis(cap, choose_window(cap, window), worst_n)
