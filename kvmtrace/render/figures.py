"""The report's figures, drawn with matplotlib (object API, Agg; no pyplot state): the latency histogram
with log counts and its CDF (the study's figures), stage shares, the stages of the worst interrupts,
a timeline strip around the worst one, blame, and exit and fault rates over time.

Each function returns a ``Figure``; ``render(fig, fmt)`` gives its SVG or PNG bytes. Stage colours
and letters are the terminal's (``render/analyze.py``), so a figure and ``kvmtrace analyze`` read
the same; the letters are drawn in the bars too, so the figures read in black and white.
"""

from __future__ import annotations

import io
import math
from typing import Any

import matplotlib
import numpy as np
import polars as pl
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from kvmtrace.model.interrupts import STAGES
from kvmtrace.render.analyze import STAGE_LETTER
from kvmtrace.units import fmt_ns

matplotlib.rcParams.update({"svg.fonttype": "none", "svg.hashsalt": "kvmtrace", "font.size": 9,
                            "axes.spines.top": False, "axes.spines.right": False})
STAGE_COLOR = {"timer": "#9467bd", "host_irq": "#d62728", "vcpu_wait": "#e6b800", "inject": "#17becf",
               "exit": "#1f77b4", "entry": "#2ca02c"}
STATE_COLOR = {"guest": "#2ca02c", "host_handling": "#1f77b4", "blocked": "#c7c7c7", "preempted": "#d62728",
               "waking": "#ff7f0e"}
OWNER_COLOR = {"vcpu": "#1f77b4", "task": "#8c564b", "irq": "#d62728", "softirq": "#e377c2", "stall": "#000000",
               "idle": "#f2f2f2"}
CAUSE_COLOR = {"task": "#8c564b", "rt_throttling": "#bcbd22", "irq": "#d62728", "softirq": "#e377c2",
               "idle": "#c7c7c7", "stall": "#000000", "vcpu": "#1f77b4", "guest": "#2ca02c"}
WIDE, TALL = 7.5, 3.2


def render(fig: Figure, fmt: str) -> bytes:
    """The figure as ``svg`` or ``png`` bytes (reproducible: no date in the SVG)."""
    buf = io.BytesIO()
    meta = {"Date": None} if fmt == "svg" else {}
    fig.savefig(buf, format=fmt, dpi=110, bbox_inches="tight", metadata=meta)
    return buf.getvalue()


def _us(ns: pl.Series | np.ndarray) -> np.ndarray:
    return np.asarray(ns, dtype=float) / 1000.0


def _log_bins(values: np.ndarray, per_decade: int = 20) -> np.ndarray:
    lo, hi = max(values.min(), 0.1), max(values.max(), 0.2)
    n = max(2, math.ceil(per_decade * math.log10(hi / lo)) + 1)
    return np.logspace(math.log10(lo), math.log10(hi) + 1e-9, n)


def latency_histogram(series: dict[str, pl.Series], title: str) -> Figure:
    """Latency histogram(s), log-spaced microsecond bins, log counts; one step line per series."""
    fig = Figure(figsize=(WIDE, TALL))
    ax = fig.subplots()
    values = {k: _us(v.drop_nulls().to_numpy()) for k, v in series.items() if v.drop_nulls().len()}
    if not values:
        return _empty(fig, ax, "no latencies")
    bins = _log_bins(np.concatenate(list(values.values())))
    for label, v in values.items():
        ax.hist(v, bins=list(bins), histtype="step", linewidth=1.4, label=f"{label} (n={len(v):,})")
    ax.set(xscale="log", yscale="log", xlabel="latency (us, log scale)", ylabel="interrupts (log scale)", title=title)
    ax.legend(loc="upper right", fontsize=8)
    ax.grid(True, which="major", alpha=0.3)
    return fig


def latency_cdf(series: dict[str, pl.Series], title: str) -> Figure:
    """Cumulative distribution of latencies (log x), with p50 / p99 / max marked per series."""
    fig = Figure(figsize=(WIDE, TALL))
    ax = fig.subplots()
    drawn = 0
    for label, s in series.items():
        v = np.sort(_us(s.drop_nulls().to_numpy()))
        if not len(v):
            continue
        y = np.arange(1, len(v) + 1) / len(v)
        line = ax.step(v, y, where="post", linewidth=1.4, label=f"{label}: p99 {v[int(0.99 * (len(v) - 1))]:,.0f} us, "
                                                              f"max {v[-1]:,.0f} us")[0]
        ax.plot([v[-1]], [1.0], marker="o", color=line.get_color())
        drawn += 1
    if not drawn:
        return _empty(fig, ax, "no latencies")
    ax.axhline(0.99, color="grey", linewidth=0.8, linestyle=":")
    ax.text(0.01, 0.99, "p99", va="bottom", fontsize=7, color="grey", transform=ax.get_yaxis_transform())
    ax.set(xscale="log", ylim=(0, 1.02), xlabel="latency (us, log scale)", ylabel="fraction of interrupts", title=title)
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(True, alpha=0.3)
    return fig


def stage_shares(stages: dict[str, dict[str, Any]]) -> Figure:
    """Each host stage's share of the summed host-side latency, and its p50 and p99."""
    fig = Figure(figsize=(WIDE, TALL))
    left, right = fig.subplots(1, 2, width_ratios=[1, 1.3])
    names = [s for s in STAGES if s in stages and stages[s]["share"] is not None]
    shares = [100 * stages[s]["share"] for s in names]
    y = np.arange(len(names))
    left.barh(y, shares, color=[STAGE_COLOR[s] for s in names])
    for i, (s, v) in enumerate(zip(names, shares, strict=True)):
        left.text(v, i, f" {v:.1f}% ({STAGE_LETTER[s]})", va="center", fontsize=8)
    left.set(yticks=y, yticklabels=names, xlabel="share of host-side latency (%)", xlim=(0, 118),
             title="Where the time went")
    left.invert_yaxis()
    every = [s for s in STAGES if s in stages]
    y2 = np.arange(len(every))
    right.barh(y2 - 0.2, [stages[s]["p50"] / 1000 for s in every], height=0.4, color="#aaaaaa", label="p50")
    right.barh(y2 + 0.2, [stages[s]["p99"] / 1000 for s in every], height=0.4,
               color=[STAGE_COLOR[s] for s in every], label="p99")
    right.set(yticks=y2, yticklabels=every, xscale="log", xlabel="us (log scale)", title="Stage p50 / p99")
    right.invert_yaxis()
    right.legend(fontsize=8, loc="lower right")
    return fig


def worst_stages(worst: list[dict[str, Any]]) -> Figure:
    """One stacked bar per worst interrupt: its stages in order, from the deadline (or host IRQ) to entry."""
    fig = Figure(figsize=(WIDE, 0.8 + 0.45 * max(1, len(worst))))
    ax = fig.subplots()
    if not worst:
        return _empty(fig, ax, "no interrupts")
    for i, r in enumerate(worst):
        left = 0.0
        for s in STAGES:
            ns = r.get(f"{s}_ns")
            if not ns or ns <= 0:
                continue
            ms = ns / 1e6
            ax.barh(i, ms, left=left, color=STAGE_COLOR[s], edgecolor="white", linewidth=0.5)
            if ms > 0.06 * _total_ms(worst):
                ax.text(left + ms / 2, i, STAGE_LETTER[s], ha="center", va="center", fontsize=8, color="black")
            left += ms
        ax.text(left, i, f"  {fmt_ns(r['best_latency_ns'])}", va="center", fontsize=8)
    labels = [f"#{i} {r['path']}, t={r['t_ns'] / 1e9:.3f} s" for i, r in enumerate(worst, 1)]
    ax.set(yticks=range(len(worst)), yticklabels=labels, xlabel="ms from the deadline (or host IRQ) to kvm_entry",
           title="Stages of the worst interrupts")
    ax.set_xlim(0, _total_ms(worst) * 1.18)
    ax.invert_yaxis()
    ax.legend(handles=[Patch(color=STAGE_COLOR[s], label=f"{STAGE_LETTER[s]} {s}") for s in STAGES],
              fontsize=7, ncol=6, loc="upper center", bbox_to_anchor=(0.5, -0.25 if len(worst) > 2 else -0.45),
              frameon=False)
    return fig


def _total_ms(worst: list[dict[str, Any]]) -> float:
    return max(sum((r.get(f"{s}_ns") or 0) for s in STAGES if (r.get(f"{s}_ns") or 0) > 0) for r in worst) / 1e6


def timeline_strip(worst: dict[str, Any], states: pl.DataFrame, segments: pl.DataFrame,
                   vcpu_label: str) -> Figure:
    """The vCPU's states and every CPU's owners around one interrupt, its stages on top, times in ms from
    the interrupt's start. ``states``/``segments``: the vCPU's state intervals and the CPUs' ownership
    segments overlapping the shown span (columns of ``LatencyAnalysis.states`` / ``.segments``, segments
    with an ``owner_kind`` column)."""
    start = min(worst["deadline_ns"] if worst["deadline_ns"] is not None else worst["t_ns"], worst["t_ns"])
    end = worst["entry_at_ns"]
    margin = max((end - start) // 4, 200_000)
    lo, hi = start - margin, end + margin
    cpus = sorted(segments["cpu"].unique().to_list())
    fig = Figure(figsize=(WIDE, 1.2 + 0.45 * (2 + len(cpus))))
    ax = fig.subplots()
    rows = ["stages", vcpu_label, *[f"CPU {c}" for c in cpus]]

    def bar(row: int, s: int, e: int, color: str, label: str | None = None) -> None:
        s, e = max(s, lo), min(e, hi)
        if e <= s:
            return
        x0, w = (s - start) / 1e6, (e - s) / 1e6
        ax.broken_barh([(x0, w)], (row - 0.38, 0.76), facecolors=color, edgecolor="white", linewidth=0.3)
        if label and w > 0.08 * (hi - lo) / 1e6:
            ax.text(x0 + w / 2, row, label, ha="center", va="center", fontsize=7, clip_on=True)

    t = worst["t_ns"]
    if (worst.get("timer_ns") or 0) > 0:
        bar(0, worst["deadline_ns"], t, STAGE_COLOR["timer"], STAGE_LETTER["timer"])
    at = t
    for s in STAGES[1:]:
        ns = worst.get(f"{s}_ns")
        if ns is not None:
            bar(0, at, at + ns, STAGE_COLOR[s], STAGE_LETTER[s])
            at += ns
    for st, s, e in states.select("state", "start_ns", "end_ns").iter_rows():
        bar(1, s, e, STATE_COLOR.get(st, "#999999"), st)
    for cpu, s, e, owner, kind in segments.select("cpu", "start_ns", "end_ns", "owner", "owner_kind").iter_rows():
        bar(2 + cpus.index(cpu), s, e, OWNER_COLOR.get(kind, "#999999"), None if kind == "idle" else owner)
    marks = [(m, label) for m, label in ((worst["deadline_ns"], "deadline"), (t, "host IRQ"),
                                         (worst.get("switch_in_ns"), "switch-in"), (end, "kvm_entry"))
             if m is not None]
    for k, (mark, label) in enumerate(marks):  # labels on three heights, so close marks stay readable
        ax.axvline((mark - start) / 1e6, color="black", linewidth=0.6, linestyle="--")
        ax.text((mark - start) / 1e6, -0.6 - 0.35 * (k % 3), label, fontsize=7, ha="center",
                bbox={"facecolor": "white", "edgecolor": "none", "pad": 0.5})
    ax.set(yticks=range(len(rows)), yticklabels=rows, xlim=((lo - start) / 1e6, (hi - start) / 1e6),
           ylim=(len(rows) - 0.5, -1.5), xlabel="ms from the interrupt's start",
           title=f"Around the worst interrupt: {fmt_ns(worst['best_latency_ns'])}, {worst['path']} path")
    handles = [Patch(color=c, label=k) for k, c in STATE_COLOR.items()]
    handles += [Patch(color=c, label=f"CPU: {k}") for k, c in OWNER_COLOR.items()]
    ax.legend(handles=handles, fontsize=7, ncol=6, loc="upper center", bbox_to_anchor=(0.5, -0.22), frameon=False)
    return fig


def blame_bars(blame: list[dict[str, Any]], top: int = 10) -> Figure:
    """The causes with the most latency over all interrupts (share of all latency)."""
    rows = blame[:top]
    fig = Figure(figsize=(WIDE, 0.8 + 0.32 * max(1, len(rows))))
    ax = fig.subplots()
    if not rows:
        return _empty(fig, ax, "no latency to blame")
    y = np.arange(len(rows))
    shares = [100 * r["share"] for r in rows]
    ax.barh(y, shares, color=[CAUSE_COLOR.get(r["cause_kind"], "#999999") for r in rows])
    for i, r in enumerate(rows):
        ax.text(shares[i], i, f" {shares[i]:.1f}%  {fmt_ns(r['total_ns'])}, {r['interrupts']:,} interrupts",
                va="center", fontsize=7)
    labels = [f"{r['cause']} ({r['cause_kind']})" for r in rows]
    ax.set(yticks=y, yticklabels=labels, xlabel="share of all interrupts' latency (%)", xlim=(0, max(shares) * 1.6),
           title="Blame over all interrupts")
    ax.invert_yaxis()
    return fig


def rates_over_time(rates: pl.DataFrame, window: tuple[int, int], title: str, ylabel: str) -> Figure:
    """Rates per second over time, one line per ``key`` (columns key, ts, value), the analysis window shaded."""
    fig = Figure(figsize=(WIDE, TALL))
    ax = fig.subplots()
    if not rates.height:
        return _empty(fig, ax, "none in this capture")
    for (key,), g in rates.sort("ts").group_by("key", maintain_order=True):
        ax.step(g["ts"].to_numpy() / 1e9, g["value"].to_numpy(), where="post", linewidth=1.1, label=str(key))
    ax.axvspan(window[0] / 1e9, window[1] / 1e9, color="#4c72b0", alpha=0.08, label="analysis window")
    ax.set(xlabel="trace time (s)", ylabel=ylabel, title=title)
    if float(rates["value"].max() or 0) > 0:  # type: ignore[arg-type]
        ax.set_yscale("symlog", linthresh=1)
    ax.legend(fontsize=7, ncol=3, loc="upper right")
    ax.grid(True, alpha=0.3)
    return fig


def _empty(fig: Figure, ax: Any, text: str) -> Figure:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes)
    ax.set_axis_off()
    return fig
