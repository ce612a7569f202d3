"""CLOCK_MONOTONIC in trace time: where hrtimer ``expires``/``now`` values sit on the capture's clock.

hrtimer events carry CLOCK_MONOTONIC values (``hrtimer_start.expires``, ``hrtimer_expire_entry.now``).
With the ``mono`` trace clock they are trace time already. With another clock (``local``, the
default, is sched_clock) each ``hrtimer_expire_entry`` pairs a monotonic ``now`` with its own trace
timestamp a moment later, so ``ts - now`` measured over thousands of expiries gives the offset
between the two clocks; its lowest values are the tightest (the tracepoint fires a few
microseconds after ``now`` was read). Both clocks count the same hardware counter on arm64 and
x86, so the offset is constant over a capture.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from kvmtrace.ingest.tables import EventTables
from kvmtrace.model.interrupts import irq_context

MONO_CLOCKS = ("mono", "mono_raw")
MIN_EXPIRIES = 20  # fewer hrtimer expiries than this give no usable offset


@dataclass(frozen=True)
class MonoClock:
    """trace_ns = mono_ns + offset_ns; ``spread_ns`` bounds the error (0 with the mono trace clock)."""

    offset_ns: int
    spread_ns: int
    source: str  # "mono trace clock" or "hrtimer_expire_entry now"

    def to_trace(self, mono: pl.Expr) -> pl.Expr:
        return mono.cast(pl.Int64) + self.offset_ns

    def to_dict(self) -> dict[str, object]:
        return {"offset_ns": self.offset_ns, "spread_ns": self.spread_ns, "source": self.source}


def mono_clock(t: EventTables) -> MonoClock | None:
    """The monotonic clock on the trace clock, or None when the capture cannot say.

    Without the mono trace clock, each hard-IRQ hrtimer expiry brackets the offset: the handler's
    ``irq_handler_entry`` came before ``now`` was read and ``hrtimer_expire_entry`` after, so
    ``irq_ts - now <= offset <= ts - now``. The offset is the middle of the tightest bracket that
    no isolated expiry moves; ``spread_ns`` is its half width."""
    if (t.meta.clock or "") in MONO_CLOCKS:
        return MonoClock(0, 0, "mono trace clock")
    if not t.has("hrtimer_expire_entry") or "now" not in t.table("hrtimer_expire_entry").columns:
        return None
    x = t.table("hrtimer_expire_entry").select("cpu", "idx", "ts", pl.col("now").cast(pl.Int64))
    if x.height < MIN_EXPIRIES:
        return None
    upper = _robust(x["ts"] - x["now"], lowest=True)
    lower = None
    if t.has("irq_handler_entry") and t.has("irq_handler_exit"):
        irqs = irq_context(t).select("cpu", pl.col("idx").alias("irq_idx"), pl.col("ts").alias("irq_ts"),
                                     pl.col("end_idx").alias("irq_end_idx"))
        inside = x.sort("idx").join_asof(irqs, left_on="idx", right_on="irq_idx", by="cpu", strategy="backward",
                                         check_sortedness=False)
        inside = inside.filter(pl.col("irq_end_idx") > pl.col("idx"))
        if inside.height >= MIN_EXPIRIES:
            lower = _robust(inside["irq_ts"] - inside["now"], lowest=False)
    if lower is None or lower > upper:
        typical = int((x["ts"] - x["now"]).quantile(0.5, interpolation="lower"))  # type: ignore[arg-type]
        return MonoClock(upper, typical - upper, "hrtimer_expire_entry now (upper bound)")
    return MonoClock((lower + upper) // 2, (upper - lower + 1) // 2, "hrtimer_expire_entry now, bracketed by the IRQ")


def _robust(values: pl.Series, lowest: bool) -> int:
    """The 0.1 % (or 99.9 %) quantile: the tightest value no isolated outlier sets."""
    return int(values.quantile(0.001 if lowest else 0.999, interpolation="lower" if lowest else "higher"))  # type: ignore[arg-type]
