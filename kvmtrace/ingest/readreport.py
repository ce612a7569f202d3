"""What a reader could not turn into rows (lost events, skipped regions, unknown events), counted, with
the time of each loss, and said in plain sentences for a window: nothing is lost silently."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import polars as pl

SKIPPED_SHOWN = 5  # skipped regions named in a sentence; the JSON has them all


@dataclass
class SkippedRegion:
    """A part of the input that could not be decoded and was skipped (never silently)."""

    where: str  # "buffer '' cpu 1 page 17 (file offset 0x1a000)" or "line 1234"
    reason: str
    records_lost: int | None = None  # None when unknown


@dataclass
class Loss:
    """Events lost in one CPU's ring buffer just before ``ts_ns``: a page whose header flags missed events
    (``count`` None when the page has no room to store it), or a text capture's LOST EVENTS line."""

    buffer: str
    cpu: int
    ts_ns: int | None  # the page's start time (corrected); None when unknown (text captures)
    count: int | None


@dataclass
class ReadReport:
    """Everything a reader could not turn into rows, counted: nothing is lost silently."""

    lost_events: dict[str, dict[int, int]] = field(default_factory=dict)  # buffer -> cpu -> count
    lost_unknown_pages: dict[str, dict[int, int]] = field(default_factory=dict)  # pages flagged, count not stored
    kernel_overruns: dict[str, dict[int, int]] = field(default_factory=dict)  # from CPUSTAT / per_cpu stats
    skipped: list[SkippedRegion] = field(default_factory=list)
    unknown_events: dict[str, int] = field(default_factory=dict)  # "id 123" or text event name -> count
    unparsed_lines: int = 0
    losses: list[Loss] = field(default_factory=list)  # where and when, when the reader knows (trace.dat pages)

    def total_lost(self) -> int:
        return sum(n for per_cpu in self.lost_events.values() for n in per_cpu.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "lost_events": {b: {str(c): n for c, n in v.items()} for b, v in self.lost_events.items()},
            "lost_unknown_pages": {b: {str(c): n for c, n in v.items()} for b, v in self.lost_unknown_pages.items()},
            "kernel_overruns": {b: {str(c): n for c, n in v.items()} for b, v in self.kernel_overruns.items()},
            "skipped": [s.__dict__ for s in self.skipped],
            "unknown_events": dict(self.unknown_events),
            "unparsed_lines": self.unparsed_lines,
            "losses": [loss.__dict__ for loss in self.losses],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ReadReport:
        def per_cpu(x: dict[str, dict[str, int]]) -> dict[str, dict[int, int]]:
            return {b: {int(c): n for c, n in v.items()} for b, v in x.items()}

        return cls(lost_events=per_cpu(d["lost_events"]), lost_unknown_pages=per_cpu(d["lost_unknown_pages"]),
                   kernel_overruns=per_cpu(d["kernel_overruns"]), skipped=[SkippedRegion(**s) for s in d["skipped"]],
                   unknown_events=dict(d["unknown_events"]), unparsed_lines=int(d["unparsed_lines"]),
                   losses=[Loss(**x) for x in d.get("losses", [])])

    def with_losses(self, losses: list[Loss]) -> ReadReport:
        """This report with only ``losses`` (and the per-CPU counts theirs; every CPU keeps its entry)."""
        lost = {b: dict.fromkeys(v, 0) for b, v in self.lost_events.items()}
        flagged: dict[str, dict[int, int]] = {}
        for loss in losses:
            target = lost if loss.count is not None else flagged
            per_cpu = target.setdefault(loss.buffer, {})
            per_cpu[loss.cpu] = per_cpu.get(loss.cpu, 0) + (loss.count if loss.count is not None else 1)
        return ReadReport(lost, flagged, self.kernel_overruns, self.skipped, self.unknown_events,
                          self.unparsed_lines, losses)

    def within(self, start_ns: int | None, end_ns: int | None, events: pl.DataFrame) -> ReadReport:
        """The report of the events with ``start_ns <= ts <= end_ns`` (``events``, their common table): losses
        timed inside, and unknown event types counted among those events. Skipped regions stay."""
        kept = [loss for loss in self.losses if loss.ts_ns is None or ((start_ns is None or loss.ts_ns >= start_ns)
                                                                        and (end_ns is None or loss.ts_ns <= end_ns))]
        report = self.with_losses(kept) if self.losses or self.total_lost() == 0 else self
        if any(k.startswith("id ") for k in report.unknown_events):
            counts = dict(events.group_by("event").len().iter_rows())
            report.unknown_events = {k: int(counts.get(f"unknown_type_{k[3:]}", 0)) for k in report.unknown_events}
            report.unknown_events = {k: n for k, n in report.unknown_events.items() if n}
        return report

    def problems(self, start_ns: int | None = None, end_ns: int | None = None) -> list[str]:
        """Plain sentences, one per kind of problem (read_problems)."""
        return read_problems(self.to_dict(), start_ns, end_ns)

    def section(self, start_ns: int, end_ns: int) -> dict[str, Any]:
        """The ``read`` block of an analysis document: this report and its sentences for the window."""
        return {**self.to_dict(), "problems": self.problems(start_ns, end_ns)}


def merge_reports(parts: list[ReadReport]) -> ReadReport:
    """One report of reads of disjoint time spans of one file (each ``within`` its span): losses and unknown
    events added up, skipped regions once each (a page read twice is named twice), file facts from the first."""
    if not parts:
        return ReadReport()
    cpus: dict[str, dict[int, int]] = {}
    skipped: dict[tuple[str, str], SkippedRegion] = {}
    unknown: dict[str, int] = {}
    for part in parts:
        for b, per_cpu in part.lost_events.items():
            cpus.setdefault(b, {}).update(dict.fromkeys(per_cpu, 0))
        for region in part.skipped:
            skipped.setdefault((region.where, region.reason), region)
        for k, n in part.unknown_events.items():
            unknown[k] = unknown.get(k, 0) + n
    base = ReadReport(cpus, {}, parts[0].kernel_overruns, list(skipped.values()), unknown,
                      sum(p.unparsed_lines for p in parts))
    return base.with_losses([loss for p in parts for loss in p.losses])


def read_problems(read: dict[str, Any], start_ns: int | None = None, end_ns: int | None = None) -> list[str]:
    """What a reader could not turn into rows (``read``: ReadReport.to_dict()), as sentences; with a window,
    lost events are split by whether their time falls in it."""
    out = _loss_sentences(read, start_ns, end_ns)
    skipped = read["skipped"]
    if skipped:
        shown = "; ".join(f"{s['where']}: {s['reason']}" for s in skipped[:SKIPPED_SHOWN])
        more = f" (and {len(skipped) - SKIPPED_SHOWN} more)" if len(skipped) > SKIPPED_SHOWN else ""
        regions = "1 region" if len(skipped) == 1 else f"{len(skipped)} regions"
        out.append(f"{regions} of the capture could not be decoded and {'was' if len(skipped) == 1 else 'were'} "
                   f"skipped: {shown}{more}")
    if read["unknown_events"]:
        out.append("records of event types without a format were kept as unknown_type_N: "
                   + ", ".join(f"{k} x{v:,}" for k, v in read["unknown_events"].items()))
    if read["unparsed_lines"]:
        out.append(f"{read['unparsed_lines']:,} text lines did not parse and were skipped")
    return out


def _loss_sentences(read: dict[str, Any], start_ns: int | None, end_ns: int | None) -> list[str]:
    losses = [Loss(**x) for x in read.get("losses", [])]
    if not losses:  # counts without times (an older cache entry)
        lost = sum(n for per in read["lost_events"].values() for n in per.values())
        flagged = sum(n for per in read["lost_unknown_pages"].values() for n in per.values())
        said = f"{_count_text([], lost, flagged)} in the ring buffer (see kvmtrace info)"
        return [said] if lost or flagged else []
    if start_ns is None or end_ns is None:
        return [f"{_count_text(losses)} in the ring buffer ({_places(losses)}): events around them are missing"]
    inside = [x for x in losses if x.ts_ns is not None and start_ns <= x.ts_ns <= end_ns]
    untimed = [x for x in losses if x.ts_ns is None]
    outside = [x for x in losses if x.ts_ns is not None and not start_ns <= x.ts_ns <= end_ns]
    out = []
    if inside:
        out.append(f"{_count_text(inside)} in the ring buffer inside this window ({_places(inside)}): "
                   "interrupts, exits or faults around them may be missing or mis-timed")
    if untimed:
        out.append(f"{_count_text(untimed)} in the ring buffer at unknown times ({_places(untimed)}): "
                   "some may be inside this window")
    if outside:
        out.append(f"{_count_text(outside)} in the ring buffer outside this window ({_places(outside)})")
    return out


def _count_text(losses: list[Loss], lost: int | None = None, flagged: int | None = None) -> str:
    lost = sum(x.count or 0 for x in losses) if lost is None else lost
    flagged = sum(1 for x in losses if x.count is None) if flagged is None else flagged
    parts = [f"{lost:,} events were lost"] if lost else []
    if flagged:
        parts.append(f"{flagged} time{'s' if flagged != 1 else ''} events were lost without a count")
    return " and ".join(parts)


def _places(losses: list[Loss]) -> str:
    """Where and when, the first few: ``CPU 1 at 12.345678 s: 144``."""
    shown = ", ".join(f"CPU {x.cpu}{f' of {x.buffer!r}' if x.buffer else ''}"
                      f"{f' at {x.ts_ns / 1e9:.6f} s' if x.ts_ns is not None else ''}"
                      f": {x.count if x.count is not None else '?'}" for x in losses[:SKIPPED_SHOWN])
    return shown + (f" and {len(losses) - SKIPPED_SHOWN} more" if len(losses) > SKIPPED_SHOWN else "")
