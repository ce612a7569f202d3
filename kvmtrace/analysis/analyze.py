"""``kvmtrace analyze`` as one report: the latency analysis of the guest's interrupts (analysis/latency.py),
the host's own real-time threads (analysis/native.py), and, with the guest's capture, cyclictest loop
by loop on both sides (analysis/loops.py). A host without guests gets the native analysis alone."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from kvmtrace.analysis.latency import LatencyAnalysis, Window, analyze, choose_window
from kvmtrace.analysis.loops import Loops, loop_table, loop_verdicts
from kvmtrace.analysis.native import NativeAnalysis, analysis_document, native_analysis, native_document
from kvmtrace.capture import Capture
from kvmtrace.errors import CaptureError
from kvmtrace.ingest.cyclictest import CyclictestOutput

NO_GUEST_VERSION = 2


@dataclass
class AnalyzeReport:
    """The document ``--json`` prints (docs/json-output.md) and the analyses behind it."""

    document: dict[str, Any]
    analysis: LatencyAnalysis | None  # None: a host without guests
    native: NativeAnalysis | None = None  # the host's real-time threads, when there is no guest
    loops: Loops | None = None  # with the guest's capture
    kind: str = "analyze"

    def to_json(self) -> dict[str, Any]:
        return self.document

    def rows(self) -> pl.DataFrame:
        """One row per guest interrupt (docs/stages.md), or per native wakeup on a host without guests."""
        if self.analysis is None:
            assert self.native is not None
            return self.native.table
        if self.analysis.table.height == 0:
            raise CaptureError(self.analysis.capture.path, None,
                               f"no guest interrupt in the window {self.analysis.window.name!r}")
        return self.analysis.table


def analyze_report(cap: Capture, window: str | None, worst_n: int, output: CyclictestOutput | None = None,
                   guest: Capture | None = None, guest_output: CyclictestOutput | None = None) -> AnalyzeReport:
    """The report of one window; ``output`` is cyclictest's own output on the host, ``guest`` the guest's
    capture with ``guest_output`` its cyclictest -v output (loop by loop)."""
    if not cap.tables.has("kvm_entry"):
        return _no_guest(cap, window, worst_n, output)
    analysis = analyze(cap, window, worst_n)
    doc = analysis.document()
    doc["native"] = native_document(cap, analysis.window.start_ns, analysis.window.end_ns, worst_n, output,
                                    exclude=tuple(analysis.vcpus["vcpu_tid"].to_list()))
    report = AnalyzeReport(doc, analysis)
    doc["guest"] = None
    if guest is not None:
        if guest_output is None:
            raise CaptureError(guest.path, None, "a guest capture needs cyclictest's -v output to compare loop by "
                                                 "loop: give --cyclictest FILE (or put cyclictest.txt beside the "
                                                 "guest's trace)")
        report.loops = loop_table(analysis, guest, guest_output)
        doc["guest"] = {"capture": str(guest.path), "alignment": report.loops.alignment.to_dict(),
                        "summary": report.loops.summary(),
                        "worst_loops": loop_verdicts(report.loops, analysis, guest, worst_n)}
    return report


def chunked_report(path: Path, window: str | None, worst_n: int, chunk_mb: int | None,
                   output: CyclictestOutput | None = None) -> AnalyzeReport | None:
    """The report of a large trace.dat read in time chunks (analysis/chunked.py), or None to read it
    whole: a text capture, ``chunk_mb`` 0, or (``chunk_mb`` None) trace data under AUTO_CHUNK_MB."""
    from kvmtrace.analysis.chunked import analyze_chunked, chunk_bytes_for
    from kvmtrace.capture import find_trace

    trace, _ = find_trace(path)
    chunk_bytes = chunk_bytes_for(trace, chunk_mb)
    if chunk_bytes is None:
        return None
    found = analyze_chunked(path, window, worst_n, chunk_bytes)
    if found is None:
        return None
    native = analysis_document(found.native, output) if found.native is not None else None
    if found.latency is None:
        return AnalyzeReport(_no_guest_document(found.capture, found.window, native), None, found.native)
    doc = found.latency.document()
    doc["native"] = native
    doc["guest"] = None
    return AnalyzeReport(doc, found.latency)


def _no_guest(cap: Capture, window: str | None, worst_n: int, output: CyclictestOutput | None) -> AnalyzeReport:
    """A host without guests: its own real-time threads woken by their timers."""
    w = choose_window(cap, window)
    native = native_analysis(cap, w.start_ns, w.end_ns, worst_n)  # one clear line when events are missing
    doc = _no_guest_document(cap, w, native_document(cap, w.start_ns, w.end_ns, worst_n, output))
    return AnalyzeReport(doc, None, native)


def _no_guest_document(cap: Capture, w: Window, native: dict[str, Any] | None) -> dict[str, Any]:
    if native is None:
        raise CaptureError(cap.path, None, "no guest (no kvm:kvm_entry) and no real-time thread woken by "
                                           "its own timer at least 50 times: nothing to explain")
    return {"kvmtrace_analyze": NO_GUEST_VERSION, "capture": str(cap.path), "window": w.to_dict(),
            "native": native, "cyclictest": cap.cyclictest.to_dicts(),
            "read": cap.tables.report.section(w.start_ns, w.end_ns)}
