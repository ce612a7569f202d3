"""The guest's clock on the host's: one offset, found from evidence present in both traces.

A guest only runs while its vCPU thread is in guest mode on the host, so every event of a
guest-side trace lies inside one of the host's ``kvm_entry -> kvm_exit`` intervals of that vCPU
(each guest CPU is one host vCPU thread: the one whose intervals hold its events).
The offset that puts the most guest events inside them (nearly all, for the right one) is the
alignment; the width of the plateau of offsets that do equally well is its uncertainty. A marker
written on both sides (console lines copied into the host trace arrive late by milliseconds)
gives the range to search.
Both clocks count the same hardware counter (arm64 CNTVCT, x86 TSC), so one offset holds for the
whole capture; the containment of each half is reported so a drift would show.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

from kvmtrace.errors import CaptureError
from kvmtrace.ingest.tables import EventTables

SEARCH_NS = 200_000_000  # how far the console copy of a marker may be from the guest's own
MARKER_AGREEMENT_NS = 1_000_000_000
SEARCH_STEPS = ((100_000, 2_000), (5_000, 10_000), (250, 0))  # (offset step, guest events sampled; 0: all)
MIN_CONTAINED = 0.95


@dataclass
class Alignment:
    """host_ns = guest_ns + offset_ns."""

    offset_ns: int
    uncertainty_ns: int
    contained: float  # share of guest events inside host guest-run intervals at this offset
    contained_halves: tuple[float, float]
    events: int
    marker: str
    vcpu_of_cpu: dict[int, int]  # guest CPU -> host vCPU thread

    def to_dict(self) -> dict[str, Any]:
        return {"offset_ns": self.offset_ns, "uncertainty_ns": self.uncertainty_ns, "contained": self.contained,
                "contained_halves": list(self.contained_halves), "events": self.events, "marker": self.marker,
                "vcpu_of_cpu": {str(k): v for k, v in self.vcpu_of_cpu.items()}}


Intervals = dict[int, tuple[np.ndarray, np.ndarray]]


def guest_run_intervals(host: EventTables, vcpus: pl.Series) -> Intervals:
    """Per vCPU thread, the sorted starts and ends of its kvm_entry -> kvm_exit intervals on the host."""
    ev = pl.concat([
        host.table(n).filter(pl.col("pid").is_in(vcpus.implode())).select("idx", "ts", "pid", pl.lit(k).alias("k"))
        for n, k in (("kvm_entry", 1), ("kvm_exit", 0))]).sort("idx")
    ev = ev.with_columns(pl.col("ts").shift(-1).over("pid").alias("end"), pl.col("k").shift(-1).over("pid").alias("nk"))
    iv = ev.filter(pl.col("k") == 1, pl.col("nk") == 0).sort("ts")
    return {int(tid): (g["ts"].to_numpy(), g["end"].to_numpy())
            for (tid,), g in iv.group_by("pid", maintain_order=True)}


def _inside(times: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> int:
    i = np.searchsorted(starts, times, side="right") - 1
    return int(((i >= 0) & (times <= ends[np.maximum(i, 0)])).sum())


def _score(by_cpu: dict[int, np.ndarray], ivs: Intervals, offset: int,
           mapping: dict[int, int] | None) -> tuple[float, dict[int, int]]:
    """Share of guest events (those within the host's span) inside their vCPU's guest-run intervals;
    each guest CPU takes the vCPU thread that contains most of its events (or the one ``mapping`` gives)."""
    inside, total, chosen = 0, 0, {}
    first = min(int(s[0]) for s, _ in ivs.values())
    last = max(int(e[-1]) for _, e in ivs.values())
    for cpu, all_times in by_cpu.items():
        shifted = all_times + offset
        times = shifted[(shifted >= first) & (shifted <= last)]  # a shorter host capture sees only part
        tids = [mapping[cpu]] if mapping and cpu in mapping else list(ivs)
        counts = {tid: _inside(times, *ivs[tid]) for tid in tids}
        tid = max(counts, key=lambda k: counts[k])
        chosen[cpu] = tid
        inside += counts[tid]
        total += len(times)
    return (inside / total if total else 0.0), chosen


def marker_offsets(host: pl.DataFrame, guest: pl.DataFrame) -> tuple[str, int, int]:
    """Markers written on both sides: their most common text, and the range of host - guest times of
    the markers that agree (within ``MARKER_AGREEMENT_NS`` of the median; a line that each side's
    recorder writes for itself, such as ``kvmtrace phase guest begin``, disagrees)."""
    both = guest.select("text", pl.col("ts").alias("g")).join(host.select("text", pl.col("ts").alias("h")), on="text")
    both = both.filter(pl.col("text").str.len_chars() > 0).with_columns((pl.col("h") - pl.col("g")).alias("d"))
    if both.height == 0:
        raise CaptureError(None, None, "cannot align the guest's clock with the host's: no marker appears in both "
                                       "captures (write the same line to both sides' trace_marker)")
    mid = int(both["d"].median())  # type: ignore[arg-type]
    agree = both.filter((pl.col("d") - mid).abs() <= MARKER_AGREEMENT_NS)
    return str(agree["text"][0]), int(agree["d"].min()), int(agree["d"].max())  # type: ignore[arg-type]


def align(host: EventTables, guest: EventTables, vcpus: pl.Series) -> Alignment:
    """The offset that puts the guest's events inside the host's guest-run intervals (module docstring)."""
    marker, low, high = marker_offsets(host.markers(), guest.markers())
    ivs = guest_run_intervals(host, vcpus)
    ev = guest.events.select("ts", "cpu")
    by_cpu = {int(c): g["ts"].to_numpy() for (c,), g in ev.group_by("cpu", maintain_order=True)}
    rng = np.random.default_rng(0)
    best, width = (low + high) // 2, (high - low) // 2 + SEARCH_NS
    mapping: dict[int, int] | None = None
    for step, sample in SEARCH_STEPS:  # coarse to fine, each around the best of the one before
        some = {c: np.sort(rng.choice(t, size=min(sample, len(t)), replace=False)) if sample else t
                for c, t in by_cpu.items()}
        offsets = np.arange(best - width, best + width + step, step)
        scores = [_score(some, ivs, int(o), mapping) for o in offsets]
        k = int(np.argmax([sc for sc, _ in scores]))
        best, width, mapping = int(offsets[k]), 2 * step, scores[k][1]
    values = np.array([sc for sc, _ in scores])
    plateau = offsets[values >= values.max() - 0.5 / len(ev)]
    while plateau.min() == offsets[0] or plateau.max() == offsets[-1]:  # widen until the plateau ends
        width = 2 * (offsets[-1] - offsets[0])
        offsets = np.arange(best - width, best + width + SEARCH_STEPS[-1][0], SEARCH_STEPS[-1][0])
        values = np.array([_score(by_cpu, ivs, int(o), mapping)[0] for o in offsets])
        plateau = offsets[values >= values.max() - 0.5 / len(ev)]
    offset = int((plateau.min() + plateau.max()) // 2)
    mid = int(ev["ts"].median())  # type: ignore[arg-type]
    halves = tuple(round(_score({c: t[(t < mid) == first] for c, t in by_cpu.items()}, ivs, offset, mapping)[0], 4)
                   for first in (True, False))
    al = Alignment(offset, int(plateau.max() - plateau.min()) // 2 + SEARCH_STEPS[-1][0] // 2,
                   round(float(values.max()), 4), (halves[0], halves[1]), len(ev), marker, mapping or {})
    if al.contained < MIN_CONTAINED:
        raise CaptureError(guest.meta.path, None, f"cannot align the guest's clock with the host's: at best "
                           f"{100 * al.contained:.1f}% of the guest's events fall inside the host's guest-run "
                           f"intervals (expected at least {100 * MIN_CONTAINED:.0f}%): is this the host of that guest?")
    return al
