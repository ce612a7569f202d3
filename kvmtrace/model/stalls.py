"""Whole-machine stalls: stretches where no CPU recorded anything although one of them was busy.

A CPU running a task takes its scheduler tick (every 1-10 ms) and records its interrupts, so a
silence of every CPU while at least one was not idle means the whole machine stopped: an
emulator or hypervisor that did not run it, an SMI, a firmware call. Interrupts being off on one
CPU does not silence the others. A gap counts when it lasts at least ``STALL_MIN_NS`` (five
ticks at HZ=250) and some CPU's current task at its start (its last ``sched_switch``) was not the
idle task.
"""

from __future__ import annotations

import polars as pl

from kvmtrace.ingest.tables import EventTables

STALL_MIN_NS = 20_000_000
STALL_SCHEMA = {"start_ns": pl.Int64(), "end_ns": pl.Int64(), "duration_ns": pl.Int64(), "start_idx": pl.UInt32(),
                "end_idx": pl.UInt32(), "busy_cpus": pl.List(pl.Int32())}


def stalls(t: EventTables, min_ns: int = STALL_MIN_NS) -> pl.DataFrame:
    """One row per stall: start_ns/end_ns (the events around the silence), duration_ns, start_idx,
    end_idx, busy_cpus (CPUs whose current task at the start was not idle)."""
    ev = t.events.select("idx", "ts", "cpu", "pid")
    gaps = (ev.with_columns(pl.col("ts").shift(-1).alias("end_ns"), pl.col("idx").shift(-1).alias("end_idx"))
            .filter((pl.col("end_ns") - pl.col("ts")) >= min_ns))
    if gaps.height == 0:
        return pl.DataFrame(schema=STALL_SCHEMA)
    # each CPU's current task at the gap: the next_pid of its last sched_switch before it (an event's own
    # pid can be a thread that already switched to idle: a vCPU's saves follow its switch-out), else the
    # pid of its last event when the capture has no sched_switch
    if t.has("sched_switch"):
        last = t.table("sched_switch").select("idx", "cpu", pl.col("next_pid").alias("pid")).sort("idx")
    else:
        last = ev.select("idx", "cpu", "pid").sort("idx")
    rows = []
    for cpu in last["cpu"].unique().sort().to_list():  # one asof join per CPU (a handful), not per event
        per_cpu = last.filter(pl.col("cpu") == cpu).select(pl.col("idx").alias("at"), "pid")
        rows.append(gaps.select("idx").sort("idx").join_asof(per_cpu, left_on="idx", right_on="at",
                                                              strategy="backward")
                    .select("idx", pl.lit(cpu, pl.Int32).alias("cpu"), "pid"))
    busy = (pl.concat(rows).filter(pl.col("pid").is_not_null(), pl.col("pid") != 0)
            .group_by("idx").agg(pl.col("cpu").sort().alias("busy_cpus")))
    return (gaps.join(busy, on="idx", how="inner")
            .select(pl.col("ts").alias("start_ns"), "end_ns", (pl.col("end_ns") - pl.col("ts")).alias("duration_ns"),
                    pl.col("idx").alias("start_idx"), "end_idx", "busy_cpus")
            .sort("start_ns").cast(STALL_SCHEMA))  # type: ignore[arg-type]
