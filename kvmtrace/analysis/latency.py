"""Interrupt latency analysis: every guest interrupt in a window, its stages, blockers and verdicts.

``analyze(capture, window)`` assembles the models (vCPUs, interrupts, deadlines, CPU ownership)
into one per-interrupt table (columns: docs/stages.md) and a summary document (docs/json-output.md)
with percentiles, a stage breakdown, a histogram and the worst interrupts, each with a
plain-language verdict in the spirit of ``rtla timerlat -a``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import polars as pl

from kvmtrace.capture import Capture
from kvmtrace.errors import CaptureError, MissingEventsError
from kvmtrace.model.blockers import cpu_segments, owners_during, wait_shares
from kvmtrace.model.deadlines import with_deadlines
from kvmtrace.model.interrupts import INTERRUPT_SCHEMA, STAGE_COLUMNS, STAGES, interrupts
from kvmtrace.model.vcpus import state_timeline, vcpu_threads

ANALYZE_VERSION = 1
PERCENTILES = (0.5, 0.95, 0.99)
STAGE_WORDS = {
    "timer": "from the guest's deadline to the host interrupt",
    "host_irq": "in the host interrupt before the vCPU was woken",
    "vcpu_wait": "waiting for a CPU",
    "inject": "from switch-in to the injection (vCPU load, timer restore)",
    "exit": "from the injection to the guest exit",
    "entry": "from the injection to guest entry",
}


@dataclass
class Window:
    """The part of the capture analysed: a phase, explicit times, or all of it."""

    name: str
    start_ns: int
    end_ns: int

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "start_ns": self.start_ns, "end_ns": self.end_ns,
                "duration_ns": self.end_ns - self.start_ns}


def choose_window(cap: Capture, spec: str | None) -> Window:
    """``None``: the cyclictest phase when markers show one, else everything; ``all``; a phase name;
    or ``START:END`` in seconds of trace time."""
    ev = cap.tables.events
    first, last = (int(ev["ts"][0]), int(ev["ts"][-1])) if ev.height else (0, 0)
    if spec is None:
        names = cap.phases["name"].to_list()
        spec = "cyclictest" if "cyclictest" in names else "all"
    if spec == "all":
        return Window("all", first, last)
    if ":" in spec:
        lo, _, hi = spec.partition(":")
        try:
            start = int(float(lo) * 1e9) if lo else first
            end = int(float(hi) * 1e9) if hi else last
        except ValueError:
            raise CaptureError(None, None,
                               f"--window {spec!r}: expected a phase name, 'all' or START:END seconds") from None
        return Window(spec, start, end)
    start, end = cap.window(spec)
    return Window(spec, start, end)


@dataclass
class LatencyAnalysis:
    """Per-interrupt table and summaries for one window of one capture."""

    capture: Capture
    window: Window
    worst_n: int = 5
    notes: list[str] = field(default_factory=list)

    @cached_property
    def vcpus(self) -> pl.DataFrame:
        return vcpu_threads(self.capture.tables)

    @cached_property
    def states(self) -> pl.DataFrame:
        return state_timeline(self.capture.tables, self.vcpus["vcpu_tid"])

    @cached_property
    def segments(self) -> pl.DataFrame:
        return cpu_segments(self.capture.tables)

    @cached_property
    def table(self) -> pl.DataFrame:
        """One row per interrupt in the window (docs/stages.md), with blockers and deadlines."""
        t = self.capture.tables
        self._note_missing()
        df = interrupts(t, self.vcpus["vcpu_tid"])
        df, deadline_note = with_deadlines(t, df)
        self.notes.append(deadline_note)
        df = df.filter(pl.col("t_ns").is_between(self.window.start_ns, self.window.end_ns))
        unknown = df.filter(pl.col("deadline_ns").is_null(), pl.col("kind") == "timer").height
        if unknown:
            self.notes.append(f"{unknown:,} timer interrupts have no known deadline (timer_ns and latency_ns are "
                              "null): on the running and host paths the guest programs its timer without exiting, "
                              "so the host never sees the deadline")
        df = self._with_blockers(df)
        return df.select(list(INTERRUPT_SCHEMA)).cast(INTERRUPT_SCHEMA).sort("t_ns")  # type: ignore[arg-type]

    def _note_missing(self) -> None:
        t = self.capture.tables
        if not t.has("sched_switch") or not t.has("sched_wakeup"):
            self.notes.append("no sched_switch/sched_wakeup events: blocked-path interrupts and vCPU waits "
                              "cannot be reconstructed; record with -e sched:sched_switch -e sched:sched_wakeup")
        if not t.has("irq_handler_entry"):
            self.notes.append("no irq_handler_entry events: host interrupts unknown, running-path interrupts "
                              "cannot be found; record with -e irq:irq_handler_entry -e irq:irq_handler_exit")
        if not t.has("softirq_entry"):
            self.notes.append("no softirq events: softirq time is charged to the task it interrupted")

    def _with_blockers(self, df: pl.DataFrame) -> pl.DataFrame:
        waits = df.filter(pl.col("path") == "blocked").select(
            pl.col("t_idx").alias("key"), pl.col("wait_cpu").alias("cpu"), pl.col("w_idx").alias("start_idx"),
            pl.col("switch_idx").alias("end_idx"), pl.col("wakeup_ns").alias("start_ns"),
            pl.col("switch_in_ns").alias("end_ns"))
        top = (wait_shares(waits, self.segments).group_by("key", maintain_order=True).first()
               .select(pl.col("key").alias("t_idx"), pl.col("owner").alias("blocker_comm"),
                       pl.col("owner_pid").alias("blocker_pid"), pl.col("share_ns").alias("blocker_ns")))
        return df.join(top, on="t_idx", how="left")

    def stage_owners(self, row: dict[str, Any], stage: str) -> list[dict[str, Any]]:
        """Who held the vCPU's CPU during one stage of an interrupt (idle and the vCPU itself included)."""
        span = stage_span(row, stage)
        cpu = row["wait_cpu"] if stage == "vcpu_wait" else row["cpu"]
        if span is None or cpu is None:
            return []
        owners = owners_during(self.segments, cpu, *span)
        return [{"owner": r["owner"], "pid": r["owner_pid"], "ns": r["share_ns"], "cpu": cpu,
                 "is_vcpu": r["owner_pid"] == row["vcpu_tid"]} for r in owners.head(5).iter_rows(named=True)]

    # ---- summaries ------------------------------------------------------------------------
    def percentiles(self, column: str) -> dict[str, Any]:
        s = self.table[column].drop_nulls()
        if s.len() == 0:
            return {"count": 0}
        out: dict[str, Any] = {"count": s.len(), "min": int(s.min()), "mean": round(float(s.mean()), 1)}  # type: ignore[arg-type]
        for q in PERCENTILES:
            out[f"p{round(q * 100)}"] = int(s.quantile(q, interpolation="nearest"))  # type: ignore[arg-type]
        out["max"] = int(s.max())  # type: ignore[arg-type]
        return out

    def stage_summary(self) -> dict[str, dict[str, Any]]:
        total = self.table["total_ns"].sum()
        out = {}
        for stage, col in zip(STAGES, STAGE_COLUMNS, strict=True):
            s = self.table[col].drop_nulls()
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

    def histogram(self, column: str = "total_ns") -> list[dict[str, Any]]:
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
        key = "latency_ns" if self.table["latency_ns"].null_count() < self.table.height else "total_ns"
        rows = self.table.sort(key, descending=True, nulls_last=True).head(self.worst_n).to_dicts()
        out = []
        for r in rows:
            stage = dominant_stage(r)
            owners = self.stage_owners(r, stage) if stage else []
            out.append({**_clean(r), "dominant_stage": stage, "stage_owners": owners,
                        "verdict": verdict(r, owners)})
        return out

    def document(self) -> dict[str, Any]:
        cap = self.capture
        tab = self.table
        return {
            "kvmtrace_analyze": ANALYZE_VERSION,
            "capture": str(cap.path),
            "window": self.window.to_dict(),
            "vcpus": self.vcpus.to_dicts(),
            "interrupts": {
                "count": tab.height,
                "by_path": {str(k): int(v) for k, v in tab.group_by("path").len().iter_rows()},
                "by_irq": {str(k): int(v) for k, v in tab.group_by("irq").len().sort("irq").iter_rows()},
                "total_ns": self.percentiles("total_ns"),
                "latency_ns": self.percentiles("latency_ns"),
                "timer_ns": self.percentiles("timer_ns"),
                "stages": self.stage_summary(),
                "histogram": self.histogram("latency_ns" if tab["latency_ns"].null_count() < tab.height
                                            else "total_ns"),
                "worst": self.worst(),
            },
            "cyclictest": cap.cyclictest.to_dicts(),
            "notes": list(dict.fromkeys(self.notes)),
        }


def _clean(row: dict[str, Any]) -> dict[str, Any]:
    hidden = {"t_idx", "entry_idx", "w_idx", "switch_idx"}
    return {k: v for k, v in row.items() if k not in hidden}


def fmt_ns(ns: float | None) -> str:
    if ns is None or (isinstance(ns, float) and math.isnan(ns)):
        return "-"
    if abs(ns) >= 1e6:
        return f"{ns / 1e6:.2f} ms"
    if abs(ns) >= 1e3:
        return f"{ns / 1e3:.1f} us"
    return f"{int(ns)} ns"


def stage_span(row: dict[str, Any], stage: str) -> tuple[int, int] | None:
    """(start_ns, end_ns) of one stage of an interrupt row, None when the stage does not apply."""
    blocked = row["path"] == "blocked"
    bounds = {
        "timer": (row.get("deadline_ns"), row["t_ns"]),
        "host_irq": (row["t_ns"], row["wakeup_ns"] if blocked else row["inject_at_ns"]),
        "vcpu_wait": (row["wakeup_ns"], row["switch_in_ns"]),
        "inject": (row["switch_in_ns"], row["inject_at_ns"]),
        "exit": (row["inject_at_ns"], row["exit_at_ns"]),
        "entry": (row["exit_at_ns"] if row["path"] == "running" else row["inject_at_ns"], row["entry_at_ns"]),
    }
    lo, hi = bounds[stage]
    return (int(lo), int(hi)) if lo is not None and hi is not None else None


def dominant_stage(row: dict[str, Any]) -> str | None:
    present = {s: row.get(f"{s}_ns") for s in STAGES if row.get(f"{s}_ns") is not None}
    return max(present, key=lambda s: present[s] or 0) if present else None


def _who(o: dict[str, Any]) -> str:
    if o["is_vcpu"]:
        return f"the vCPU thread itself (`{o['owner']}`, pid {o['pid']}) in the host"
    if o["pid"] == 0:
        return "nothing (the CPU was idle)"
    pid = f" (pid {o['pid']})" if o["pid"] is not None else ""
    return f"`{o['owner']}`{pid}"


def verdict(row: dict[str, Any], owners: list[dict[str, Any]]) -> str:
    """One plain sentence: the dominant stage, and what held the CPU during it."""
    stage = dominant_stage(row)
    if stage is None:
        return "no stages"
    whole = (row.get("latency_ns") or row.get("total_ns")) or 0
    text = f"{fmt_ns(row[f'{stage}_ns'])} of {fmt_ns(whole)} {STAGE_WORDS[stage]}"
    if stage == "vcpu_wait" and row.get("blocker_comm"):
        pid = f" (pid {row['blocker_pid']})" if row.get("blocker_pid") is not None else ""
        return f"{text}: `{row['blocker_comm']}`{pid} ran on CPU {row['wait_cpu']} for {fmt_ns(row['blocker_ns'])}"
    if stage == "timer":
        return f"{text}: the host took the timer interrupt late (interrupts off, or another handler first)"
    if stage == "host_irq":
        return f"{text}: IRQ handler delay"
    if owners:
        top = owners[0]
        rest = ", ".join(f"{'the vCPU thread' if o['is_vcpu'] else o['owner']} {fmt_ns(o['ns'])}"
                         for o in owners[1:3])
        more = f" (then {rest})" if rest else ""
        return f"{text}: CPU {top['cpu']} was held by {_who(top)} for {fmt_ns(top['ns'])}{more}"
    return text


def analyze(cap: Capture, window: str | None = None, worst_n: int = 5) -> LatencyAnalysis:
    """The latency analysis of one window (see ``choose_window``)."""
    t = cap.tables
    if not t.has("kvm_entry"):
        raise MissingEventsError(cap.path, "kvmtrace analyze", ["kvm:kvm_entry", "kvm:kvm_exit"],
                                 "no vCPU threads: record the kvm events on the KVM host")
    return LatencyAnalysis(cap, choose_window(cap, window), worst_n)
