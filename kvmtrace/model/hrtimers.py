"""Wakeups made by hrtimer callbacks, each with the start that armed the timer: the deadline behind it.

A ``sched_wakeup`` that happens between a ``hrtimer_expire_entry`` and its ``hrtimer_expire_exit``
on the same CPU was made by that timer's callback (``hrtimer_wakeup`` for a sleeping thread,
``kvm_bg_timer_expire`` for a blocked vCPU). The timer's last ``hrtimer_start`` before the expiry
gives ``expires``: the deadline that was asked for, in CLOCK_MONOTONIC, put on the trace clock
with :mod:`kvmtrace.model.clocks`.
"""

from __future__ import annotations

import polars as pl

from kvmtrace.ingest.tables import EventTables, cpu_column
from kvmtrace.model.clocks import MonoClock

TIMER_WAKEUP_SCHEMA = {
    "w_idx": pl.UInt32(), "w_ts": pl.Int64(), "pid": pl.Int32(), "ev_cpu": pl.Int32(), "hrtimer": pl.UInt64(),
    "x_idx": pl.UInt32(), "x_ts": pl.Int64(), "now_ns": pl.Int64(), "st_idx": pl.UInt32(), "st_ts": pl.Int64(),
    "st_pid": pl.Int32(), "expires_ns": pl.Int64(), "armed_late": pl.Boolean(),
}
NEEDED = ("hrtimer_expire_entry", "hrtimer_expire_exit", "sched_wakeup")


def timer_wakeups(t: EventTables, mono: MonoClock | None, pids: pl.Series | None = None) -> pl.DataFrame:
    """Each wakeup (of ``pids``, or of anyone) made inside an hrtimer callback, with the callback's
    ``now`` and the timer's last start: TIMER_WAKEUP_SCHEMA (``armed_late``: the start came after its
    own expiry time). Without ``hrtimer_start`` events the start columns are null."""
    if mono is None or not all(t.has(n) for n in NEEDED):
        return pl.DataFrame(schema=TIMER_WAKEUP_SCHEMA)
    wake = t.table("sched_wakeup")
    if pids is not None:
        wake = wake.filter(pl.col("pid").is_in(pids.implode()))
    cpu = cpu_column(wake)
    wake = wake.select(pl.col("idx").alias("w_idx"), pl.col("ts").alias("w_ts"), "pid", pl.col(cpu).alias("ev_cpu"))
    entry = t.table("hrtimer_expire_entry").select(pl.col("cpu").alias("ev_cpu"), pl.col("idx").alias("x_idx"),
                                                   pl.col("ts").alias("x_ts"), "hrtimer",
                                                   mono.to_trace(pl.col("now")).alias("now_ns"))
    exit_ = t.table("hrtimer_expire_exit").select(pl.col("cpu").alias("ev_cpu"), pl.col("idx").alias("xx_idx"),
                                                  "hrtimer")
    df = wake.sort("w_idx").join_asof(entry, left_on="w_idx", right_on="x_idx", by="ev_cpu", strategy="backward",
                                      check_sortedness=False)
    df = df.filter(pl.col("x_idx").is_not_null()).sort("x_idx").join_asof(
        exit_, left_on="x_idx", right_on="xx_idx", by=["ev_cpu", "hrtimer"], strategy="forward",
        check_sortedness=False)
    df = df.filter(pl.col("xx_idx").is_null() | (pl.col("xx_idx") > pl.col("w_idx")))  # inside the callback
    if t.has("hrtimer_start"):
        starts = t.table("hrtimer_start").select(pl.col("idx").alias("st_idx"), pl.col("ts").alias("st_ts"),
                                                 pl.col("pid").alias("st_pid"), "hrtimer",
                                                 mono.to_trace(pl.col("expires")).alias("expires_ns"))
        df = df.sort("x_idx").join_asof(starts, left_on="x_idx", right_on="st_idx", by="hrtimer",
                                        strategy="backward", check_sortedness=False)
        df = df.filter(pl.col("st_idx").is_not_null())
    else:
        df = df.with_columns(pl.lit(None, pl.UInt32).alias("st_idx"), pl.lit(None, pl.Int64).alias("st_ts"),
                             pl.lit(None, pl.Int32).alias("st_pid"), pl.lit(None, pl.Int64).alias("expires_ns"))
    return (df
            .with_columns((pl.col("expires_ns") < pl.col("st_ts")).alias("armed_late"))
            .select(list(TIMER_WAKEUP_SCHEMA)).cast(TIMER_WAKEUP_SCHEMA).sort("w_idx"))  # type: ignore[arg-type]
