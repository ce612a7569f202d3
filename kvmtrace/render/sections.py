"""The tables each command prints, as (title, frame) sections: what ``--format csv`` and ``--format md`` write.

Values are raw (times in ns, as in the JSON documents: docs/json-output.md), so a number is never
rounded or cut; the rich tables of ``--format table`` show the same rows formatted.
"""

from __future__ import annotations

from typing import Any

import polars as pl

from kvmtrace.analysis.exits import ExitsReport
from kvmtrace.analysis.faults import FaultsReport
from kvmtrace.analysis.vcpus import VcpusReport
from kvmtrace.model.interrupts import STAGES
from kvmtrace.render.analyze import STAGE_SPAN, facts_rows
from kvmtrace.render.tables import Sections, rows_frame

MEASURES = ("best_latency_ns", "total_ns", "latency_ns", "timer_ns")


def analyze_sections(doc: dict[str, Any]) -> Sections:
    """``kvmtrace analyze``: facts, latency, stages, histogram, per vCPU, blame, worst interrupts, notes;
    then the host's real-time threads and the guest's loops when the document has them."""
    if "interrupts" not in doc:  # a host without guests
        return native_sections(doc["native"])
    out = _guest_interrupt_sections(doc)
    if doc.get("native"):
        out += native_sections(doc["native"])
    if doc.get("guest"):
        out.append(("slowest cyclictest loops in the guest", rows_frame(doc["guest"]["worst_loops"])))
    return out


def _guest_interrupt_sections(doc: dict[str, Any]) -> Sections:
    irqs = doc["interrupts"]
    out: Sections = [("facts", pl.DataFrame(facts_rows(doc), schema=["fact", "value"], orient="row"))]
    latency = [{"measure": m, **irqs[m]} for m in MEASURES if irqs[m].get("count")]
    if latency:
        out.append(("latency (ns)", rows_frame(latency)))
    if irqs["stages"]:
        out.append(("stages (ns)", rows_frame([{"stage": s, "span": STAGE_SPAN[s], **v}
                                                for s, v in irqs["stages"].items()])))
    if irqs["histogram"]:
        out.append(("histogram of best known latency", rows_frame(irqs["histogram"])))
    if doc["per_vcpu"]:
        out.append(("per vCPU thread (best known latency, ns)", rows_frame([
            {"vcpu_tid": v["vcpu_tid"], "interrupts": v["interrupts"], **v["best_latency_ns"]}
            for v in doc["per_vcpu"]])))
    if doc["blame"]:
        out.append(("blame over all interrupts", rows_frame(doc["blame"])))
    if irqs["worst"]:
        keep = ("t_ns", "vcpu_tid", "irq", "kind", "path", "best_latency_ns", "latency_basis",
                *(f"{s}_ns" for s in STAGES), "total_ns", "cause_kind", "cause", "dominant_stage", "verdict")
        out.append(("worst interrupts", rows_frame([{"rank": n, **{k: r.get(k) for k in keep}}
                                                     for n, r in enumerate(irqs["worst"], 1)])))
    if doc["notes"]:
        out.append(("notes", pl.DataFrame({"note": doc["notes"]})))
    return out


def exits_sections(rep: ExitsReport) -> Sections:
    """``kvmtrace exits``: per class, per vCPU thread and class, per phase and class."""
    return [("exits per class", rep.by_class), ("exits per vCPU thread and class", rep.by_thread),
            ("exits per phase and class", rep.by_phase)]


def faults_sections(rep: FaultsReport) -> Sections:
    """``kvmtrace faults``: per phase, per phase and region, the memory layout, the rate over time, the verdict."""
    out: Sections = [("stage-2 faults per phase", rep.by_phase()), ("per phase and region", rep.by_region()),
                     ("guest physical memory regions", rep.regions),
                     ("faults per second over time", rep.timeline)]
    if rep.stage1 is not None:
        out.append(("stage 1 (guest) vs stage 2 (host) per phase", rep.stage1))
    out.append(("verdict", pl.DataFrame({"verdict": [rep.verdict]})))
    return out


def vcpus_sections(rep: VcpusReport) -> Sections:
    """``kvmtrace vcpus``: the threads, time per state, who held the CPU while each was runnable."""
    return [("vCPU threads", rep.threads), ("time per state", rep.time_per_state),
            ("who held the CPU while the vCPU was runnable (waking, preempted)", rep.holders)]


def native_sections(native: dict[str, Any]) -> Sections:
    """The host's real-time threads (analysis/native.py): wakeup latency, stages, blame, worst wakeups."""
    w = native["wakeups"]
    out: Sections = [("real-time threads on the host", rows_frame(native["threads"]))]
    latency = [{"measure": m, **w[m]} for m in ("latency_ns", "timer_ns") if w[m].get("count")]
    if latency:
        out.append(("wakeup latency (ns)", rows_frame(latency)))
    if w["stages"]:
        out.append(("wakeup stages (ns)", rows_frame([{"stage": k, **v} for k, v in w["stages"].items()])))
    if native["blame"]:
        out.append(("blame over all wakeups", rows_frame(native["blame"])))
    if w["worst"]:
        out.append(("worst wakeups", rows_frame([{"rank": n, **r} for n, r in enumerate(w["worst"], 1)])))
    return out
