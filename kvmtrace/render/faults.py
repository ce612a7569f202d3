"""``kvmtrace faults``: rich tables of stage-2 faults per phase, kind and region, a sparkline, the verdict."""

from __future__ import annotations

import polars as pl
from rich.console import Console
from rich.table import Table

from kvmtrace.analysis.faults import FaultsReport
from kvmtrace.units import us

SPARK = " ▁▂▃▄▅▆▇█"


def sparkline(values: list[float]) -> str:
    """One character per value, scaled to the maximum (a space for zero)."""
    top = max(values) if values else 0
    if top <= 0:
        return " " * len(values)
    steps = len(SPARK) - 1
    return "".join(SPARK[0 if v <= 0 else max(1, round(steps * v / top))] for v in values)


def _phase_table(df: pl.DataFrame) -> Table:
    t = Table(title="Stage-2 faults per phase", title_justify="left")
    cols = ("phase", "faults", "translation (first touch)", "permission", "access flag", "other", "RAM", "MMIO",
            "handling total (us)", "unique pages")
    for c in cols:
        t.add_column(c, justify="left" if c == "phase" else "right")
    for r in df.iter_rows(named=True):
        t.add_row(r["phase"], f"{r['faults']:,}", f"{r['translation']:,}", f"{r['permission']:,}",
                  f"{r['access_flag']:,}", f"{r['other']:,}", f"{r['ram']:,}", f"{r['mmio']:,}",
                  us(r["handling_total_ns"]), f"{r['unique_pages']:,}")
    return t


def _region_table(df: pl.DataFrame) -> Table:
    t = Table(title="Per phase and region", title_justify="left")
    for c in ("phase", "region", "kind", "faults", "reads", "writes", "instruction fetches"):
        t.add_column(c, justify="left" if c in ("phase", "region", "kind") else "right")
    for r in df.iter_rows(named=True):
        t.add_row(r["phase"], r["region"], "MMIO" if r["mmio"] else "memory", f"{r['faults']:,}",
                  f"{r['reads']:,}", f"{r['writes']:,}", f"{r['ifetch']:,}")
    return t


def _layout_table(regions: pl.DataFrame, used: set[str]) -> Table:
    t = Table(title="Guest physical memory layout (regions with faults)", title_justify="left")
    for c in ("region", "start", "end", "source"):
        t.add_column(c)
    for r in regions.filter(pl.col("name").is_in(list(used))).iter_rows(named=True):
        t.add_row(r["name"], f"{r['start']:#x}", f"{r['end']:#x}", r["source"])
    return t


def _stage1_table(df: pl.DataFrame, events: list[str]) -> Table:
    t = Table(title=f"Stage 1 (guest: {', '.join(events) or 'no fault events'}) vs stage 2 (host), per phase",
              title_justify="left")
    for c in ("phase", "stage-2 faults (host)", "stage-1 faults (guest)"):
        t.add_column(c, justify="left" if c == "phase" else "right")
    for r in df.iter_rows(named=True):
        s1 = f"{r['stage1_faults']:,}" if r["stage1_faults"] is not None else "not recorded"
        t.add_row(r["phase"], f"{r['stage2_faults']:,}", s1)
    return t


def render_faults(rep: FaultsReport, console: Console) -> None:
    where = f"phase {rep.window}" if rep.window else "whole capture"
    console.print(f"[bold]Stage-2 faults of {rep.capture}[/bold] ({where}, {rep.faults.height:,} faults)")
    console.print(_phase_table(rep.by_phase()))
    console.print(_region_table(rep.by_region()))
    console.print(_layout_table(rep.regions, set(rep.faults["region"].unique().to_list())))
    if rep.split is not None:
        s = rep.split
        console.print(f"Around the {rep.focus} phase: {s['before']:,} before, {s['inside']:,} inside, "
                      f"{s['after']:,} after")
    tl = rep.timeline
    if tl.height:
        peak = float(tl["per_s"].max())  # type: ignore[arg-type]
        span = (int(tl["start_ns"][-1]) - int(tl["start_ns"][0])) / (tl.height - 1) / 1e9 if tl.height > 1 else 0
        console.print(f"Faults per second over time ({tl.height} slices of {span:.2f} s, peak {peak:,.0f}/s):")
        console.print(f"  |{sparkline(tl['per_s'].to_list())}|")
    if rep.stage1 is not None:
        console.print(_stage1_table(rep.stage1, rep.stage1_events))
    console.print(f"[bold]{rep.verdict}[/bold]")
    for n in rep.notes:
        console.print(f"[yellow]{n}[/yellow]")
