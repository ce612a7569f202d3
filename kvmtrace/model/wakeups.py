"""Timer wakeups of sleeping threads as timelines: a periodic real-time thread's every wakeup.

cyclictest (or any periodic thread) sleeps with ``clock_nanosleep``: it arms an hrtimer for its next
deadline (``hrtimer_start`` by the thread itself), the timer's IRQ runs the callback that wakes it
(``hrtimer_expire_entry``, ``sched_wakeup``), the scheduler switches it in, and it returns to user
space (``sys_exit`` of the sleep, with ``raw_syscalls`` recorded). Stages, in the vocabulary of
guest interrupts where they correspond:

============  ==============================================  ========================================
stage         span                                            meaning
============  ==============================================  ========================================
``timer``     deadline -> timer IRQ entry                     the timer interrupt's delivery
``host_irq``  IRQ entry -> ``sched_wakeup``                   the handler, up to the callback's wakeup
``wait``      ``sched_wakeup`` -> ``sched_switch`` to it       the scheduler: who held the CPU
``user``      switch-in -> ``sys_exit``                       back to user space (where recorded)
============  ==============================================  ========================================

``latency_ns`` = (``sys_exit``, else switch-in) - deadline: what the thread measures. A timer that
expires while an interrupt that began earlier (for another timer) is still running is handled in
it: its ``timer`` stage is 0 and ``host_irq`` runs from the deadline. Where the IRQ
entry is not traced (x86's local APIC timer is not an ``irq_handler_entry``), the callback's
``hrtimer_expire_entry`` stands for it. A timer that expired before its thread got to sleep wakes
it on the CPU it runs on: no switch-in, the wakeup is where it goes on.

Without hrtimer events (``trace-cmd record -e sched -e irq``) a wakeup made inside a hard-IRQ handler
stands for a timer wakeup, and the handler's entry for the expiry.

Deadlines (``deadline_source``): ``hrtimer`` (the ``expires`` of the thread's own start: exact), or,
without ``hrtimer_start``, ``grid-fit``: an absolute periodic sleep's deadlines lie on a grid of its
interval, and every expiry's ``now`` lies at or after its grid point; the grid's phase is the k-th
lowest phase of the ``now`` values (k = max(3, 0.5 %)), so deadlines are the latest the evidence
allows (the few below it are early for their own grid point, not late for the one before).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import polars as pl

from kvmtrace.ingest.tables import EventTables, cpu_column, pid_column
from kvmtrace.model.clocks import MonoClock, mono_clock
from kvmtrace.model.hrtimers import timer_wakeups
from kvmtrace.model.interrupts import irq_context

WAKEUP_SCHEMA = {
    "tid": pl.Int32(), "cpu": pl.Int32(), "irq_cpu": pl.Int32(), "deadline_ns": pl.Int64(),
    "deadline_source": pl.String(), "irq_ns": pl.Int64(), "irq_name": pl.String(), "wakeup_ns": pl.Int64(),
    "switch_in_ns": pl.Int64(), "user_ns": pl.Int64(), "timer_ns": pl.Int64(), "host_irq_ns": pl.Int64(),
    "wait_ns": pl.Int64(), "user_stage_ns": pl.Int64(), "latency_ns": pl.Int64(), "w_idx": pl.UInt32(),
    "switch_idx": pl.UInt32(),
}
ROBUST_SHARE = 0.005
MIN_WAKEUPS = 50
EARLY_SHARE = 0.9  # of an interval: an expiry this far past a grid point is early for the next one


def irq_wakeups(t: EventTables, tids: pl.Series | None) -> pl.DataFrame:
    """Without hrtimer events: wakeups made inside a hard-IRQ handler stand for timer wakeups, the IRQ's
    entry for the expiry's ``now`` (TIMER_WAKEUP_SCHEMA, no starts)."""
    wake = t.table("sched_wakeup")
    if tids is not None:
        wake = wake.filter(pl.col("pid").is_in(tids.implode()))
    cpu = cpu_column(wake)
    wake = wake.select(pl.col("idx").alias("w_idx"), pl.col("ts").alias("w_ts"), "pid", pl.col(cpu).alias("ev_cpu"))
    irqs = irq_context(t).select(pl.col("cpu").alias("ev_cpu"), pl.col("idx").alias("x_idx"),
                                 pl.col("ts").alias("x_ts"), pl.col("end_idx").alias("x_end"))
    df = wake.sort("w_idx").join_asof(irqs, left_on="w_idx", right_on="x_idx", by="ev_cpu", strategy="backward",
                                      check_sortedness=False)
    df = df.filter(pl.col("x_idx").is_not_null(), pl.col("x_end").is_null() | (pl.col("x_end") > pl.col("w_idx")))
    return df.select(
        "w_idx", "w_ts", "pid", "ev_cpu", pl.lit(None, pl.UInt64).alias("hrtimer"), "x_idx", "x_ts",
        pl.col("x_ts").alias("now_ns"), pl.lit(None, pl.UInt32).alias("st_idx"), pl.lit(None, pl.Int64).alias("st_ts"),
        pl.lit(None, pl.Int32).alias("st_pid"), pl.lit(None, pl.Int64).alias("expires_ns"),
        pl.lit(None, pl.Boolean).alias("armed_late"))


def any_timer_wakeups(t: EventTables, tids: pl.Series | None, mono: MonoClock | None) -> pl.DataFrame:
    """Timer wakeups (TIMER_WAKEUP_SCHEMA): by hrtimer expiries when traced, else by hard IRQs."""
    return timer_wakeups(t, mono, tids) if t.has("hrtimer_expire_entry") else irq_wakeups(t, tids)


def own_sleeps(timer_wakeups: pl.DataFrame) -> pl.DataFrame:
    """The timer wakeups of threads from their own sleeps: the evidence of ``sleep_fits``."""
    return timer_wakeups.filter(pl.col("st_pid").is_null() | (pl.col("st_pid") == pl.col("pid")))


@dataclass(frozen=True)
class SleepFit:
    """Where one thread's deadlines come from: its hrtimer_start (``origin_ns`` None), or a grid of
    ``interval_ns`` through ``origin_ns`` fitted to its expiries (``grid_origin``)."""

    origin_ns: int | None = None
    interval_ns: int = 0

    @property
    def source(self) -> str:
        return "hrtimer" if self.origin_ns is None else "grid-fit"

    def deadlines(self, g: pl.DataFrame) -> pl.Series:
        if self.origin_ns is None:
            return g["expires_ns"].alias("deadline_ns")
        return pl.Series("deadline_ns", on_grid(g["now_ns"].to_numpy(), self.origin_ns, self.interval_ns))


def sleep_fits(sleeps: pl.DataFrame, intervals: dict[int, int] | None = None) -> dict[int, SleepFit]:
    """Per thread of ``sleeps`` (pid, now_ns, expires_ns: every timer wakeup, of a capture or of all its
    chunks), where its deadlines come from; threads with too few expiries to fit are left out."""
    fits = {}
    for (tid,), g in sleeps.group_by("pid", maintain_order=True):
        if g["expires_ns"].null_count() == 0:
            fits[int(tid)] = SleepFit()
        elif g.height >= MIN_WAKEUPS:
            now = g["now_ns"].to_numpy()
            interval = (intervals or {}).get(int(tid)) or period_of(now)
            fits[int(tid)] = SleepFit(grid_origin(now, interval), interval)
    return fits


def _raw(t: EventTables, tids: pl.Series | None, mono: MonoClock | None) -> pl.DataFrame:
    """Timer wakeups with IRQ, switch-in and return to user space (no deadlines yet)."""
    tw = own_sleeps(any_timer_wakeups(t, tids, mono))
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
    df = df.with_columns(pl.col("w_idx").shift(-1).over("pid", order_by="w_idx").alias("next_w"))
    ran_on = pl.col("switch_idx").is_null() | (pl.col("next_w").is_not_null()
                                                & (pl.col("switch_idx") > pl.col("next_w")))
    df = df.with_columns(pl.when(ran_on).then(pl.col("w_ts")).otherwise(pl.col("switch_in_ns")).alias("switch_in_ns"),
                         pl.when(ran_on).then(pl.col("w_idx")).otherwise(pl.col("switch_idx")).alias("switch_idx"),
                         pl.when(ran_on).then(pl.col("ev_cpu")).otherwise(pl.col("cpu")).alias("cpu"))
    return _with_user_return(t, df)


def _with_user_return(t: EventTables, df: pl.DataFrame) -> pl.DataFrame:
    """Adds user_ns: the thread's first sys_exit after its switch-in, before its next wakeup."""
    if not t.has("sys_exit"):
        return df.with_columns(pl.lit(None, pl.Int64).alias("user_ns"))
    exits = t.table("sys_exit")
    pid = pid_column(exits)
    ex = exits.select(pl.col(pid).alias("pid"), pl.col("idx").alias("u_idx"), pl.col("ts").alias("user_ns"))
    df = df.sort("switch_idx").join_asof(ex, left_on="switch_idx", right_on="u_idx", by="pid", strategy="forward",
                                         check_sortedness=False)
    ok = pl.col("next_w").is_null() | (pl.col("u_idx") < pl.col("next_w"))
    return df.with_columns(pl.when(ok).then(pl.col("user_ns")).alias("user_ns"))


def grid_deadlines(now_ns: np.ndarray, interval_ns: int) -> np.ndarray:
    """Deadlines of an absolute periodic sleep from its expiries' ``now``: the latest grid the evidence allows."""
    return on_grid(now_ns, grid_origin(now_ns, interval_ns), interval_ns)


def grid_origin(now_ns: np.ndarray, interval_ns: int) -> int:
    """A point of the latest grid of ``interval_ns`` the expiries ``now_ns`` allow (``grid_deadlines``)."""
    low = int(now_ns.min())
    phase = (now_ns - low) % interval_ns
    # phases lie on a circle: start it after its widest empty arc, so a cluster around 0 does not wrap
    ring = np.sort(phase)
    gaps = np.diff(np.append(ring, ring[0] + interval_ns))
    start = int(ring[(int(np.argmax(gaps)) + 1) % len(ring)])
    phase = (phase - start) % interval_ns
    k = min(len(phase), max(3, math.ceil(ROBUST_SHARE * len(phase))))
    return low + start + int(np.sort(phase)[k - 1])


def on_grid(now_ns: np.ndarray, origin_ns: int, interval_ns: int) -> np.ndarray:
    """Each expiry's grid point: the one at or before it, or, within the last tenth of an interval
    before the next one, that next one (the expiry came a little early)."""
    late = (now_ns - origin_ns) % interval_ns
    late = np.where(late > EARLY_SHARE * interval_ns, late - interval_ns, late)
    return now_ns - late


def period_of(now_ns: np.ndarray) -> int:
    """A periodic thread's interval: the median spacing of its expiries, to the microsecond."""
    return int(round(float(np.median(np.diff(np.sort(now_ns)))) / 1000) * 1000)


def thread_wakeups(t: EventTables, tids: pl.Series | None = None, intervals: dict[int, int] | None = None,
                   fitted: tuple[MonoClock | None, dict[int, SleepFit]] | None = None) -> pl.DataFrame:
    """Every timer wakeup of the threads (WAKEUP_SCHEMA), by deadline; ``intervals`` (tid -> ns, from
    cyclictest's own output) is used where the deadline has to be fitted. ``fitted``: the mono clock
    and the threads' fits of the whole capture when ``t`` is one time chunk of it."""
    if not t.has("sched_switch"):
        return pl.DataFrame(schema=WAKEUP_SCHEMA)
    mono, fits = fitted if fitted is not None else (mono_clock(t), None)
    df = _raw(t, tids, mono)
    if df.height == 0:
        return pl.DataFrame(schema=WAKEUP_SCHEMA)
    if fits is None:
        fits = sleep_fits(df, intervals)
    parts = []
    for (tid,), g in df.group_by("pid", maintain_order=True):  # one fit per thread (a handful of threads)
        fit = fits.get(int(tid))
        if fit is not None:
            parts.append(g.with_columns(fit.deadlines(g), pl.lit(fit.source).alias("src")))
    if not parts:
        return pl.DataFrame(schema=WAKEUP_SCHEMA)
    df = pl.concat(parts)
    irq = pl.coalesce("irq_ns", "x_ts")
    back = pl.coalesce("user_ns", "switch_in_ns")
    return (df.select(pl.col("pid").alias("tid"), "cpu", pl.col("ev_cpu").alias("irq_cpu"), "deadline_ns",
                      pl.col("src").alias("deadline_source"), irq.alias("irq_ns"), "irq_name",
                      pl.col("w_ts").alias("wakeup_ns"), "switch_in_ns", "user_ns",
                      (irq - pl.col("deadline_ns")).clip(lower_bound=0).alias("timer_ns"),
                      (pl.col("w_ts") - pl.max_horizontal(irq, "deadline_ns")).alias("host_irq_ns"),
                      (pl.col("switch_in_ns") - pl.col("w_ts")).alias("wait_ns"),
                      (pl.col("user_ns") - pl.col("switch_in_ns")).alias("user_stage_ns"),
                      (back - pl.col("deadline_ns")).alias("latency_ns"), "w_idx", "switch_idx")
            .cast(WAKEUP_SCHEMA).sort("deadline_ns"))  # type: ignore[arg-type]


def measuring_threads(t: EventTables, known: list[int] | None = None) -> pl.Series:
    """The threads to explain: ``known`` (cyclictest's own tids) when given, else every real-time thread
    (sched_switch priority < 100) with at least MIN_WAKEUPS timer wakeups."""
    if known:
        return pl.Series("tid", known, dtype=pl.Int32)
    tw = any_timer_wakeups(t, None, mono_clock(t))
    if tw.height == 0 or not t.has("sched_switch"):
        return pl.Series("tid", [], dtype=pl.Int32)
    return woken_enough(tw.group_by("pid").len(), realtime_threads(t.table("sched_switch")))


def realtime_threads(sched_switch: pl.DataFrame) -> set[int]:
    """The threads switched in at a real-time priority."""
    return set(sched_switch.filter(pl.col("next_prio") < 100)["next_pid"].unique().to_list())


def woken_enough(counts: pl.DataFrame, realtime: set[int]) -> pl.Series:
    """The real-time threads of ``counts`` (pid, len: timer wakeups) woken at least MIN_WAKEUPS times."""
    enough = counts.filter(pl.col("len") >= MIN_WAKEUPS, pl.col("pid").is_in(list(realtime)))
    return enough.sort("pid")["pid"].cast(pl.Int32).rename("tid")
