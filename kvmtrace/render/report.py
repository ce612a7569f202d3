"""``kvmtrace report``: what the report shows of each capture, its figures, and where they are written.

A capture with vCPU threads gets the full latency analysis (:func:`kvmtrace.analysis.latency.analyze`:
the same document ``analyze --json`` prints), the exit profile of the analysis window (the same
table ``exits --window`` gives), the stage-2 faults per phase (``faults --json``), and their rates over
the whole capture. A capture without vCPU threads (a host-native or a guest-side recording) gets
what it has: its facts, cyclictest's own summary, and the timer wakeups of its cyclictest threads
(:mod:`kvmtrace.model.wakeups`) as a histogram and CDF.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl
from matplotlib.figure import Figure

from kvmtrace.analysis.faults import FaultsReport, faults_report
from kvmtrace.analysis.info import info_dict
from kvmtrace.analysis.latency import LatencyAnalysis, analyze, choose_window
from kvmtrace.capture import Capture
from kvmtrace.errors import MissingEventsError
from kvmtrace.model.exits import exit_table, summarise
from kvmtrace.model.wakeups import thread_wakeups
from kvmtrace.render import figures
from kvmtrace.render.timeline import owner_kind, owner_name, rates

TOP_EXIT_CLASSES = 5


@dataclass
class CaptureReport:
    """One capture's part of the report."""

    capture: Capture
    info: dict[str, Any]
    analysis: LatencyAnalysis | None = None
    doc: dict[str, Any] | None = None          # analyze --json
    exits: pl.DataFrame | None = None          # per exit class in the window (exits --window)
    exit_rates: pl.DataFrame | None = None     # key (exit class), ts, value: exits per second, whole capture
    faults: FaultsReport | None = None         # faults --json (whole capture)
    wakeups: pl.DataFrame | None = None        # captures without vCPUs: cyclictest threads' timer wakeups
    problems: list[str] = field(default_factory=list)
    _figures: dict[str, Figure] | None = None

    @property
    def figures(self) -> dict[str, Figure]:
        """The capture's figures by file stem (drawn once)."""
        if self._figures is None:
            self._figures = capture_figures(self)
        return self._figures

    @property
    def name(self) -> str:
        return str(self.capture.path)

    @property
    def window(self) -> tuple[int, int] | None:
        if self.analysis is None:
            return None
        return self.analysis.window.start_ns, self.analysis.window.end_ns


def capture_report(cap: Capture, window: str | None = None, worst_n: int = 5) -> CaptureReport:
    """Everything the report shows of one capture (module docstring)."""
    rep = CaptureReport(cap, info_dict(cap))
    try:
        rep.analysis = analyze(cap, window, worst_n)
        rep.doc = rep.analysis.document()
    except MissingEventsError as exc:
        rep.problems.append(exc.one_line())
        rep.wakeups = _wakeups(cap, rep.problems)
        return rep
    _exits(rep, rep.analysis)
    if cap.tables.has("kvm_guest_fault"):
        memory = cap.manifest.guest_memory if cap.manifest else None
        rep.faults = faults_report(cap.tables, cap.phases, str(cap.path), None, memory)
    return rep


def _exits(rep: CaptureReport, a: LatencyAnalysis) -> None:
    cap = a.capture
    table = exit_table(cap.tables, cap.phases).exits
    w = a.window
    rep.exits = summarise(table.filter(pl.col("t_ns").is_between(w.start_ns, w.end_ns)), ["exit_class"],
                          w.end_ns - w.start_ns)
    top = (table.group_by("exit_class").len().sort(["len", "exit_class"], descending=[True, False])
           .head(TOP_EXIT_CLASSES)["exit_class"])
    keyed = table.select(pl.when(pl.col("exit_class").is_in(top.implode())).then(pl.col("exit_class"))
                         .otherwise(pl.lit("other")).alias("key"), pl.col("t_ns").alias("ts"))
    ts = cap.tables.events["ts"]
    rep.exit_rates = rates(keyed, "key", int(ts.min()), int(ts.max()))  # type: ignore[arg-type]


def _wakeups(cap: Capture, problems: list[str]) -> pl.DataFrame | None:
    """The timer wakeups of the capture's cyclictest threads (all self-timed threads when no summary names
    them), in the cyclictest phase when there is one."""
    tids = cap.cyclictest["tid"].unique().cast(pl.Int32) if cap.cyclictest.height else None
    try:
        w = thread_wakeups(cap.tables, tids)
    except MissingEventsError as exc:
        problems.append(exc.one_line())
        return None
    win = choose_window(cap, None)
    w = w.filter(pl.col("deadline_ns").is_between(win.start_ns, win.end_ns))
    if not w.height:
        problems.append("no timer wakeups of a periodic thread found (needs hrtimer_start, hrtimer_expire_entry, "
                        "sched_wakeup and sched_switch events)")
        return None
    return w


def comparison_series(reports: list[CaptureReport]) -> dict[str, pl.Series]:
    """Each capture's latencies for the overlaid figures: best known latency of guest interrupts, or the
    timer-wakeup latency of a capture without vCPUs."""
    out = {}
    for r in reports:
        if r.analysis is not None:
            out[r.name] = r.analysis.table["best_latency_ns"]
        elif r.wakeups is not None:
            out[f"{r.name} (timer wakeups)"] = r.wakeups["latency_ns"]
    return out


def capture_figures(rep: CaptureReport) -> dict[str, Figure]:
    """The figures of one capture, by file stem, in the order the report shows them."""
    if rep.analysis is None:
        if rep.wakeups is None:
            return {}
        series = {"wakeup latency (deadline -> switch-in)": rep.wakeups["latency_ns"]}
        return {"latency-histogram": figures.latency_histogram(series, "Timer wakeups of the cyclictest threads"),
                "latency-cdf": figures.latency_cdf(series, "Timer wakeups, cumulative")}
    a, doc = rep.analysis, rep.doc or {}
    tab = a.table
    series = {"best known": tab["best_latency_ns"], "from deadline": tab["latency_ns"],
              "host side (host IRQ -> kvm_entry)": tab["total_ns"]}
    out = {"latency-histogram": figures.latency_histogram({"best known": tab["best_latency_ns"]},
                                                          "Guest interrupt latency (best known)"),
           "latency-cdf": figures.latency_cdf(series, "Guest interrupt latency, cumulative")}
    irqs = doc["interrupts"]
    if irqs["stages"]:
        out["stage-shares"] = figures.stage_shares(irqs["stages"])
    out["worst-stages"] = figures.worst_stages(irqs["worst"])
    if irqs["worst"]:
        out["worst-timeline"] = worst_timeline(a, irqs["worst"][0])
    out["blame"] = figures.blame_bars(doc["blame"])
    if rep.exit_rates is not None and rep.window is not None:
        out["exit-rates"] = figures.rates_over_time(rep.exit_rates, rep.window, "Exits per second (whole capture)",
                                                    "exits / s")
    if rep.faults is not None and rep.window is not None:
        tl = rep.faults.timeline.select(pl.lit("stage-2 faults").alias("key"), pl.col("start_ns").alias("ts"),
                                        pl.col("per_s").alias("value"))
        out["fault-rates"] = figures.rates_over_time(tl, rep.window, "Stage-2 faults per second (whole capture)",
                                                     "faults / s")
    return out


def worst_timeline(a: LatencyAnalysis, worst: dict[str, Any]) -> Figure:
    """The timeline strip around one interrupt: its vCPU's states, every CPU's owners."""
    start = min(worst["deadline_ns"] if worst["deadline_ns"] is not None else worst["t_ns"], worst["t_ns"])
    end = worst["entry_at_ns"]
    margin = max((end - start) // 4, 200_000)
    near = (pl.col("end_ns") > start - margin) & (pl.col("start_ns") < end + margin)
    states = a.states.filter(pl.col("vcpu_tid") == worst["vcpu_tid"]).filter(near)
    segments = a.segments.filter(near).with_columns(owner_kind(a.vcpus["vcpu_tid"]).alias("owner_kind"),
                                                    owner_name().alias("owner"))
    comm = a.vcpus.filter(pl.col("vcpu_tid") == worst["vcpu_tid"])["comm"]
    label = f"vCPU {worst['vcpu_tid']}" + (f" {comm[0]}" if comm.len() else "")
    return figures.timeline_strip(worst, states, segments, label)


def write_figures(reports: list[CaptureReport], directory: Path, fmt: str,
                  extra: dict[str, Figure] | None = None) -> list[Path]:
    """Every figure as ``directory/<stem>.<fmt>`` (one capture) or ``directory/<n>-<capture>/<stem>.<fmt>``."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for i, rep in enumerate(reports, 1):
        sub = directory if len(reports) == 1 else directory / f"{i}-{_slug(rep.name)}"
        sub.mkdir(exist_ok=True)
        for stem, fig in rep.figures.items():
            written.append(sub / f"{stem}.{fmt}")
            written[-1].write_bytes(figures.render(fig, fmt))
    for stem, fig in (extra or {}).items():
        written.append(directory / f"{stem}.{fmt}")
        written[-1].write_bytes(figures.render(fig, fmt))
    return written


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in Path(name).name or name).strip("-") or "capture"
