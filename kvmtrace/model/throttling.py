"""Real-time throttling: a runnable SCHED_FIFO/RR task switched out for a lower-priority one.

The scheduler never preempts a runnable real-time task (kernel priority < 100) for a CFS task
(priority >= 100) or the idle task, except when the CPU's real-time runqueue has used its budget
(``sched_rt_runtime_us``, 950 ms of every ``sched_rt_period_us``, 1 s, by default): then every
real-time task there waits until the period ends. Each such switch opens a throttled interval
that ends when the real-time task is switched in again. Recurring once per period, these give
the period and, from their length, the budget: budget = period - throttled time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import polars as pl

from kvmtrace.ingest.tables import EventTables

RT_PRIO_LIMIT = 100  # kernel priorities below this are real-time
THROTTLE_SCHEMA = {"cpu": pl.Int32(), "task_pid": pl.Int32(), "task": pl.String(), "task_prio": pl.Int32(),
                   "start_ns": pl.Int64(), "end_ns": pl.Int64(), "next_comm": pl.String(), "next_pid": pl.Int32()}


@dataclass
class Throttling:
    """Throttled intervals (``intervals``: THROTTLE_SCHEMA) and the period and budget they show."""

    intervals: pl.DataFrame
    period_ns: int | None
    throttled_ns: int | None  # median length of one throttled interval
    configured: dict[str, int] | None = None  # sched_rt_runtime_us / sched_rt_period_us the recorder saw

    @property
    def budget_ns(self) -> int | None:
        if self.period_ns is None or self.throttled_ns is None:
            return None
        return self.period_ns - self.throttled_ns

    def describe(self) -> str:
        n = self.intervals.height
        if n == 0:
            return "no real-time throttling"
        text = f"real-time throttling {n:,} time{'s' if n > 1 else ''}"
        if self.period_ns and self.throttled_ns is not None and self.budget_ns is not None:
            text += (f", every {self.period_ns / 1e9:.2f} s for {self.throttled_ns / 1e6:.1f} ms: a real-time "
                     f"budget of about {self.budget_ns / 1e6:.0f} ms per {self.period_ns / 1e6:.0f} ms period "
                     f"(sched_rt_runtime_us / sched_rt_period_us)")
        if self.configured:
            text += (f"; the host had sched_rt_runtime_us {self.configured['sched_rt_runtime_us']} of "
                     f"sched_rt_period_us {self.configured['sched_rt_period_us']}")
        return text

    def to_dict(self) -> dict[str, Any]:
        return {"count": self.intervals.height, "period_ns": self.period_ns, "throttled_ns": self.throttled_ns,
                "budget_ns": self.budget_ns, "configured": self.configured, "summary": self.describe()}


def rt_throttling(t: EventTables, host: dict[str, Any] | None = None) -> Throttling:
    """Throttled intervals of real-time tasks, and their period and budget (``host``: capture.json's
    host facts, which name the configured budget when the recorder saw it)."""
    if not t.has("sched_switch"):
        return throttling_of(pl.DataFrame(schema=THROTTLE_SCHEMA), host)
    sw = t.table("sched_switch")
    out = sw.filter(pl.col("prev_prio") < RT_PRIO_LIMIT, (pl.col("prev_state") & 0xFF) == 0,
                    pl.col("next_prio") >= RT_PRIO_LIMIT)
    back = sw.select(pl.col("next_pid").alias("task_pid"), pl.col("idx").alias("in_idx"), pl.col("ts").alias("end_ns"))
    df = (out.select("cpu", pl.col("prev_pid").alias("task_pid"), pl.col("prev_comm").alias("task"),
                     pl.col("prev_prio").alias("task_prio"), "idx", pl.col("ts").alias("start_ns"), "next_comm",
                     "next_pid")
          .sort("idx").join_asof(back, left_on="idx", right_on="in_idx", by="task_pid", strategy="forward",
                                 allow_exact_matches=False, check_sortedness=False))
    last_ts = int(t.events["ts"][-1]) if t.events.height else 0
    df = df.with_columns(pl.col("end_ns").fill_null(last_ts)).select(list(THROTTLE_SCHEMA)).cast(THROTTLE_SCHEMA)  # type: ignore[arg-type]
    return throttling_of(df, host)


def throttling_of(intervals: pl.DataFrame, host: dict[str, Any] | None) -> Throttling:
    """The period and budget the throttled ``intervals`` show (of one capture, or of its chunks together)."""
    keys = ("sched_rt_runtime_us", "sched_rt_period_us")
    configured = {k: int(host[k]) for k in keys} if host and all(isinstance(host.get(k), int) for k in keys) else None
    return Throttling(intervals, *_period(intervals), configured)


def _period(df: pl.DataFrame) -> tuple[int | None, int | None]:
    """Median spacing of the throttled intervals of the most throttled task on its CPU, and their median length."""
    if df.height == 0:
        return None, None
    top = (df.group_by("cpu", "task_pid").len()
           .sort(["len", "cpu", "task_pid"], descending=[True, False, False]).row(0, named=True))
    mine = df.filter(pl.col("cpu") == top["cpu"], pl.col("task_pid") == top["task_pid"]).sort("start_ns")
    length = int(pl.Series(mine["end_ns"] - mine["start_ns"]).median())  # type: ignore[arg-type]
    if mine.height < 2:
        return None, length
    spacing = mine["start_ns"].diff().drop_nulls()
    return int(spacing.median()), length  # type: ignore[arg-type]
