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
from kvmtrace.model.chunking import Evidence
from kvmtrace.model.interrupts import irq_context

MONO_CLOCKS = ("mono", "mono_raw")
MIN_EXPIRIES = 20  # fewer hrtimer expiries than this give no usable offset


EVIDENCE_SCHEMA = {"anchor_ns": pl.Int64(), "value": pl.Int64()}


@dataclass(frozen=True)
class MonoEvidence(Evidence):
    """Bounds on the mono clock's offset, one row per hrtimer expiry (``mono_evidence``)."""

    upper: pl.DataFrame
    lower: pl.DataFrame


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
    return mono_from(t.meta.clock, mono_evidence(t))


def mono_evidence(t: EventTables) -> MonoEvidence:
    """The brackets of every hrtimer expiry (``mono_clock``): ``upper`` (anchor_ns, value) from
    ``ts - now``, ``lower`` from ``irq_ts - now`` where the expiry ran inside a hard IRQ; anchored at
    the expiry's time, so the evidence of time chunks adds up to the whole capture's."""
    empty = pl.DataFrame(schema=EVIDENCE_SCHEMA)
    if (t.meta.clock or "") in MONO_CLOCKS or not t.has("hrtimer_expire_entry") \
            or "now" not in t.table("hrtimer_expire_entry").columns:
        return MonoEvidence(empty, empty)
    x = t.table("hrtimer_expire_entry").select("cpu", "idx", "ts", pl.col("now").cast(pl.Int64))
    upper = x.select(pl.col("ts").alias("anchor_ns"), (pl.col("ts") - pl.col("now")).alias("value"))
    lower = empty
    if t.has("irq_handler_entry") and t.has("irq_handler_exit"):
        irqs = irq_context(t).select("cpu", pl.col("idx").alias("irq_idx"), pl.col("ts").alias("irq_ts"),
                                     pl.col("end_idx").alias("irq_end_idx"))
        inside = x.sort("idx").join_asof(irqs, left_on="idx", right_on="irq_idx", by="cpu", strategy="backward",
                                         check_sortedness=False)
        lower = inside.filter(pl.col("irq_end_idx") > pl.col("idx")).select(
            pl.col("ts").alias("anchor_ns"), (pl.col("irq_ts") - pl.col("now")).alias("value"))
    return MonoEvidence(upper.cast(EVIDENCE_SCHEMA), lower.cast(EVIDENCE_SCHEMA))  # type: ignore[arg-type]


def mono_from(clock: str | None, ev: MonoEvidence) -> MonoClock | None:
    """The clock ``mono_clock`` describes, from its evidence (of one capture, or of its chunks together)."""
    if (clock or "") in MONO_CLOCKS:
        return MonoClock(0, 0, "mono trace clock")
    if ev.upper.height < MIN_EXPIRIES:
        return None
    upper = _robust(ev.upper["value"], lowest=True)
    lower = _robust(ev.lower["value"], lowest=False) if ev.lower.height >= MIN_EXPIRIES else None
    if lower is None or lower > upper:
        typical = int(ev.upper["value"].quantile(0.5, interpolation="lower"))  # type: ignore[arg-type]
        return MonoClock(upper, typical - upper, "hrtimer_expire_entry now (upper bound)")
    return MonoClock((lower + upper) // 2, (upper - lower + 1) // 2, "hrtimer_expire_entry now, bracketed by the IRQ")


def _robust(values: pl.Series, lowest: bool) -> int:
    """The 0.1 % (or 99.9 %) quantile: the tightest value no isolated outlier sets."""
    return int(values.quantile(0.001 if lowest else 0.999, interpolation="lower" if lowest else "higher"))  # type: ignore[arg-type]
