"""Native wakeup latency: a periodic real-time thread on the host itself (cyclictest without a guest).

Every timer wakeup of the measuring threads (:mod:`kvmtrace.model.wakeups`) in the window, with its
stages (timer, host_irq, wait, user), its latency from the deadline, the causes of that latency
(:mod:`kvmtrace.model.blame` vocabulary: who held the CPU while the timer interrupt was due, the
handler, who held the CPU the woken thread waited for) and a verdict, in the same document shape
as the guest interrupt analysis so that every renderer takes both.

Needs ``sched_switch``, ``sched_wakeup``, and ``hrtimer_expire_entry``/``exit`` or, failing those,
``irq_handler_entry``/``exit`` (``hrtimer_start`` for exact deadlines; ``raw_syscalls:sys_exit`` for
the return to user space).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
import polars as pl

from kvmtrace.analysis.verdicts import cause_phrase
from kvmtrace.capture import Capture
from kvmtrace.errors import MissingEventsError
from kvmtrace.ingest.cyclictest import CyclictestOutput, breaktrace
from kvmtrace.model.blame import SLOW_NS
from kvmtrace.model.blockers import cpu_segments, span_shares
from kvmtrace.model.chunking import owned_rows
from kvmtrace.model.clocks import MonoClock
from kvmtrace.model.stalls import stalls
from kvmtrace.model.throttling import Throttling, rt_throttling
from kvmtrace.model.wakeups import SleepFit, measuring_threads, thread_wakeups
from kvmtrace.units import fmt_ns

NEEDED = ["sched:sched_switch", "sched:sched_wakeup", "timer:hrtimer_expire_entry", "timer:hrtimer_expire_exit"]
NATIVE_STAGES = ("timer", "host_irq", "wait", "user")
STAGE_COLUMN = {"timer": "timer_ns", "host_irq": "host_irq_ns", "wait": "wait_ns", "user": "user_stage_ns"}
PIECES = (("timer", "deadline_ns", "irq_ns", "irq_cpu"), ("host_irq", "irq_ns", "wakeup_ns", "irq_cpu"),
          ("wait", "wakeup_ns", "switch_in_ns", "cpu"), ("user", "switch_in_ns", "user_ns", "cpu"))
STATE_OF_PIECE = {"timer": "blocked", "host_irq": "blocked", "wait": "waking", "user": "host_handling"}


def needed_missing(cap: Capture) -> list[str]:
    """The events this analysis lacks: the scheduler's, and either hrtimer expiries or hard IRQs."""
    return missing_events(cap.tables.has)


def missing_events(has: Callable[[str], bool]) -> list[str]:
    """``needed_missing`` of a capture whose events ``has`` knows (one read, or all its time chunks)."""
    missing = [n for n in NEEDED[:2] if not has(n.split(":", 1)[1])]
    if not (has("hrtimer_expire_entry") and has("hrtimer_expire_exit")) and not has("irq_handler_entry"):
        missing += NEEDED[2:]
    return missing


@dataclass
class NativeAnalysis:
    """The measuring threads' wakeups in one window: table, causes, summaries."""

    capture: Capture
    start_ns: int
    end_ns: int
    worst_n: int = 5
    notes: list[str] = field(default_factory=list)

    exclude: tuple[int, ...] = ()  # threads explained elsewhere (vCPU threads)
    chunk: NativeChunk | None = None  # one time chunk of a larger capture (analysis/chunked.py)

    @cached_property
    def tids(self) -> pl.Series:
        if self.chunk is not None:
            return self.chunk.tids
        t = self.capture.tables
        seen = set(t.table("sched_switch")["next_pid"].unique().to_list()) if t.has("sched_switch") else set()
        known = [int(x) for x in self.capture.cyclictest["tid"].unique().to_list() if int(x) in seen]
        found = measuring_threads(t, known or None)
        return found.filter(~found.is_in(list(self.exclude)))

    @cached_property
    def throttling(self) -> Throttling:
        m = self.capture.manifest
        return rt_throttling(self.capture.tables, m.host if m else None)

    @cached_property
    def table(self) -> pl.DataFrame:
        """One row per wakeup of a measuring thread in the window (model/wakeups.py WAKEUP_SCHEMA + causes)."""
        t = self.capture.tables
        intervals = cyclictest_intervals(self.capture.cyclictest)
        w = thread_wakeups(t, self.tids, intervals, self.chunk.fitted if self.chunk is not None else None)
        w = w.filter(pl.col("deadline_ns").is_between(self.start_ns, self.end_ns))
        if self.chunk is not None:
            w = owned_rows(w, self.chunk.start_ns, self.chunk.end_ns, "deadline_ns")
        else:
            self.notes.extend(wakeup_notes(w, t.has))
        w = w.with_row_index("irq_no")
        top = self._top_cause(w)
        return w.join(top, on="irq_no", how="left").with_columns(pl.col("latency_ns").alias("best_latency_ns"))

    @cached_property
    def shares(self) -> pl.DataFrame:
        """Every wakeup's latency charged to who held the CPU that mattered (docs/stages.md, "Blame")."""
        return self._shares

    def _top_cause(self, w: pl.DataFrame) -> pl.DataFrame:
        t = self.capture.tables
        segments = cpu_segments(t, stalls(t))
        pieces = pl.concat([
            w.select("irq_no", "tid", pl.lit(name).alias("stage"), pl.col(cpu).alias("cpu"),
                     pl.col(a).alias("start_ns"), pl.col(b).alias("end_ns"))
            for name, a, b, cpu in PIECES]).filter(pl.col("end_ns") > pl.col("start_ns"))
        owned = span_shares(pieces.with_row_index("key"), segments)
        kind = (pl.when(pl.col("owner") == "stall").then(pl.lit("stall"))
                .when(pl.col("owner_pid") == 0).then(pl.lit("idle"))
                .when(pl.col("owner").str.starts_with("irq:")).then(pl.lit("irq"))
                .when(pl.col("owner").str.starts_with("softirq:")).then(pl.lit("softirq"))
                .when(pl.col("owner_pid") == pl.col("tid")).then(pl.lit("self")).otherwise(pl.lit("task")))
        self._shares = (owned.with_columns(kind.alias("cause_kind"),
                                           pl.when(pl.col("owner_pid") == 0).then(pl.lit("idle"))
                                           .otherwise(pl.col("owner")).alias("cause"),
                                           pl.col("stage").replace_strict(STATE_OF_PIECE).alias("state"))
                        .group_by("irq_no", "tid", "stage", "state", "cpu", "cause_kind", "cause",
                                  pl.col("owner_pid").alias("cause_pid"))
                        .agg(pl.col("share_ns").sum()).sort("irq_no", "share_ns", descending=[False, True]))
        return (self._shares.group_by("irq_no", "cause_kind", "cause", "cause_pid").agg(pl.col("share_ns").sum())
                .sort(["irq_no", "share_ns"], descending=[False, True]).group_by("irq_no", maintain_order=True)
                .first().select("irq_no", "cause_kind", "cause", "cause_pid", pl.col("share_ns").alias("cause_ns")))

    @cached_property
    def blame(self) -> pl.DataFrame:
        _ = self.table
        slow = self.table.filter(pl.col("latency_ns") > SLOW_NS).group_by("cause_kind", "cause", "cause_pid").agg(
            pl.len().cast(pl.UInt32).alias("slow_top"))
        group = ["cause_kind", "cause", "cause_pid"]
        return (self.shares.group_by(group)
                .agg(pl.col("share_ns").sum().alias("total_ns"), pl.col("irq_no").n_unique().cast(pl.UInt32)
                     .alias("interrupts"))
                .join(slow, on=group, how="left", nulls_equal=True)
                .with_columns(pl.col("slow_top").fill_null(0),
                              (pl.col("total_ns") / pl.col("total_ns").sum()).round(4).alias("share"))
                .sort("total_ns", descending=True, maintain_order=True))

    # ---- summaries ------------------------------------------------------------------------
    def percentiles(self, column: str) -> dict[str, Any]:
        s = self.table[column].drop_nulls()
        if s.len() == 0:
            return {"count": 0}
        out: dict[str, Any] = {"count": s.len(), "min": int(s.min()), "mean": round(float(s.mean()), 1)}  # type: ignore[arg-type]
        for q in (0.5, 0.95, 0.99):
            out[f"p{round(q * 100)}"] = int(s.quantile(q, interpolation="nearest"))  # type: ignore[arg-type]
        out["max"] = int(s.max())  # type: ignore[arg-type]
        return out

    def stage_summary(self) -> dict[str, dict[str, Any]]:
        total = self.table["latency_ns"].sum()
        out = {}
        for stage in NATIVE_STAGES:
            s = self.table[STAGE_COLUMN[stage]].drop_nulls()
            if s.len():
                out[stage] = {"count": s.len(), "sum_ns": int(s.sum()),
                              "share": round(float(s.sum()) / float(total), 4) if total else None,
                              "p50": int(s.quantile(0.5, interpolation="nearest")),  # type: ignore[arg-type]
                              "p99": int(s.quantile(0.99, interpolation="nearest")),  # type: ignore[arg-type]
                              "max": int(s.max())}  # type: ignore[arg-type]
        return out

    def worst(self) -> list[dict[str, Any]]:
        out = []
        for r in self.table.sort(["latency_ns", "deadline_ns"], descending=[True, False]).head(self.worst_n).to_dicts():
            causes = (self.shares.filter(pl.col("irq_no") == r["irq_no"])
                      .group_by("cause_kind", "cause", "cause_pid", "cpu", maintain_order=True)
                      .agg(pl.col("state").first(), pl.col("share_ns").sum())
                      .sort("share_ns", descending=True, maintain_order=True).to_dicts())
            out.append({**{k: v for k, v in r.items() if k not in ("w_idx", "switch_idx", "irq_no")},
                        "path": "native", "t_ns": r["irq_ns"], "irq": None, "vcpu_tid": r["tid"],
                        "latency_basis": "deadline", "causes": causes[:5], "verdict": self._verdict(r, causes)})
        return out

    def _verdict(self, row: dict[str, Any], causes: list[dict[str, Any]]) -> str:
        stages = {s: row[STAGE_COLUMN[s]] for s in NATIVE_STAGES if row.get(STAGE_COLUMN[s]) is not None}
        big = max(stages, key=lambda s: stages[s]) if stages else None
        head = f"{fmt_ns(row['latency_ns'])} from the deadline" + (f" (mostly {big})" if big else "")
        if not causes:
            return head
        phrases = [cause_phrase(c, self.throttling) if c["cause_kind"] != "self" else
                   f"the thread itself ran for {fmt_ns(c['share_ns'])} before it was back in user space"
                   for c in causes[:3] if c["share_ns"] >= 0.02 * row["latency_ns"]]
        pct = f" ({100 * causes[0]['share_ns'] / row['latency_ns']:.0f}%)" if row["latency_ns"] else ""
        return f"{head}: {phrases[0]}{pct}" + ("; then " + "; ".join(phrases[1:]) if len(phrases) > 1 else "")

    def histogram(self) -> list[dict[str, Any]]:
        s = self.table["latency_ns"].drop_nulls()
        if s.len() == 0:
            return []
        bucket = (s.cast(pl.Float64) / 1000).clip(lower_bound=1).log(2).floor().cast(pl.Int32)
        return [{"from_us": 2 ** int(b), "to_us": 2 ** (int(b) + 1), "count": int(n)}
                for b, n in bucket.value_counts().sort(bucket.name).iter_rows()]

    def document(self) -> dict[str, Any]:
        tab = self.table
        return {
            "threads": [{"tid": int(tid), "comm": self.capture.tables.cmdlines.get(int(tid), "?"),
                         "wakeups": int(tab.filter(pl.col("tid") == tid).height)} for tid in self.tids.to_list()],
            "wakeups": {
                "count": tab.height,
                "by_source": {str(k): int(v) for k, v in tab.group_by("deadline_source").len().iter_rows()},
                "latency_ns": self.percentiles("latency_ns"),
                "timer_ns": self.percentiles("timer_ns"),
                "stages": self.stage_summary(),
                "histogram": self.histogram(),
                "worst": self.worst(),
            },
            "blame": self.blame.head(20).to_dicts(),
        }


@dataclass(frozen=True)
class NativeChunk:
    """What one time chunk's native analysis takes from the whole capture (analysis/chunked.py)."""

    tids: pl.Series
    fitted: tuple[MonoClock | None, dict[int, SleepFit]]  # the capture's mono clock, each thread's deadlines
    start_ns: int
    end_ns: int | None  # None: open (the last chunk)


def cyclictest_intervals(cyclictest: pl.DataFrame) -> dict[int, int]:
    """Each cyclictest thread's interval in ns, from its own summary lines (``Capture.cyclictest``)."""
    return {int(r["tid"]): int(r["interval_us"]) * 1000 for r in cyclictest.to_dicts()}


def wakeup_notes(w: pl.DataFrame, has: Callable[[str], bool]) -> list[str]:
    """What the wakeups ``w`` cannot show for lack of events (``has``: does the capture hold this event)."""
    notes = []
    if w["deadline_source"].eq("grid-fit").any():
        notes.append("no hrtimer_start events: deadlines fitted to the thread's period grid (the latest "
                     "the timer expiries allow; record timer:hrtimer_start for exact ones)")
    if not has("irq_handler_entry") or w["irq_name"].null_count() == w.height:
        notes.append("the timer interrupt's entry is not traced (x86: irq_vectors:local_timer_entry): "
                     "the hrtimer expiry stands for it")
    if not has("sys_exit"):
        notes.append("no raw_syscalls:sys_exit: latency ends at the switch-in, before the return to "
                     "user space that the thread measures")
    return notes


def native_analysis(cap: Capture, start_ns: int, end_ns: int, worst_n: int = 5) -> NativeAnalysis:
    """The native analysis of a window; a capture without the events it needs gets one clear error."""
    missing = needed_missing(cap)
    if missing:
        raise MissingEventsError(cap.path, "native wakeup latency", missing,
                                 "record with -e sched -e timer (kvmtrace record -p latency does)")
    return NativeAnalysis(cap, start_ns, end_ns, worst_n)


def cyclictest_comparison(na: NativeAnalysis, output: CyclictestOutput | None) -> dict[str, Any]:
    """cyclictest's own figures beside the trace's: loops, max, the loops over the histogram's range,
    the breaktrace value, and per-loop differences where -v lines exist (docs/study.md)."""
    tab = na.table.sort("deadline_ns")
    traced = {"loops": tab.height,
              "max_us": round(int(tab["latency_ns"].max() or 0) / 1000, 1),  # type: ignore[arg-type]
              "avg_us": round(float(tab["latency_ns"].mean() or 0) / 1000, 1)}  # type: ignore[arg-type]
    out: dict[str, Any] = {"traced": traced, "own": None}
    summary = na.capture.cyclictest
    if output is not None and (output.histogram or output.summary.height):
        own = dict(output.histogram) if output.histogram else output.summary.row(0, named=True)
        out["own"] = own
        if output.overflow_loops and "max_us" in own:
            limit = _histogram_limit(output)
            over = tab.with_row_index("loop").filter(pl.col("latency_ns") > limit * 1000)["loop"].to_list()
            out["over_histogram"] = {"limit_us": limit, "own_loops": output.overflow_loops, "traced_loops": over}
        if output.loops.height:
            out["per_loop"] = _per_loop(tab, output)
    elif summary.height:
        out["own"] = summary.row(0, named=True)
    bt = breaktrace(na.capture.markers)
    if bt:
        worst = tab.sort("latency_ns", descending=True).row(0, named=True)
        out["breaktrace"] = {**bt, "traced_worst_us": round(worst["latency_ns"] / 1000, 1),
                             "traced_worst_deadline_ns": worst["deadline_ns"], "cause": worst.get("cause")}
    return out


def _histogram_limit(output: CyclictestOutput) -> int:
    """The histogram's range in microseconds (-h N): overflows are the loops above it."""
    return output.histogram_range


def _per_loop(tab: pl.DataFrame, output: CyclictestOutput) -> dict[str, Any]:
    from kvmtrace.analysis.loops import best_shift

    loops = output.loops.filter(pl.col("thread") == 0).sort("loop")
    measured = loops["latency_us"].to_numpy() * 1000
    traced = tab["latency_ns"].to_numpy()
    shift = best_shift(measured, traced)
    n = min(len(measured) - max(0, -shift), len(traced) - max(0, shift))
    diff = measured[max(0, -shift):][:n] - traced[max(0, shift):][:n]
    return {"loops": n, "shift": shift, "measured_minus_traced_median_us": round(float(np.median(diff)) / 1000, 1),
            "within_50us": round(float((np.abs(diff) <= 50_000).mean()), 4)}


def native_document(cap: Capture, start_ns: int, end_ns: int, worst_n: int = 5,
                    output: CyclictestOutput | None = None, exclude: tuple[int, ...] = ()) -> dict[str, Any] | None:
    """The native analysis as a document (None when no thread qualifies), with cyclictest's own figures."""
    if needed_missing(cap):
        return None
    na = NativeAnalysis(cap, start_ns, end_ns, worst_n, exclude=exclude)
    if na.tids.len() == 0:
        return None
    return analysis_document(na, output)


def analysis_document(na: NativeAnalysis, output: CyclictestOutput | None = None) -> dict[str, Any]:
    """The document of a native analysis, with cyclictest's own figures."""
    doc = na.document()
    doc["cyclictest_check"] = cyclictest_comparison(na, output)
    doc["notes"] = list(dict.fromkeys(na.notes))
    return doc
