"""The guest's programmed timer deadline of each blocked-path timer interrupt, in trace time.

A vCPU that blocks in WFI leaves two traces of its deadline on the host: ``kvm_timer_save_state``
logs the guest timer's CVAL (counter ticks) and its CTL (ENABLE, IMASK, ISTATUS bits read from the
hardware), and KVM arms a host hrtimer, its *background timer*, whose expiry wakes the vCPU
(``hrtimer_start`` with ``expires`` in CLOCK_MONOTONIC; :mod:`kvmtrace.model.clocks` puts that on the
trace clock). Sources, best first, per interrupt (``deadline_source``):

- ``hrtimer``: the ``expires`` of the background timer whose expiry callback woke the vCPU (the
  ``hrtimer_expire_entry .. hrtimer_expire_exit`` that encloses the ``sched_wakeup``), armed while
  the deadline was still ahead. Exact.
- ``cval``: the saved CVAL on the trace clock through the counter map that the background timers
  themselves give (each one armed ahead of its deadline pairs a CVAL with its deadline in
  nanoseconds). Exact to a counter tick; used where the timer was armed after the deadline had
  already passed (KVM then arms it for "now", later than the guest asked) or where no expiry was
  traced.
- ``hrtimer-late``: such a late-armed timer without a counter map: the deadline was at or before
  ``expires``; the latency is a lower bound.
- ``cval-fit``: no hrtimer events (``trace-cmd record -e kvm -e sched -e irq``): the counter map is
  fitted from the physics of the path. Every host timer IRQ that woke a blocked vCPU came after
  its deadline, and every save with ISTATUS set came after its deadline: each is an upper bound on
  the map's intercept; saves with ISTATUS clear came before theirs: lower bounds. The intercept is
  the lowest upper bound that no isolated pair can move (the k-th lowest), so deadlines are the
  latest the evidence allows; ``deadline_uncertainty_ns`` says how much earlier they may be (the
  gap to the highest lower bound), or is null when the lower bounds contradict the upper ones
  (emulated timers set ISTATUS late).

Pairs are used only when the saved CVAL still held at the wakeup: the save is the last one of
that timer before the wakeup and the vCPU did not enter the guest in between (it could have
reprogrammed the timer). Wherever two sources exist they are compared (``checks``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

from kvmtrace.ingest.tables import EventTables, pid_column
from kvmtrace.model.chunking import Evidence
from kvmtrace.model.clocks import MonoClock, mono_clock
from kvmtrace.model.hrtimers import timer_wakeups
from kvmtrace.model.interrupts import TIMER_IDX_TO_IRQ

COMMON_COUNTER_HZ = (1e9, 100e6, 62.5e6, 54e6, 50e6, 25e6, 24e6, 19.2e6, 12.5e6, 10e6, 1e6)
SNAP_TOLERANCE = 2e-3
CTL_ENABLE, CTL_IMASK, CTL_ISTATUS = 1, 2, 4
MIN_PAIRS = 10
ROBUST_SHARE = 0.005  # bounds ignore their most extreme 0.5 %: bad pairs below that share cannot move them
CALIBRATION_OUTLIER_NS = 10_000  # a calibration pair further than this from the median is not the same map
LOWER_BOUND_CONTRADICTIONS = 0.01  # more lower bounds above the upper bound than this: ISTATUS unreliable

HELD_SCHEMA = {"t_idx": pl.UInt32(), "vcpu_tid": pl.Int32(), "irq": pl.Int32(), "cval": pl.UInt64(),
               "istatus": pl.Boolean()}
CALIBRATION_SCHEMA = {"anchor_ns": pl.Int64(), "cval": pl.UInt64(), "expires_ns": pl.Int64()}
DEADLINE_SCHEMA = {"t_idx": pl.UInt32(), "deadline_ns": pl.Int64(), "deadline_source": pl.String(),
                   "deadline_uncertainty_ns": pl.Int64()}

DEADLINES_UNKNOWN_NOTE = ("guest deadlines unknown: record kvm:kvm_timer_save_state, or timer:hrtimer_start, "
                          "hrtimer_expire_entry and hrtimer_expire_exit")


@dataclass
class CounterMap:
    """trace_ns = ns_per_tick * ticks + offset_ns for one guest timer's CVAL."""

    ns_per_tick: float
    offset_ns: float
    samples: int
    snapped_hz: float | None
    how: str  # "calibrated on background timers" or "fitted"
    residual_p99_ns: float | None = None
    uncertainty_ns: int | None = None  # fitted only: how much earlier the deadlines may be (None: one-sided)
    bounds: dict[str, Any] = field(default_factory=dict)

    def deadline(self, cval: pl.Expr) -> pl.Expr:
        return (cval.cast(pl.Float64) * self.ns_per_tick + self.offset_ns).round().cast(pl.Int64)

    def describe(self) -> str:
        hz = self.snapped_hz or 1e9 / self.ns_per_tick
        freq = f"counter at {hz / 1e6:g} MHz ({'a common frequency' if self.snapped_hz else 'free fit'})"
        if self.how == "calibrated":
            return (f"{freq} mapped to the trace clock by {self.samples:,} background timers armed ahead of "
                    f"their deadlines (residual p99 {self.residual_p99_ns or 0:.0f} ns)")
        unc = (f"deadlines may be up to {self.uncertainty_ns / 1e3:.1f} us earlier" if self.uncertainty_ns is not None
               else "deadlines are the latest the evidence allows; how much earlier they were is unknown "
                    "(the saves' ISTATUS contradicts the interrupts: an emulated timer)")
        return (f"{freq} fitted to the trace clock on {self.samples:,} interrupts and saved timer states: "
                f"intercept on the lowest upper bound ({unc})")

    def to_dict(self) -> dict[str, Any]:
        return {"how": self.how, "ns_per_tick": self.ns_per_tick, "offset_ns": self.offset_ns,
                "counter_hz": self.snapped_hz or 1e9 / self.ns_per_tick, "snapped": self.snapped_hz is not None,
                "samples": self.samples, "residual_p99_ns": self.residual_p99_ns,
                "uncertainty_ns": self.uncertainty_ns, **self.bounds}


@dataclass
class Deadlines:
    """Per-interrupt deadlines (``table``: DEADLINE_SCHEMA), how they were found, and the cross-checks
    (``compared``: check name -> t_idx, a, b, the two deadlines of each interrupt both sources know)."""

    table: pl.DataFrame
    counter: CounterMap | None
    mono: MonoClock | None
    compared: dict[str, pl.DataFrame] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    held: pl.DataFrame = field(default_factory=lambda: pl.DataFrame(schema=HELD_SCHEMA))  # the CVAL behind each

    @property
    def checks(self) -> list[dict[str, Any]]:
        """How far the two sources of each check lie apart (b - a), over the interrupts both know."""
        return [c for name, j in self.compared.items() if (c := check_stats(name, j)) is not None]

    def to_dict(self) -> dict[str, Any]:
        sources = self.table.group_by("deadline_source").len().sort("deadline_source")
        return {"sources": {str(s): int(n) for s, n in sources.iter_rows() if s is not None},
                "counter": self.counter.to_dict() if self.counter else None,
                "mono_clock": self.mono.to_dict() if self.mono else None,
                "checks": self.checks}


@dataclass(frozen=True)
class DeadlineMaps:
    """The capture-wide clock maps deadlines come from: from one capture's events, or from the evidence
    of all its time chunks together (analysis/chunked.py)."""

    mono: MonoClock | None
    calibrated: CounterMap | None
    fitted: CounterMap | None
    fit_is_source: bool  # no hrtimer or calibrated deadline anywhere: the fitted map gives them


# ---------------------------------------------------------------------------------------------- events


def timer_saves(t: EventTables, vcpus: pl.Series) -> pl.DataFrame:
    """Saved guest timer states: vcpu_tid, s_idx, s_ts, irq, cval, can_fire (enabled, unmasked), istatus."""
    schema = {"vcpu_tid": pl.Int32(), "s_idx": pl.UInt32(), "s_ts": pl.Int64(), "irq": pl.Int32(),
              "cval": pl.UInt64(), "can_fire": pl.Boolean(), "istatus": pl.Boolean()}
    if not t.has("kvm_timer_save_state"):
        return pl.DataFrame(schema=schema)
    ctl = pl.col("ctl").cast(pl.Int64)
    return (t.table("kvm_timer_save_state").filter(pl.col("pid").is_in(vcpus.implode()))
            .select(pl.col("pid").alias("vcpu_tid"), pl.col("idx").alias("s_idx"), pl.col("ts").alias("s_ts"),
                    pl.col("timer_idx").replace_strict(TIMER_IDX_TO_IRQ, default=-1).alias("irq"), "cval",
                    (((ctl & CTL_ENABLE) != 0) & ((ctl & CTL_IMASK) == 0)).alias("can_fire"),
                    ((ctl & CTL_ISTATUS) != 0).alias("istatus"))
            .cast(schema))  # type: ignore[arg-type]


def _last_entry_before(t: EventTables, df: pl.DataFrame, at: str) -> pl.DataFrame:
    """Adds ``last_entry_idx``: the vCPU's last kvm_entry before the row at ``at`` (null: none)."""
    entries = t.table("kvm_entry")
    pid = pid_column(entries)
    e = entries.select(pl.col(pid).alias("vcpu_tid"), pl.col("idx").alias("last_entry_idx"))
    return df.sort(at).join_asof(e, left_on=at, right_on="last_entry_idx", by="vcpu_tid", strategy="backward",
                                 check_sortedness=False)


def held_cvals(t: EventTables, blocked: pl.DataFrame, saves: pl.DataFrame) -> pl.DataFrame:
    """t_idx, cval, istatus of each blocked (or preempted) interrupt whose timer's last save still held
    at the wakeup (or switch-in)."""
    if saves.height == 0 or not t.has("kvm_entry"):
        return pl.DataFrame(schema=HELD_SCHEMA)
    fire = saves.filter("can_fire").drop("can_fire")
    # blocked: the wakeup; preempted: the switch-in (the save was made when the thread was put)
    ref = blocked.select("vcpu_tid", "irq", "t_idx", pl.coalesce("w_idx", "switch_idx").alias("ref_idx"))
    df = ref.sort("ref_idx").join_asof(fire, left_on="ref_idx", right_on="s_idx", by=["vcpu_tid", "irq"],
                                       strategy="backward", check_sortedness=False)
    df = _last_entry_before(t, df.filter(pl.col("s_idx").is_not_null()), "ref_idx")
    held = pl.col("last_entry_idx").is_null() | (pl.col("last_entry_idx") < pl.col("s_idx"))
    return df.filter(held).select(list(HELD_SCHEMA)).cast(HELD_SCHEMA)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------- maps


def snap_slope(slope: float) -> tuple[float, float | None]:
    """ns per tick, snapped to a common counter frequency when within 0.2 %."""
    hz = next((h for h in COMMON_COUNTER_HZ if abs(1e9 / h - slope) / slope < SNAP_TOLERANCE), None)
    return (1e9 / hz, hz) if hz else (slope, None)


def _slope(ticks: np.ndarray, ns: np.ndarray) -> float:
    t0, c0 = float(ns.min()), float(ticks.min())
    slope, _ = np.polyfit(ticks - c0, ns - t0, 1)
    return float(slope)


def calibration_pairs(t: EventTables, bg: pl.DataFrame, saves: pl.DataFrame) -> pl.DataFrame:
    """(anchor_ns, cval, expires_ns) of each background timer armed ahead of its deadline while the
    vtimer's saved CVAL held: the evidence ``calibrate`` fits, anchored at the arming."""
    if bg.height == 0 or saves.height == 0:
        return pl.DataFrame(schema=CALIBRATION_SCHEMA)
    ahead = bg.filter(~pl.col("armed_late")).select("vcpu_tid", "st_idx", "st_ts", "expires_ns")
    vtimer = saves.filter("can_fire", pl.col("irq") == 27).drop("irq", "can_fire")
    pairs = ahead.sort("st_idx").join_asof(vtimer, left_on="st_idx", right_on="s_idx", by="vcpu_tid",
                                           strategy="backward", check_sortedness=False)
    pairs = _last_entry_before(t, pairs.filter(pl.col("s_idx").is_not_null()), "st_idx")
    pairs = pairs.filter(pl.col("last_entry_idx").is_null() | (pl.col("last_entry_idx") < pl.col("s_idx")),
                         ~pl.col("istatus"))
    return pairs.sort("st_idx").select(pl.col("st_ts").alias("anchor_ns"), "cval", "expires_ns").cast(
        CALIBRATION_SCHEMA)  # type: ignore[arg-type]


def calibrate(pairs: pl.DataFrame) -> CounterMap | None:
    """The vtimer's CVAL -> trace clock map from background timers armed ahead of their deadlines."""
    if pairs.height < MIN_PAIRS:
        return None
    ticks = pairs["cval"].cast(pl.Float64).to_numpy()
    ns = pairs["expires_ns"].cast(pl.Float64).to_numpy()
    per_tick, hz = snap_slope(_slope(ticks, ns))
    resid = ns - per_tick * ticks
    keep = np.abs(resid - np.median(resid)) <= CALIBRATION_OUTLIER_NS  # another timer armed for this vCPU
    if keep.sum() < MIN_PAIRS:
        return None
    # KVM reads the counter, then the clock: expires lands late by the time between the two reads
    offset = kth(resid[keep], lowest=True)
    spread = float(np.percentile(resid[keep] - offset, 99))
    return CounterMap(per_tick, offset, int(keep.sum()), hz, "calibrated", round(spread, 1),
                      bounds={"rejected_pairs": int((~keep).sum())})


def kth(values: np.ndarray, lowest: bool) -> float:
    """The k-th lowest (or highest) value, k = max(3, 0.5 % of them): no isolated value moves it."""
    k = min(len(values), max(3, math.ceil(ROBUST_SHARE * len(values))))
    at = k - 1 if lowest else len(values) - k
    return float(np.partition(values, at)[at])  # that one value in sorted place, not a whole sort


def host_timer_irq(blocked: pl.DataFrame) -> str | None:
    """The host's timer interrupt: the handler most blocked vCPUs are woken in (``arch_timer`` on arm64).
    Wakeups in other handlers (IPIs relaying a remote wakeup, device interrupts) are not the timer's."""
    named = blocked.filter(pl.col("host_irq").is_not_null(), ~pl.col("host_irq").str.starts_with("kvm guest"))
    if named.height == 0:
        return None
    return str(named.group_by("host_irq").len().sort(["len", "host_irq"], descending=[True, False])["host_irq"][0])


@dataclass(frozen=True)
class FitEvidence(Evidence):
    """What ``fit_counter`` fits, anchored in time so that chunks add up: ``blocked`` (anchor_ns,
    host_irq) of every blocked-path timer interrupt, ``pairs`` (anchor_ns, host_irq, cval) of those
    whose vtimer CVAL held, ``saves`` (anchor_ns, cval, istatus) of the vtimer saves that could fire."""

    blocked: pl.DataFrame
    pairs: pl.DataFrame
    saves: pl.DataFrame


def fit_evidence(blocked: pl.DataFrame, held: pl.DataFrame, saves: pl.DataFrame) -> FitEvidence:
    """The evidence of ``fit_counter`` in one capture (or chunk), in event order."""
    b = blocked.sort("t_idx").select(pl.col("t_ns").alias("anchor_ns"), "host_irq")
    pairs = (held.filter(pl.col("irq") == 27).join(blocked.select("t_idx", "t_ns", "host_irq"), on="t_idx")
             .sort("t_idx").select(pl.col("t_ns").alias("anchor_ns"), "host_irq", "cval"))
    vt = saves.filter("can_fire", pl.col("irq") == 27).sort("s_idx").select(
        pl.col("s_ts").alias("anchor_ns"), "cval", "istatus")
    return FitEvidence(b, pairs, vt)


def fit_counter(ev: FitEvidence) -> CounterMap | None:
    """The vtimer's CVAL -> trace clock map from the physics of the path (module docstring)."""
    timer_irq = host_timer_irq(ev.blocked)
    if timer_irq is None:
        return None
    pairs = ev.pairs.filter(pl.col("host_irq") == timer_irq)
    if pairs.height < MIN_PAIRS:
        return None
    ticks = pairs["cval"].cast(pl.Float64).to_numpy()
    ns = pairs["anchor_ns"].cast(pl.Float64).to_numpy()
    resid0 = ns - _slope(ticks, ns) * ticks
    low = resid0 <= np.percentile(resid0, 90)  # the latency tail does not tilt the slope
    per_tick, hz = snap_slope(_slope(ticks[low], ns[low]))
    vt = ev.saves
    save_resid = (vt["anchor_ns"].cast(pl.Float64).to_numpy() - per_tick * vt["cval"].cast(pl.Float64).to_numpy())
    expired = vt["istatus"].to_numpy()
    upper_values = np.concatenate([ns - per_tick * ticks, save_resid[expired]])
    upper = kth(upper_values, lowest=True)
    lower_values = save_resid[~expired]
    lower = kth(lower_values, lowest=False) if len(lower_values) else None
    contradicted = float((lower_values > upper).mean()) if len(lower_values) else 0.0
    uncertainty = None
    if lower is not None and contradicted <= LOWER_BOUND_CONTRADICTIONS and lower <= upper:
        uncertainty = round(upper - lower)
    bounds = {"timer_irq": timer_irq, "interrupts": pairs.height, "expired_saves": int(expired.sum()),
              "pending_saves": int((~expired).sum()), "lower_bounds_above_upper": round(contradicted, 4)}
    return CounterMap(per_tick, upper, pairs.height, hz, "fitted", uncertainty_ns=uncertainty, bounds=bounds)


# ---------------------------------------------------------------------------------------------- deadlines


def _rows(df: pl.DataFrame, source: str, uncertainty: pl.Expr) -> pl.DataFrame:
    return df.select("t_idx", "deadline_ns", pl.lit(source).alias("deadline_source"),
                     uncertainty.cast(pl.Int64).alias("deadline_uncertainty_ns")).cast(DEADLINE_SCHEMA)  # type: ignore[arg-type]


def _joined(a: pl.DataFrame, b: pl.DataFrame) -> pl.DataFrame:
    """t_idx, a, b: the deadlines two sources give the interrupts both know."""
    return a.select("t_idx", pl.col("deadline_ns").alias("a")).join(
        b.select("t_idx", pl.col("deadline_ns").alias("b")), on="t_idx").sort("t_idx")


def check_stats(name: str, j: pl.DataFrame, within_ns: int = 20_000) -> dict[str, Any] | None:
    """How far two per-interrupt deadline columns lie apart (b - a)."""
    if j.height == 0:
        return None
    d = (j["b"] - j["a"]).to_numpy()
    return {"check": name, "interrupts": j.height, "median_ns": int(np.median(d)),
            "p99_abs_ns": int(np.percentile(np.abs(d), 99)), "max_abs_ns": int(np.abs(d).max()),
            f"within_{within_ns // 1000}us": round(float((np.abs(d) <= within_ns).mean()), 4)}


def _blocked(interrupts: pl.DataFrame) -> pl.DataFrame:
    return interrupts.filter(pl.col("path").is_in(["blocked", "preempted"]), pl.col("kind") == "timer")


def _background(t: EventTables, mono: MonoClock | None, vcpus: pl.Series) -> pl.DataFrame:
    """KVM's background timers that woke the vCPUs, with their expiry on the trace clock."""
    return timer_wakeups(t, mono, vcpus).rename({"pid": "vcpu_tid"}).filter(pl.col("expires_ns").is_not_null())


def _from_background(blocked: pl.DataFrame, bg: pl.DataFrame) -> pl.DataFrame:
    return blocked.select("t_idx", "w_idx", "t_ns").join(bg, on="w_idx")


@dataclass(frozen=True)
class DeadlineEvidence(Evidence):
    """Everything ``deadline_maps`` fits, anchored in time (chunks add up to the whole capture)."""

    calibration: pl.DataFrame  # CALIBRATION_SCHEMA
    fit: FitEvidence
    background: pl.DataFrame  # anchor_ns, armed_late: blocked interrupts woken by a background timer


@dataclass(frozen=True)
class _Inputs:
    """What deadlines are found from, in one capture (or chunk): the blocked-path timer interrupts, the
    saved timer states, the CVAL each interrupt's save held, the background timers that woke vCPUs."""

    blocked: pl.DataFrame
    saves: pl.DataFrame
    held: pl.DataFrame
    bg: pl.DataFrame

    @staticmethod
    def of(t: EventTables, interrupts: pl.DataFrame, vcpus: pl.Series, mono: MonoClock | None) -> _Inputs:
        blocked = _blocked(interrupts)
        saves = timer_saves(t, vcpus)
        return _Inputs(blocked, saves, held_cvals(t, blocked, saves), _background(t, mono, vcpus))

    def evidence(self, t: EventTables) -> DeadlineEvidence:
        background = _from_background(self.blocked, self.bg).sort("t_idx").select(
            pl.col("t_ns").alias("anchor_ns"), "armed_late")
        return DeadlineEvidence(calibration_pairs(t, self.bg, self.saves),
                                fit_evidence(self.blocked, self.held, self.saves), background)


def deadline_evidence(t: EventTables, interrupts: pl.DataFrame, vcpus: pl.Series,
                      mono: MonoClock | None) -> DeadlineEvidence:
    """The evidence of one capture (or chunk), with the capture's mono clock."""
    return _Inputs.of(t, interrupts, vcpus, mono).evidence(t)


def deadline_maps(mono: MonoClock | None, ev: DeadlineEvidence) -> DeadlineMaps:
    """The maps the evidence gives (see the module docstring for how each is made)."""
    calibrated = calibrate(ev.calibration)
    fitted = fit_counter(ev.fit) if ev.fit.saves.height else None
    # what find_deadlines has besides the fit: the calibrated CVALs and exact expiries, or every expiry
    exact = ev.background.filter(~pl.col("armed_late")).height
    others = exact + ev.fit.pairs.height if calibrated is not None else ev.background.height
    return DeadlineMaps(mono, calibrated, fitted, fit_is_source=fitted is not None and others == 0)


def find_deadlines(t: EventTables, interrupts: pl.DataFrame, vcpus: pl.Series,
                   maps: DeadlineMaps | None = None) -> Deadlines:
    """Deadlines of the blocked-path timer interrupts (sources and checks: module docstring); ``maps``:
    the capture's maps when ``t`` is one chunk of it, else they come from ``t`` itself."""
    mono = maps.mono if maps is not None else mono_clock(t)
    given = _Inputs.of(t, interrupts, vcpus, mono)
    blocked, held = given.blocked, given.held
    if maps is None:
        maps = deadline_maps(mono, given.evidence(t))
    counter, fitted = maps.calibrated, maps.fitted
    from_bg = _from_background(blocked, given.bg)
    exact = _rows(from_bg.filter(~pl.col("armed_late")).rename({"expires_ns": "deadline_ns"}), "hrtimer",
                  pl.lit(mono.spread_ns if mono else 0))
    parts = []
    compared: dict[str, pl.DataFrame] = {}
    notes: list[str] = []
    if counter is not None:
        mapped = _rows(held.filter(pl.col("irq") == 27).with_columns(counter.deadline(pl.col("cval")).alias(
            "deadline_ns")), "cval", pl.lit(round(counter.residual_p99_ns or 0) + (mono.spread_ns if mono else 0)))
        parts += [mapped, exact]
        compared["hrtimer - cval (calibrated)"] = _joined(mapped, exact)
        notes.append("deadlines from the saved CVAL: " + counter.describe() + "; elsewhere from the background "
                     "hrtimer's expiry")
    else:
        parts.append(exact)
        late = _rows(from_bg.filter(pl.col("armed_late")).rename({"expires_ns": "deadline_ns"}), "hrtimer-late",
                     pl.lit(None))
        parts.append(late)
        if exact.height or late.height:
            notes.append("deadlines from KVM's background hrtimers (exact); 'hrtimer-late' ones were armed after "
                         "the deadline had passed: their latency is a lower bound")
    if fitted is not None:
        fit_rows = _rows(held.filter(pl.col("irq") == 27).with_columns(fitted.deadline(pl.col("cval")).alias(
            "deadline_ns")), "cval-fit", pl.lit(fitted.uncertainty_ns))
        if not maps.fit_is_source:
            compared["cval-fit - exact"] = _joined(pl.concat(parts), fit_rows)
        else:
            parts.append(fit_rows)
            counter = fitted
            notes.append("deadlines approximate: " + fitted.describe())
    table = pl.concat(parts).unique("t_idx", keep="first") if parts else pl.DataFrame(schema=DEADLINE_SCHEMA)
    if table.height == 0 and blocked.height:
        notes.append(DEADLINES_UNKNOWN_NOTE)
    return Deadlines(table, counter, mono, compared, notes, held)


def with_deadlines(t: EventTables, df: pl.DataFrame, vcpus: pl.Series,
                   maps: DeadlineMaps | None = None) -> tuple[pl.DataFrame, Deadlines]:
    """Adds deadline_ns, deadline_source, deadline_uncertainty_ns, timer_ns and latency_ns."""
    found = find_deadlines(t, df, vcpus, maps)
    out = df.drop(*DEADLINE_SCHEMA.keys() - {"t_idx"}, "timer_ns", "latency_ns", strict=False).join(
        found.table, on="t_idx", how="left")
    timer = pl.col("t_ns") - pl.col("deadline_ns")
    return out.with_columns(timer.alias("timer_ns"), (timer + pl.col("total_ns")).alias("latency_ns")), found
