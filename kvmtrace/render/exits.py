"""``kvmtrace exits``: rich tables of the exit profile (both intervals, labelled) and output files."""

from __future__ import annotations

import polars as pl
from rich.console import Console
from rich.table import Table

from kvmtrace.analysis.exits import ExitsReport
from kvmtrace.units import us

HANDLING = "handling (kvm_exit -> next kvm_entry, time in the host)"
GUEST_RUN = "guest run (kvm_entry -> kvm_exit, time in the guest before the exit)"


def _interval_table(df: pl.DataFrame, keys: list[str], label: str, prefix: str) -> Table:
    t = Table(title=f"{label}, us", title_justify="left")
    for k in keys:
        t.add_column(k)
    for c in ("count", "rate/s", "min", "p50", "p99", "max", "total"):
        t.add_column(c, justify="right")
    for r in df.iter_rows(named=True):
        rate = "-" if r["rate_per_s"] is None else f"{r['rate_per_s']:,.1f}"
        t.add_row(*[str(r[k]) for k in keys], f"{r['count']:,}", rate,
                  *[us(r[f"{prefix}_{s}_ns"]) for s in ("min", "p50", "p99", "max", "total")])
    return t


def _inner_table(df: pl.DataFrame, keys: list[str]) -> Table:
    t = Table(title="Inside the handling intervals", title_justify="left")
    for k in keys:
        t.add_column(k)
    for c in ("userspace exits", "VMM time (us)", "MMIO reads", "MMIO writes", "sysreg traps",
              "wakeups poll", "wakeups wait", "halt-poll changes"):
        t.add_column(c, justify="right")
    for r in df.iter_rows(named=True):
        t.add_row(*[str(r[k]) for k in keys], f"{r['userspace_exits']:,}", us(r["vmm_ns"]),
                  f"{r['mmio_reads']:,}", f"{r['mmio_writes']:,}", f"{r['sysreg_traps']:,}",
                  f"{r['wakeups_poll']:,}", f"{r['wakeups_wait']:,}", f"{r['halt_poll_changes']:,}")
    return t


def render_exits(rep: ExitsReport, console: Console, by_thread: bool = False) -> None:
    where = f"phase {rep.window}" if rep.window else "whole capture"
    console.print(f"[bold]Exits of {rep.capture}[/bold] ({rep.arch}, {where}, {rep.span_ns / 1e9:.3f} s, "
                  f"{rep.exits.height:,} exits)")
    console.print(_interval_table(rep.by_class, ["exit_class"], HANDLING, "handling"))
    console.print(_interval_table(rep.by_class, ["exit_class"], GUEST_RUN, "guest_run"))
    console.print(_inner_table(rep.by_class, ["exit_class"]))
    if by_thread or rep.by_thread["vcpu_tid"].n_unique() > 1:
        console.print(_interval_table(rep.by_thread, ["vcpu_tid", "exit_class"], "Per vCPU thread: " + HANDLING,
                                      "handling"))
    if rep.window is None and rep.by_phase["phase"].n_unique() > 1:
        console.print(_phase_table(rep.by_phase))
    console.print("perf kvm stat reports the handling interval on x86 and the guest-run interval on arm64; "
                  "both are shown here, labelled.")
    for n in rep.notes:
        console.print(f"[yellow]{n}[/yellow]")


def _phase_table(df: pl.DataFrame) -> Table:
    t = Table(title="Per phase (handling / guest run p50 and p99, us)", title_justify="left")
    for c in ("phase", "exit_class", "count", "rate/s", "handling p50", "handling p99", "guest run p50",
              "guest run p99", "handling total"):
        t.add_column(c, justify="left" if c in ("phase", "exit_class") else "right")
    for r in df.iter_rows(named=True):
        rate = "-" if r["rate_per_s"] is None else f"{r['rate_per_s']:,.1f}"
        t.add_row(r["phase"], r["exit_class"], f"{r['count']:,}", rate, us(r["handling_p50_ns"]),
                  us(r["handling_p99_ns"]), us(r["guest_run_p50_ns"]), us(r["guest_run_p99_ns"]),
                  us(r["handling_total_ns"]))
    return t

