"""The guest's programmed timer deadline of each blocked-path timer interrupt, in trace time.

Two sources, best first:
- ``hrtimer``: KVM arms a host hrtimer for the blocked vCPU's deadline; the ``hrtimer_start``
  of the hrtimer that expires in the host IRQ gives ``expires`` in CLOCK_MONOTONIC, which is the
  trace time when the capture used the ``mono`` clock. Exact.
- ``cval-fit``: ``kvm_timer_save_state`` logs the guest timer's CVAL (counter ticks) when the
  vCPU blocks. Fitting ticks to trace time over all interrupts (slope by least squares, snapped
  to a common counter frequency when within 0.2 %; intercept on the lower envelope, so the
  fastest interrupt has ``timer_ns`` 0) gives the deadline up to that minimum latency.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from kvmtrace.ingest.tables import EventTables
from kvmtrace.model.interrupts import TIMER_IDX_TO_IRQ

COMMON_COUNTER_HZ = (1e9, 100e6, 62.5e6, 54e6, 50e6, 25e6, 24e6, 19.2e6, 12.5e6, 10e6, 1e6)
MONO_CLOCKS = ("mono",)


@dataclass
class CounterFit:
    """trace_ns = ns_per_tick * ticks + offset_ns, fitted on blocked-path interrupts."""

    ns_per_tick: float
    offset_ns: float
    samples: int
    snapped_hz: float | None

    def describe(self) -> str:
        hz = self.snapped_hz or 1e9 / self.ns_per_tick
        return (f"counter at {hz / 1e6:g} MHz fitted to the trace clock on {self.samples} interrupts "
                f"({'snapped to a common frequency' if self.snapped_hz else 'free fit'})")


def with_deadlines(t: EventTables, df: pl.DataFrame) -> tuple[pl.DataFrame, str]:
    """Adds deadline_ns, deadline_source, timer_ns and latency_ns; returns a sentence on the source."""
    blocked = df.filter(pl.col("path") == "blocked")
    exact = _hrtimer_deadlines(t, blocked)
    if exact is not None:
        return _apply(df, exact, "hrtimer"), "deadlines from the host hrtimer armed for each blocked vCPU (exact)"
    cval = _saved_cval(t, blocked)
    fit = fit_counter(cval) if cval is not None else None
    if fit is None or cval is None:
        none = df.with_columns(pl.lit(None, pl.Int64).alias("deadline_ns"),
                               pl.lit(None, pl.String).alias("deadline_source"),
                               pl.lit(None, pl.Int64).alias("timer_ns"), pl.lit(None, pl.Int64).alias("latency_ns"))
        return none, ("guest deadlines unknown: record with the mono clock and timer:hrtimer_start/"
                      "hrtimer_expire_entry, or with kvm:kvm_timer_save_state")
    deadlines = cval.with_columns(
        (pl.col("cval").cast(pl.Float64) * fit.ns_per_tick + fit.offset_ns).round().cast(pl.Int64).alias("deadline_ns"))
    return _apply(df, deadlines.select("t_idx", "deadline_ns"), "cval-fit"), (
        "deadlines approximate: " + fit.describe())


def _apply(df: pl.DataFrame, deadlines: pl.DataFrame, source: str) -> pl.DataFrame:
    out = df.drop("deadline_ns", "deadline_source", "timer_ns", "latency_ns", strict=False).join(
        deadlines.select("t_idx", "deadline_ns"), on="t_idx", how="left")
    timer = pl.col("t_ns") - pl.col("deadline_ns")
    return out.with_columns(
        pl.when(pl.col("deadline_ns").is_not_null()).then(pl.lit(source)).alias("deadline_source"),
        timer.alias("timer_ns"), (timer + pl.col("total_ns")).alias("latency_ns"))


def _saved_cval(t: EventTables, blocked: pl.DataFrame) -> pl.DataFrame | None:
    """t_idx, cval: the timer state KVM saved for the vCPU before it blocked (enabled, unmasked)."""
    if not t.has("kvm_timer_save_state") or blocked.height == 0:
        return None
    saves = (t.table("kvm_timer_save_state")
             .filter((pl.col("ctl") & 1) == 1, (pl.col("ctl") & 2) == 0)
             .with_columns(pl.col("timer_idx").replace_strict(TIMER_IDX_TO_IRQ, default=-1).cast(pl.Int32).alias("irq"))
             .select(pl.col("pid").alias("vcpu_tid"), "irq", pl.col("idx").alias("save_idx"), "cval"))
    joined = blocked.select("vcpu_tid", "irq", "t_idx", "w_idx").sort("w_idx").join_asof(
        saves, left_on="w_idx", right_on="save_idx", by=["vcpu_tid", "irq"], strategy="backward",
        check_sortedness=False)
    return joined.filter(pl.col("cval").is_not_null()).join(blocked.select("t_idx", "t_ns"), on="t_idx")


def fit_counter(pairs: pl.DataFrame) -> CounterFit | None:
    """Fit trace time = a * cval + b on (cval, t_ns) pairs; None with fewer than 10 pairs."""
    if pairs.height < 10:
        return None
    ticks = pairs["cval"].cast(pl.Float64).to_numpy()
    ts = pairs["t_ns"].cast(pl.Float64).to_numpy()
    t0, c0 = ts.min(), ticks.min()
    slope, _ = np.polyfit(ticks - c0, ts - t0, 1)
    snapped = next((hz for hz in COMMON_COUNTER_HZ if abs(1e9 / hz - slope) / slope < 2e-3), None)
    if snapped:
        slope = 1e9 / snapped
    offset = float(np.min(ts - slope * ticks))
    return CounterFit(float(slope), offset, pairs.height, snapped)


def _hrtimer_deadlines(t: EventTables, blocked: pl.DataFrame) -> pl.DataFrame | None:
    """t_idx, deadline_ns from hrtimer_start.expires of the hrtimer expiring in the host IRQ (mono clock only)."""
    if t.meta.clock not in MONO_CLOCKS or not (t.has("hrtimer_expire_entry") and t.has("hrtimer_start")):
        return None
    expire = t.table("hrtimer_expire_entry").select("cpu", pl.col("idx").alias("x_idx"), "hrtimer")
    starts = t.table("hrtimer_start").select(pl.col("idx").alias("st_idx"), "hrtimer",
                                             pl.col("expires").cast(pl.Int64).alias("deadline_ns"))
    b = blocked.filter(pl.col("host_irq").is_not_null()).select(
        "t_idx", "w_idx", pl.col("wait_cpu").alias("cpu"))
    # the hrtimer expiring last before the wakeup, on the waking CPU, within the host IRQ
    b = b.with_columns(t.at(pl.col("w_idx"), "cpu").alias("cpu"))
    hit = b.sort("w_idx").join_asof(expire, left_on="w_idx", right_on="x_idx", by="cpu", strategy="backward",
                                    check_sortedness=False)
    hit = hit.filter(pl.col("x_idx") > pl.col("t_idx"))
    hit = hit.sort("x_idx").join_asof(starts, left_on="x_idx", right_on="st_idx", by="hrtimer",
                                      strategy="backward", check_sortedness=False)
    found = hit.filter(pl.col("deadline_ns").is_not_null()).select("t_idx", "deadline_ns")
    return found if found.height else None
