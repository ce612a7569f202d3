"""Timer wakeups of sleeping threads as timelines: a periodic real-time thread's every wakeup.

cyclictest (or any periodic thread) sleeps with ``clock_nanosleep``: it arms an hrtimer for its next
deadline (``hrtimer_start`` by the thread itself), the timer's IRQ runs the callback that wakes it
(``hrtimer_expire_entry``, ``sched_wakeup``), and the scheduler switches it in. Stages, in the
vocabulary of guest interrupts where they correspond:

===========  ==============================================  =========================================
stage        span                                            meaning
===========  ==============================================  =========================================
``timer``    deadline (``expires``) -> IRQ entry             the timer interrupt's delivery
``host_irq`` IRQ entry -> ``sched_wakeup``                   the handler before the callback woke it
``wait``     ``sched_wakeup`` -> ``sched_switch`` to it       the scheduler: who held the CPU
===========  ==============================================  =========================================

``latency_ns`` = switch-in - deadline: what the thread measures, less its return to user space. A
timer that expired before its thread got to sleep wakes it on the CPU it runs on: no switch-in,
the wakeup is where it goes on. A thread whose next deadline has already passed does not sleep
at all: that loop has no wakeup here.
"""

from __future__ import annotations

import polars as pl

from kvmtrace.ingest.tables import EventTables
from kvmtrace.model.clocks import mono_clock
from kvmtrace.model.hrtimers import timer_wakeups
from kvmtrace.model.interrupts import irq_context

WAKEUP_SCHEMA = {
    "tid": pl.Int32(), "cpu": pl.Int32(), "deadline_ns": pl.Int64(), "irq_ns": pl.Int64(), "irq_name": pl.String(),
    "wakeup_ns": pl.Int64(), "switch_in_ns": pl.Int64(), "timer_ns": pl.Int64(), "host_irq_ns": pl.Int64(),
    "wait_ns": pl.Int64(), "latency_ns": pl.Int64(), "w_idx": pl.UInt32(), "switch_idx": pl.UInt32(),
}


def thread_wakeups(t: EventTables, tids: pl.Series | None = None) -> pl.DataFrame:
    """Every wakeup of a thread by the timer it armed itself (WAKEUP_SCHEMA), in time order."""
    mono = mono_clock(t)
    tw = timer_wakeups(t, mono, tids)
    tw = tw.filter(pl.col("st_pid") == pl.col("pid"))  # its own sleep, not a timer someone else armed
    if tw.height == 0 or not t.has("sched_switch"):
        return pl.DataFrame(schema=WAKEUP_SCHEMA)
    irqs = irq_context(t).select(pl.col("cpu").alias("ev_cpu"), pl.col("idx").alias("irq_idx"),
                                 pl.col("ts").alias("irq_ns"), pl.col("name").alias("irq_name"),
                                 pl.col("end_idx").alias("irq_end"))
    df = tw.sort("x_idx").join_asof(irqs, left_on="x_idx", right_on="irq_idx", by="ev_cpu", strategy="backward",
                                    check_sortedness=False)
    inside = pl.col("irq_end").is_null() | (pl.col("irq_end") > pl.col("x_idx"))
    df = df.with_columns(pl.when(inside).then(pl.col("irq_ns")).alias("irq_ns"),
                         pl.when(inside).then(pl.col("irq_name")).alias("irq_name"))
    switch_in = t.table("sched_switch").select(pl.col("next_pid").alias("pid"), pl.col("idx").alias("switch_idx"),
                                               pl.col("ts").alias("switch_in_ns"), pl.col("cpu").alias("cpu"))
    df = df.sort("w_idx").join_asof(switch_in, left_on="w_idx", right_on="switch_idx", by="pid", strategy="forward",
                                    allow_exact_matches=False, check_sortedness=False)
    # a timer that expired before its thread got to sleep wakes it where it runs: no switch-in follows
    # before its next wakeup; it goes on at once
    df = df.with_columns(pl.col("w_idx").shift(-1).over("pid", order_by="w_idx").alias("next_w"))
    ran_on = pl.col("switch_idx").is_null() | (pl.col("next_w").is_not_null()
                                                & (pl.col("switch_idx") > pl.col("next_w")))
    df = df.with_columns(pl.when(ran_on).then(pl.col("w_ts")).otherwise(pl.col("switch_in_ns")).alias("switch_in_ns"),
                         pl.when(ran_on).then(pl.col("w_idx")).otherwise(pl.col("switch_idx")).alias("switch_idx"),
                         pl.when(ran_on).then(pl.col("ev_cpu")).otherwise(pl.col("cpu")).alias("cpu"))
    irq_or_callback = pl.coalesce("irq_ns", "x_ts")
    return (df
            .select(pl.col("pid").alias("tid"), "cpu", pl.col("expires_ns").alias("deadline_ns"),
                    irq_or_callback.alias("irq_ns"), "irq_name", pl.col("w_ts").alias("wakeup_ns"), "switch_in_ns",
                    (irq_or_callback - pl.col("expires_ns")).alias("timer_ns"),
                    (pl.col("w_ts") - irq_or_callback).alias("host_irq_ns"),
                    (pl.col("switch_in_ns") - pl.col("w_ts")).alias("wait_ns"),
                    (pl.col("switch_in_ns") - pl.col("expires_ns")).alias("latency_ns"), "w_idx", "switch_idx")
            .cast(WAKEUP_SCHEMA).sort("deadline_ns"))  # type: ignore[arg-type]
