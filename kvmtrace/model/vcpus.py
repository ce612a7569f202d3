"""vCPU threads and their state timelines, from kvm_entry/kvm_exit and the scheduler events.

arm64 kvm_entry/kvm_exit carry no vCPU id, so a vCPU is a thread: every ``common_pid`` that
emits kvm_entry or kvm_exit. Its state over time:

=================  ===========================================================================
``guest``          kvm_entry -> kvm_exit
``host_handling``  kvm_exit (or switch-in) -> next kvm_entry while on a CPU
``blocked``        switched out asleep (``prev_state`` S/D/...; typically after WFx)
``preempted``      switched out while runnable (``prev_state`` R / R+)
``waking``         woken (sched_waking / sched_wakeup) -> switched in: waiting for a CPU
=================  ===========================================================================
"""

from __future__ import annotations

import polars as pl

from kvmtrace.ingest.tables import EventTables, pid_column
from kvmtrace.model.requires import requires_events

STATES = ("guest", "host_handling", "blocked", "preempted", "waking")
TASK_STATE_MASK = 0xFF  # TASK_REPORT bits; 0 means runnable (printed R or R+)
STATE = pl.Enum(STATES)  # states as small integers while transitions are sorted and compared

VCPU_SCHEMA = {"vcpu_tid": pl.Int32(), "comm": pl.String(), "entries": pl.UInt32(), "cpus": pl.List(pl.Int32())}
STATE_SCHEMA = {"vcpu_tid": pl.Int32(), "state": pl.String(), "start_ns": pl.Int64(), "end_ns": pl.Int64(),
                "cpu": pl.Int32(), "start_idx": pl.UInt32()}


@requires_events("kvm:kvm_entry", "kvm:kvm_exit", analysis="vCPU discovery", any_of=True)
def vcpu_threads(t: EventTables) -> pl.DataFrame:
    """One row per vCPU thread: vcpu_tid, comm, entries (kvm_entry count), cpus it entered the guest on."""
    return entries_by_thread(t, t.table(entry_event(t))).select(list(VCPU_SCHEMA)).cast(VCPU_SCHEMA)  # type: ignore[arg-type]


def entry_event(t: EventTables) -> str:
    """The event that marks a vCPU thread: ``kvm_entry``, else ``kvm_exit``."""
    return "kvm_entry" if t.has("kvm_entry") else "kvm_exit"


def entries_by_thread(t: EventTables, entries: pl.DataFrame) -> pl.DataFrame:
    """Per thread of ``entries`` (rows of ``entry_event``): vcpu_tid, comm (at its last entry), entries,
    cpus it entered the guest on, first_entry_ns, last_entry_ns; by vcpu_tid."""
    pid = pid_column(entries)
    return (entries.group_by(pl.col(pid).alias("vcpu_tid"))
            .agg(pl.len().cast(pl.UInt32).alias("entries"), pl.col("cpu").unique().sort().alias("cpus"),
                 pl.col("idx").last().alias("last_idx"), pl.col("ts").min().alias("first_entry_ns"),
                 pl.col("ts").max().alias("last_entry_ns"))
            .with_columns(t.at(pl.col("last_idx"), "comm").alias("comm")).drop("last_idx")
            .sort("vcpu_tid"))


def _state(name: str) -> pl.Expr:
    return pl.lit(name, dtype=STATE)


def state_transitions(t: EventTables, vcpus: pl.Series) -> pl.DataFrame:
    """Every event that changes a vCPU thread's state: vcpu_tid, idx, ts, cpu, to_state (a STATE), by
    vcpu_tid and idx."""
    parts = []
    for name, state in (("kvm_entry", "guest"), ("kvm_exit", "host_handling")):
        if t.has(name):
            df = t.table(name)
            parts.append(df.filter(pl.col(pid_column(df)).is_in(vcpus.implode()))
                         .select(pl.col(pid_column(df)).alias("vcpu_tid"), "idx", "ts", "cpu",
                                 _state(state).alias("to_state")))
    if t.has("sched_switch"):
        sw = t.table("sched_switch")
        parts.append(sw.filter(pl.col("prev_pid").is_in(vcpus.implode()))
                     .select(pl.col("prev_pid").alias("vcpu_tid"), "idx", "ts", "cpu",
                             pl.when((pl.col("prev_state") & TASK_STATE_MASK) == 0).then(_state("preempted"))
                             .otherwise(_state("blocked")).alias("to_state")))
        parts.append(sw.filter(pl.col("next_pid").is_in(vcpus.implode()))
                     .select(pl.col("next_pid").alias("vcpu_tid"), "idx", "ts", "cpu",
                             _state("host_handling").alias("to_state")))
    for name in ("sched_waking", "sched_wakeup"):
        if t.has(name):
            parts.append(t.table(name).filter(pl.col("pid").is_in(vcpus.implode()))
                         .select(pl.col("pid").alias("vcpu_tid"), "idx", "ts",
                                 pl.col("target_cpu").alias("cpu"), _state("waking").alias("to_state")))
    schema = {"vcpu_tid": pl.Int32(), "idx": pl.UInt32(), "ts": pl.Int64(), "cpu": pl.Int32(), "to_state": STATE}
    if not parts:
        return pl.DataFrame(schema=schema)
    by_thread_and_idx = pl.col("vcpu_tid").cast(pl.Int64) * (1 << 32) + pl.col("idx").cast(pl.Int64)  # one key
    return pl.concat([p.cast(schema) for p in parts]).sort(by_thread_and_idx)  # type: ignore[arg-type]


def state_timeline(t: EventTables, vcpus: pl.Series | None = None) -> pl.DataFrame:
    """Per vCPU thread, consecutive state intervals: vcpu_tid, state, start_ns, end_ns, cpu, start_idx.

    A wakeup counts only when the thread was blocked; repeated transitions into the same state
    merge. The last interval of each thread ends at the capture's last event.
    """
    if vcpus is None:
        vcpus = vcpu_threads(t)["vcpu_tid"]
    tr = state_transitions(t, vcpus)
    if tr.height == 0:
        return pl.DataFrame(schema=STATE_SCHEMA)
    last_ts = int(t.events["ts"][-1])
    not_wake = pl.col("to_state") != "waking"
    tr = (tr.with_columns(pl.when(not_wake).then(pl.col("to_state")).forward_fill().over("vcpu_tid")
                          .shift(1).over("vcpu_tid").alias("before"))
            .filter(not_wake | (pl.col("before") == "blocked"))
            .filter(pl.col("to_state").ne_missing(pl.col("to_state").shift(1).over("vcpu_tid")))
            .with_columns(pl.col("ts").shift(-1).over("vcpu_tid").fill_null(last_ts).alias("end_ns")))
    return (tr.select("vcpu_tid", pl.col("to_state").alias("state"), pl.col("ts").alias("start_ns"), "end_ns",
                      "cpu", pl.col("idx").alias("start_idx"))
              .cast(STATE_SCHEMA))  # type: ignore[arg-type]


def state_summary(timeline: pl.DataFrame) -> pl.DataFrame:
    """Time per vCPU thread and state: vcpu_tid, state, intervals, total_ns, share."""
    return (timeline.with_columns((pl.col("end_ns") - pl.col("start_ns")).alias("dur"))
            .group_by("vcpu_tid", "state")
            .agg(pl.len().alias("intervals"), pl.col("dur").sum().alias("total_ns"))
            .with_columns((pl.col("total_ns") / pl.col("total_ns").sum().over("vcpu_tid")).alias("share"))
            .sort("vcpu_tid", "state"))
