"""The study's comparison for any set of runs: one row per measure, one column per run, ratios, reasons.

Each run is a capture (``kvmtrace compare A=host B=guest``). Its measures, with where each came from:

- ``cyclictest min/avg/max`` (us): cyclictest's own summary (``T:`` line in the markers, or its output
  file beside the capture); else the trace's.
- ``cyclictest p95/p99`` (us): the trace: the host thread's wakeups (native run: what cyclictest
  measured, less the return to user space) or the guest interrupts' best known latency (the host's part
  of what the guest's cyclictest measured: a lower bound).
- ``lat_mem_rd seq/random`` (ns), ``lat_pagefault file/anon`` (us): benchmark results in the markers
  (:mod:`kvmtrace.model.results`).
- ``stage-2 faults: <phase>``, ``exits per second``, ``share: <stage>``: what the trace saw.
- ``top cause``: the largest cause of latency (text).

Where a measure differs by more than ``DIFF_THRESHOLD`` from the first run, one sentence from the
traces says why. ``--fail-if`` expressions gate CI on a change (``p99>+20%``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from kvmtrace.capture import Capture
from kvmtrace.errors import CaptureError
from kvmtrace.ingest.cyclictest import read_cyclictest

COMPARE_VERSION = 1
DIFF_THRESHOLD = 0.20
# The 2014 study (primer section 1): Arndale board, Linux 3.8, host vs KVM guest.
STUDY = {"cyclictest max (us)": (185.0, 8939.0), "cyclictest p95 (us)": (108.0, 251.0),
         "lat_mem_rd random (ns)": (122.30, 273.75), "lat_mem_rd seq (ns)": (95.60, 96.20),
         "lat_pagefault file (us)": (2.40, 2.38)}
ALIASES = {"max": "cyclictest max (us)", "p99": "cyclictest p99 (us)", "p95": "cyclictest p95 (us)",
           "avg": "cyclictest avg (us)", "min": "cyclictest min (us)", "mem_random": "lat_mem_rd random (ns)",
           "mem_seq": "lat_mem_rd seq (ns)", "pagefault": "lat_pagefault file (us)",
           "exits": "exits per second"}
FAIL_RE = re.compile(r"^\s*(\w+)\s*(>=|<=|>|<)\s*([+-]?)(\d+(?:\.\d+)?)\s*(%?)\s*$")


@dataclass
class Run:
    """One capture's measures (name -> value) and what explains them."""

    label: str
    path: str
    measures: dict[str, float | str] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)
    shares: dict[str, float] = field(default_factory=dict)  # stage -> share of latency
    top_causes: list[dict[str, Any]] = field(default_factory=list)
    phase_faults: dict[str, int] = field(default_factory=dict)
    kind: str = ""  # "guest" or "host"
    worst_verdict: str = ""

    def put(self, name: str, value: float | str | None, source: str) -> None:
        if value is not None:
            self.measures[name] = value
            self.sources[name] = source


def run_of(cap: Capture, label: str) -> Run:
    """Every measure of one capture (module docstring)."""
    from kvmtrace.analysis.latency import analyze, choose_window
    from kvmtrace.analysis.native import native_document
    from kvmtrace.model.results import benchmark_results

    run = Run(label, str(cap.path))
    t = cap.tables
    summary = cap.cyclictest
    if summary.height:
        row = summary.sort("ts").row(-1, named=True)
        for key in ("min", "avg", "max"):
            run.put(f"cyclictest {key} (us)", float(row[f"{key}_us"]), "cyclictest's own T: line")
    _own_output(run, cap, summary.height > 0)
    window = choose_window(cap, None)
    if t.has("kvm_entry"):
        run.kind = "guest"
        a = analyze(cap)
        if summary.height or "cyclictest" in cap.phases["name"].to_list():  # else no latency was measured
            _latency_measures(run, a.table["best_latency_ns"], "trace: guest interrupts, host part (a lower bound)")
        run.shares = {s: v["share"] for s, v in a.stage_summary().items() if v["share"] is not None}
        run.top_causes = a.blame.head(3).to_dicts()
        worst = a.worst()
        run.worst_verdict = _worst_loop(a, cap) or (worst[0]["verdict"] if worst else "")
        exits = t.table("kvm_exit").filter(pl.col("ts").is_between(window.start_ns, window.end_ns)).height
        seconds = max(window.end_ns - window.start_ns, 1) / 1e9
        run.put("exits per second", round(exits / seconds, 1), f"trace: kvm_exit in {window.name}")
        if t.has("kvm_guest_fault"):
            faults = t.table("kvm_guest_fault").select("ts")
            for p in cap.phases.iter_rows(named=True):
                n = faults.filter(pl.col("ts").is_between(p["start_ns"], p["end_ns"])).height
                run.phase_faults[p["name"]] = n
                run.put(f"stage-2 faults: {p['name']}", float(n), "trace: kvm_guest_fault")
    else:
        run.kind = "host"
        doc = native_document(cap, window.start_ns, window.end_ns)
        if doc is not None:
            lat = pl.Series([w for w in _wakeup_latencies(cap, window)])
            _latency_measures(run, lat, "trace: the thread's wakeups")
            run.shares = {s: v["share"] for s, v in doc["wakeups"]["stages"].items() if v["share"] is not None}
            run.top_causes = doc["blame"][:3]
            run.worst_verdict = doc["wakeups"]["worst"][0]["verdict"] if doc["wakeups"]["worst"] else ""
    for r in benchmark_results(cap.markers, cap.phases).iter_rows(named=True):
        run.put(f"{r['bench']} {r['variant']} ({r['unit']})", r["value"], f"benchmark result in phase {r['phase']}")
    if run.top_causes:
        c = run.top_causes[0]
        run.put("top cause", f"{c['cause']} ({c['cause_kind']}, {100 * c['share']:.0f}%)", "trace: blame")
    return run


def _worst_loop(a: Any, cap: Capture) -> str | None:
    """With the guest's own capture and cyclictest -v beside the host capture: the slowest loop's
    verdict on both sides (what cyclictest's max is), else None."""
    from kvmtrace.analysis.loops import loop_table, loop_verdicts
    from kvmtrace.capture import open_capture

    folder = cap.trace_path.parent / "guest"
    if not (folder / "cyclictest.txt").is_file():
        return None
    try:
        guest = open_capture(folder)
        lp = loop_table(a, guest, read_cyclictest(folder / "cyclictest.txt"))
    except CaptureError:
        return None
    top = loop_verdicts(lp, a, guest, 1)
    return top[0]["verdict"] if top else None


def _own_output(run: Run, cap: Capture, have_summary: bool) -> None:
    """cyclictest's own output beside the capture (or its guest's): every loop (-v) gives exact
    percentiles; else its summary (-h, T:) gives min/avg/max."""
    folder = cap.trace_path.parent
    for path in (folder / "cyclictest.txt", folder / "guest" / "cyclictest.txt"):
        if not path.is_file():
            continue
        own = read_cyclictest(path)
        source = f"cyclictest's own output ({path.relative_to(folder)})"
        if own.loops.height:
            us = own.loops["latency_us"].cast(pl.Float64)
            for q in (0.95, 0.99):
                run.put(f"cyclictest p{round(q * 100)} (us)", float(us.quantile(q, interpolation="nearest")),  # type: ignore[arg-type]
                        source + ", every loop")
            for key, value in (("min", us.min()), ("avg", round(float(us.mean()), 1)), ("max", us.max())):  # type: ignore[arg-type]
                if not have_summary:
                    run.put(f"cyclictest {key} (us)", float(value), source + ", every loop")  # type: ignore[arg-type]
            return
        figures = own.histogram or (own.summary.row(-1, named=True) if own.summary.height else {})
        for key in ("min", "avg", "max"):
            if f"{key}_us" in figures and not have_summary:
                run.put(f"cyclictest {key} (us)", float(figures[f"{key}_us"]), source)
        return


def _wakeup_latencies(cap: Capture, window: Any) -> list[int]:
    from kvmtrace.analysis.native import NativeAnalysis

    return NativeAnalysis(cap, window.start_ns, window.end_ns).table["latency_ns"].drop_nulls().to_list()


def _latency_measures(run: Run, ns: pl.Series, source: str) -> None:
    s = ns.drop_nulls()
    if s.len() == 0:
        return
    for q in (0.95, 0.99):
        name = f"cyclictest p{round(q * 100)} (us)"
        if name not in run.measures:  # cyclictest's own loops are better than the trace's
            run.put(name, round(float(s.quantile(q)) / 1000, 1), source)  # type: ignore[arg-type]
    for key, value in (("max", s.max()), ("avg", s.mean()), ("min", s.min())):
        run.put(f"cyclictest {key} (us)", run.measures.get(f"cyclictest {key} (us)",
                                                           round(float(value) / 1000, 1)),  # type: ignore[arg-type]
                run.sources.get(f"cyclictest {key} (us)", source))


@dataclass
class Comparison:
    runs: list[Run]
    rows: list[dict[str, Any]]
    explanations: list[str]
    failed: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"kvmtrace_compare": COMPARE_VERSION,
                "runs": [{"label": r.label, "capture": r.path, "kind": r.kind} for r in self.runs],
                "measures": self.rows, "explanations": self.explanations, "failed": self.failed}


def compare(runs: list[Run], study: bool = False) -> Comparison:
    """Measures common to at least two runs, with ratios against the first (module docstring)."""
    names = [n for n in dict.fromkeys(k for r in runs for k in r.measures)
             if sum(n in r.measures for r in runs) >= 2]
    if not any(isinstance(r.measures.get(n), float) for n in names for r in runs):
        have = "; ".join(f"{r.label}: {', '.join(r.measures) or 'no measures'}" for r in runs)
        raise CaptureError(None, None, f"the runs have no measure in common ({have})")
    rows = []
    for n in names:
        values = [r.measures.get(n) for r in runs]
        first = values[0]
        ratios = [round(v / first, 3) if isinstance(v, float) and isinstance(first, float) and first else None
                  for v in values]
        row: dict[str, Any] = {"measure": n, "values": values, "ratios": ratios,
                               "sources": [r.sources.get(n) for r in runs]}
        if study and n in STUDY:
            host, guest = STUDY[n]
            row["study"] = {"host": host, "guest": guest, "ratio": round(guest / host, 2)}
        rows.append(row)
    return Comparison(runs, rows, explain(runs, rows))


def explain(runs: list[Run], rows: list[dict[str, Any]]) -> list[str]:
    """One sentence per measure that differs from the first run by more than the threshold."""
    out = []
    base = runs[0]
    for row in rows:
        for run, ratio in zip(runs[1:], row["ratios"][1:], strict=True):
            if ratio is None or abs(ratio - 1) <= DIFF_THRESHOLD:
                continue
            out.append(f"{row['measure']}: {run.label} {ratio:g}x {base.label}" + _why(row["measure"], base, run))
    return out


def _why(measure: str, base: Run, run: Run) -> str:
    if measure.startswith("cyclictest max") and run.worst_verdict:
        text = run.worst_verdict
        return f": {text}" if text.startswith("loop ") else f": the worst took {text}"
    if measure.startswith("cyclictest"):
        grown = {s: run.shares[s] - base.shares[s] for s in run.shares if s in base.shares}
        parts = []
        if run.shares:
            stage = max(run.shares, key=lambda s: run.shares[s])
            parts.append(f"{100 * run.shares[stage]:.0f}% of {run.label}'s latency is {stage}")
            if grown and max(grown.values()) > 0.05:
                up = max(grown, key=lambda s: grown[s])
                parts.append(f"{up} grew by {100 * grown[up]:.0f} points")
        if run.top_causes:
            c = run.top_causes[0]
            parts.append(f"largest cause `{c['cause']}` ({c['cause_kind']})")
        return (": " + ", ".join(parts)) if parts else ""
    if measure.startswith(("lat_mem_rd", "lat_pagefault")):
        bench, variant = measure.split()[:2]
        phase = next((p for p in run.phase_faults if p == f"{bench}_{variant}"),
                     next((p for p in run.phase_faults if p == bench), None))
        if phase is not None:
            return (f": {run.phase_faults[phase]:,} stage-2 faults during {phase} (first-touch mappings; "
                    "a TLB miss in a guest walks two levels of tables, which the trace cannot show)")
    return ""


def check_fail_if(cmp: Comparison, exprs: list[str]) -> list[str]:
    """``p99>+20%`` (last run vs first, relative), ``max>500`` (last run, absolute): the ones that hold."""
    failed = []
    for expr in exprs:
        m = FAIL_RE.match(expr)
        name = ALIASES.get(m[1], m[1]) if m else None
        row = next((r for r in cmp.rows if r["measure"] == name), None)
        if m is None or row is None:
            raise CaptureError(None, None, f"--fail-if {expr!r}: expected MEASURE OP [+-]NUMBER[%], MEASURE one of "
                                           f"{', '.join(ALIASES)} present in both runs")
        first, last = row["values"][0], row["values"][-1]
        if not isinstance(first, float) or not isinstance(last, float):
            continue
        relative = bool(m[3] or m[5])
        limit = float(m[3] + m[4]) if m[3] else float(m[4])
        value = (last / first - 1) * 100 if relative and m[5] else (last - first if relative else last)
        if {">": value > limit, ">=": value >= limit, "<": value < limit, "<=": value <= limit}[m[2]]:
            failed.append(f"{expr}: {name} {first:g} -> {last:g}")
    cmp.failed = failed
    return failed


def runs_from_args(items: list[str], opener: Any) -> list[Run]:
    """``PATH[=LABEL]`` arguments to runs (label: the folder name)."""
    runs = []
    for item in items:
        path, _, label = item.partition("=")
        runs.append(run_of(opener(Path(path)), label or Path(path).name))
    return runs
