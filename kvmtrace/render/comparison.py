"""Several captures side by side: one row per main figure, one column per capture.

``compare(docs)`` takes ``analyze --json`` documents (``LatencyAnalysis.document()``); a capture that has
no vCPU threads is given as ``{"capture": ..., "cyclictest": [...], "wakeups": {"count", "max_ns"}}``.
Every cell names the key of its document it comes from, so a page can be checked against the JSON.
A placeholder for the ``kvmtrace compare`` command being built separately: replace this module with it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kvmtrace.model.interrupts import STAGES

# label, key path in the document, format (count, ns, us, pct, text)
MEASURES: tuple[tuple[str, str, str], ...] = (
    ("analysis window", "window.name", "text"),
    ("guest interrupts", "interrupts.count", "count"),
    ("best known latency p50", "interrupts.best_latency_ns.p50", "ns"),
    ("best known latency p95", "interrupts.best_latency_ns.p95", "ns"),
    ("best known latency p99", "interrupts.best_latency_ns.p99", "ns"),
    ("best known latency max", "interrupts.best_latency_ns.max", "ns"),
    ("from deadline p99", "interrupts.latency_ns.p99", "ns"),
    ("host side (host IRQ -> kvm_entry) p99", "interrupts.total_ns.p99", "ns"),
    ("timer wakeups (no vCPU threads)", "wakeups.count", "count"),
    ("timer wakeup latency max", "wakeups.max_ns", "ns"),
    ("cyclictest loops (its own summary)", "cyclictest.0.loops", "count"),
    ("cyclictest avg (its own summary)", "cyclictest.0.avg_us", "us"),
    ("cyclictest max (its own summary)", "cyclictest.0.max_us", "us"),
)


@dataclass(frozen=True)
class Cell:
    """A value of one document, where it comes from, and how to show it."""

    key: str
    value: Any
    fmt: str


def lookup(doc: dict[str, Any], key: str) -> Any:
    """The value at a dotted key, None when any part is missing. In a list, a part is an index (``worst.0``) or
    selects the first record whose field has a value (``by_class[exit_class=IRQ]``: rows whose order may tie)."""
    node: Any = doc
    for part in key.split("."):
        name, _, select = part.partition("[")
        if isinstance(node, list) and name.isdigit():
            node = node[int(name)] if int(name) < len(node) else None
        elif isinstance(node, dict) and name:
            node = node.get(name)
        elif name:
            return None
        if select:
            field, _, value = select.rstrip("]").partition("=")
            rows = node if isinstance(node, list) else []
            node = next((r for r in rows if isinstance(r, dict) and str(r.get(field)) == value), None)
        if node is None:
            return None
    return node


def _largest_stage(doc: dict[str, Any]) -> Cell | None:
    stages = lookup(doc, "interrupts.stages") or {}
    shared = [s for s in STAGES if s in stages and stages[s]["share"] is not None]
    if not shared:
        return None
    top = max(shared, key=lambda s: stages[s]["share"])
    return Cell(f"interrupts.stages.{top}.share", stages[top]["share"], f"pct:{top}")


def _top_cause(doc: dict[str, Any]) -> Cell | None:
    blame = doc.get("blame") or []
    return Cell("blame.0.share", blame[0]["share"], f"pct:{blame[0]['cause']}") if blame else None


def compare(docs: list[dict[str, Any]]) -> list[tuple[str, list[Cell | None]]]:
    """Rows of (measure, one cell per document); rows no document has are left out."""
    rows: list[tuple[str, list[Cell | None]]] = []
    for label, key, fmt in MEASURES:
        cells = [Cell(key, v, fmt) if (v := lookup(d, key)) is not None else None for d in docs]
        if any(c is not None for c in cells):
            rows.append((label, cells))
    for label, pick in (("largest stage (share of host-side latency)", _largest_stage),
                        ("top cause (share of all latency)", _top_cause)):
        cells = [pick(d) for d in docs]
        if any(c is not None for c in cells):
            rows.append((label, cells))
    return rows
