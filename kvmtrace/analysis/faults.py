"""``kvmtrace faults``: the stage-2 faults as one report: the split around the focus phase, per phase
and region, a timeline, the plain-language verdict, and (with a guest capture) stage-1 faults beside
stage-2 ones. The per-fault table comes from :mod:`kvmtrace.model.faults`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import polars as pl

from kvmtrace.ingest.tables import EventTables
from kvmtrace.model.faults import by_phase, by_region, fault_table, guest_stage1, ifetch, timeline
from kvmtrace.units import count, plural


def split(faults: pl.DataFrame, start_ns: int, end_ns: int) -> dict[str, int]:
    """Faults before, inside and after [start_ns, end_ns]."""
    t = faults["t_ns"]
    return {"before": int((t < start_ns).sum()), "inside": int(t.is_between(start_ns, end_ns).sum()),
            "after": int((t > end_ns).sum())}


def _inside_words(inside: pl.DataFrame) -> list[str]:
    """Phrases for what the focus window saw: MMIO per region, RAM faults by kind."""
    parts = []
    mmio = inside.filter("mmio").group_by("region").agg(
        pl.len().alias("n"), (pl.col("write") == True).sum().alias("w"),  # noqa: E712
        (pl.col("write") == False).sum().alias("r")).sort(["n", "region"], descending=[True, False])  # noqa: E712
    for row in mmio.iter_rows(named=True):
        name = row["region"].upper() if row["region"] in ("uart", "gic", "rtc", "gpio") else row["region"]
        parts.append(f"{plural(row['n'], 'MMIO access', 'MMIO accesses')} to the {name} "
                     f"({count(row['r'])} reads, {count(row['w'])} writes)")
    ram = (inside.filter(~pl.col("mmio")).group_by("kind", ifetch().alias("ifetch")).len()
           .sort(["len", "kind", "ifetch"], descending=[True, False, False]))
    for row in ram.iter_rows(named=True):
        what = "instruction-fetch" if row["ifetch"] else "data"
        parts.append(f"{count(row['len'])} {what} {row['kind'].replace('_', '-')} "
                     f"fault{'' if row['len'] == 1 else 's'} in RAM")
    return parts


def verdict(faults: pl.DataFrame, phases: pl.DataFrame, focus: str | None) -> str:
    """One plain sentence or two on when the stage-2 faults happened."""
    total = faults.height
    if total == 0:
        return "no stage-2 faults in this capture"
    if focus is None or focus not in phases["name"].to_list():
        bp = by_phase(faults).sort("faults", descending=True, maintain_order=True).row(0, named=True)
        return (f"{100 * bp['faults'] / total:.0f}% of stage-2 faults ({bp['faults']:,} of {total:,}) "
                f"happened in the {bp['phase']} phase")
    row = phases.filter(pl.col("name") == focus).row(0, named=True)
    s = split(faults, row["start_ns"], row["end_ns"])
    before = faults.filter(pl.col("t_ns") < row["start_ns"])
    in_boot = int((before["phase"] == "boot").sum())
    where = ", during guest boot" if before.height and in_boot >= 0.9 * before.height else ""
    text = (f"{100 * s['before'] / total:.0f}% of stage-2 faults ({s['before']:,}) happened before the {focus} "
            f"phase{where}; the {focus} phase saw {s['inside']:,}")
    inside = faults.filter(pl.col("t_ns").is_between(row["start_ns"], row["end_ns"]))
    parts = _inside_words(inside)
    if parts:
        text += ": " + ", ".join(parts[:-1]) + (" and " if len(parts) > 1 else "") + parts[-1]
    if s["after"]:
        text += f"; {s['after']:,} came after it"
    return text


def focus_phase(phases: pl.DataFrame, window: str | None) -> str | None:
    """The phase the verdict is about: ``window``, else ``cyclictest``, else the first phase that is not boot."""
    names = phases["name"].to_list()
    if window is not None:
        return window
    if "cyclictest" in names:
        return "cyclictest"
    return next((n for n in names if n != "boot"), None)


@dataclass
class FaultsReport:
    """``kvmtrace faults``: the per-fault table and its summaries."""

    capture: str
    window: str | None          # --window: rows restricted to this phase
    focus: str | None           # the phase of the before/inside/after split and the verdict
    faults: pl.DataFrame
    regions: pl.DataFrame
    phases: pl.DataFrame
    split: dict[str, int] | None
    timeline: pl.DataFrame
    verdict: str
    notes: list[str]
    stage1: pl.DataFrame | None = None   # phase, stage2_faults, stage1_faults (with --guest)
    stage1_events: list[str] = field(default_factory=list)
    read: dict[str, Any] = field(default_factory=dict)  # ReadReport.section of the window
    kind: str = "faults"

    def rows(self) -> pl.DataFrame:
        """One row per stage-2 fault (docs/stages.md "Stage-2 faults")."""
        return self.faults

    def by_phase(self) -> pl.DataFrame:
        return by_phase(self.faults)

    def by_region(self) -> pl.DataFrame:
        return by_region(self.faults)

    def to_json(self) -> dict[str, object]:
        return {
            "kvmtrace_faults": 1, "capture": self.capture, "window": self.window, "focus": self.focus,
            "faults": self.faults.height, "split": self.split, "verdict": self.verdict,
            "by_phase": self.by_phase().to_dicts(), "by_region": self.by_region().to_dicts(),
            "regions": self.regions.to_dicts(), "timeline": self.timeline.to_dicts(),
            "stage1": self.stage1.to_dicts() if self.stage1 is not None else None,
            "stage1_events": self.stage1_events, "read": self.read, "notes": self.notes,
        }


def faults_report(t: EventTables, phases: pl.DataFrame, capture: str,
                  window: tuple[str, int, int] | None = None,
                  guest_memory: list[dict[str, object]] | None = None,
                  guest: tuple[EventTables, pl.DataFrame] | None = None,
                  guest_offset_ns: int | None = None) -> FaultsReport:
    """Stage-2 faults of the capture (or of a window: name, start_ns, end_ns) with the split around the
    focus phase and a verdict."""
    table = fault_table(t, phases, guest_memory)
    f = table.faults
    names = phases["name"].to_list()
    focus = focus_phase(phases, window[0] if window is not None and window[0] in names else None)
    sp = None
    if focus is not None and focus in names:
        row = phases.filter(pl.col("name") == focus).row(0, named=True)
        sp = split(f, row["start_ns"], row["end_ns"])
    text = verdict(f, phases, focus if focus in names else None)
    if window is not None:
        _, start, end = window
        f = f.filter(pl.col("t_ns").is_between(start, end))
    else:
        start, end = int(t.events["ts"].min()), int(t.events["ts"].max())  # type: ignore[arg-type]
    report = FaultsReport(capture, window[0] if window else None, focus, f, table.regions, phases, sp,
                          timeline(f, start, end), text, table.notes, read=t.report.section(start, end))
    if guest is not None:
        _add_stage1(report, *guest, guest_offset_ns)
    return report


def _add_stage1(report: FaultsReport, gt: EventTables, gphases: pl.DataFrame, offset_ns: int | None = None) -> None:
    if offset_ns is not None:  # the guest aligned on the host's clock: the host's phases for both
        s1, used = guest_stage1(gt, report.phases, offset_ns)
        report.notes.append(f"guest clock aligned on the host's (guest + {offset_ns / 1e9:.6f} s): stage-1 faults "
                            "counted in the host's phases")
    else:
        s1, used = guest_stage1(gt, gphases)
    report.stage1_events = used
    if not used:
        report.notes.append("the guest capture has no page-fault events (page_fault_user/kernel, kprobes on "
                            "do_page_fault / do_mem_abort / handle_mm_fault): stage-1 faults not counted")
    s2 = by_phase(report.faults).select("phase", pl.col("faults").alias("stage2_faults"))
    # without fault events in the guest capture, stage-1 faults are not recorded (null), not zero
    recorded = pl.col("stage1_faults").fill_null(0) if used else pl.lit(None, pl.UInt32)
    report.stage1 = (s2.join(s1, on="phase", how="full", coalesce=True)
                     .with_columns(pl.col("stage2_faults").fill_null(0), recorded.alias("stage1_faults")))
