"""Exit profile: one row per ``kvm_exit`` with its class, both intervals and what happened inside.

Intervals (per vCPU thread, events in trace order):

* **handling** = ``kvm_exit`` -> the same thread's next ``kvm_entry`` (time in the host).
* **guest run** = the thread's previous ``kvm_entry`` -> this ``kvm_exit`` (time in the guest).

An interval is null when the neighbouring event of the thread is not the expected kind (a lost
event, the start or end of the capture). The per-exit table starts with the columns of
docs/stages.md ("Exits") and adds the inner-event columns listed in ``EXTRA_SCHEMA``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import polars as pl

from kvmtrace.arch import arm32, arm64, x86
from kvmtrace.arch.detect import kvm_arch
from kvmtrace.ingest.tables import EventTables, cpu_column, pid_column
from kvmtrace.model.phases import phase_of
from kvmtrace.model.requires import requires_events
from kvmtrace.model.vcpus import vcpu_threads

EXIT_SCHEMA: dict[str, pl.DataType] = {
    "t_ns": pl.Int64(), "vcpu_tid": pl.Int32(), "cpu": pl.Int32(), "ret": pl.Int32(), "esr_ec": pl.Int32(),
    "exit_class": pl.String(), "class_inferred": pl.Boolean(), "handling_ns": pl.Int64(),
    "guest_run_ns": pl.Int64(), "phase": pl.String(),
}
EXTRA_SCHEMA: dict[str, pl.DataType] = {
    "idx": pl.UInt32(),              # row of the kvm_exit in the common table
    "entry_idx": pl.UInt32(),        # row of the kvm_entry that ends the handling interval
    "userspace_exits": pl.UInt32(),  # kvm_userspace_exit events in the handling interval
    "userspace_reason": pl.String(),  # KVM_EXIT_* name of the first one ("restart" for -EINTR)
    "vmm_ns": pl.Int64(),            # first kvm_userspace_exit -> kvm_entry: time in the VMM and back
    "mmio_reads": pl.UInt32(),       # kvm_mmio type 0 (read, before it is satisfied)
    "mmio_writes": pl.UInt32(),      # kvm_mmio type 2
    "mmio_gpa": pl.UInt64(),         # gpa of the first kvm_mmio
    "sysreg_traps": pl.UInt32(),     # kvm_handle_sys_reg (arm64)
    "guest_faults": pl.UInt32(),     # kvm_guest_fault + kvm_access_fault
    "wakeup": pl.String(),           # kvm_vcpu_wakeup: "poll" (woken while polling) or "wait" (blocked)
    "wakeup_ns": pl.Int64(),         # its ns field: how long the vCPU polled or waited
    "halt_poll_ns": pl.Int64(),      # kvm_halt_poll_ns: the new halt-polling window set in the interval
}
INNER_EVENTS = tuple(dict.fromkeys((
    "kvm_userspace_exit", "kvm_mmio", "kvm_handle_sys_reg", "kvm_guest_fault", "kvm_access_fault",
    "kvm_vcpu_wakeup", "kvm_halt_poll_ns", *arm32.FIXED_CLASS)))
USERSPACE_REASONS = {0: "UNKNOWN", 1: "EXCEPTION", 2: "IO", 3: "HYPERCALL", 4: "DEBUG", 5: "HLT", 6: "MMIO",
                     7: "IRQ_WINDOW_OPEN", 8: "SHUTDOWN", 9: "FAIL_ENTRY", 10: "INTR", 17: "INTERNAL_ERROR",
                     24: "SYSTEM_EVENT", 28: "ARM_NISV", 29: "X86_RDMSR", 30: "X86_WRMSR"}
MMIO_READ_UNSATISFIED, MMIO_READ, MMIO_WRITE = 0, 1, 2


def exit_intervals(t: EventTables) -> pl.DataFrame:
    """Per kvm_exit: idx, t_ns, vcpu_tid, cpu, entry_idx, entry_ns, handling_ns, guest_run_ns."""
    vcpus = vcpu_threads(t)["vcpu_tid"].implode()
    parts = []
    for name, is_exit in (("kvm_exit", True), ("kvm_entry", False)):
        df = t.table(name)
        parts.append(df.select("idx", "ts", pl.col(pid_column(df)).alias("vcpu_tid"),
                               pl.col(cpu_column(df)).alias("cpu"), pl.lit(is_exit).alias("is_exit")))
    both = pl.concat(parts).filter(pl.col("vcpu_tid").is_in(vcpus)).sort("vcpu_tid", "idx")
    nxt_entry = ~pl.col("is_exit").shift(-1).over("vcpu_tid").fill_null(True)
    prev_entry = ~pl.col("is_exit").shift(1).over("vcpu_tid").fill_null(True)
    return (both.with_columns(
                pl.when(nxt_entry).then(pl.col("idx").shift(-1).over("vcpu_tid")).alias("entry_idx"),
                pl.when(nxt_entry).then(pl.col("ts").shift(-1).over("vcpu_tid")).alias("entry_ns"),
                pl.when(prev_entry).then(pl.col("ts").shift(1).over("vcpu_tid")).alias("prev_entry_ns"))
            .filter("is_exit")
            .select("idx", pl.col("ts").alias("t_ns"), "vcpu_tid", "cpu", "entry_idx", "entry_ns",
                    (pl.col("entry_ns") - pl.col("ts")).alias("handling_ns"),
                    (pl.col("ts") - pl.col("prev_entry_ns")).alias("guest_run_ns"))
            .sort("idx"))


def _inner_frame(t: EventTables, name: str) -> pl.DataFrame:
    df = t.table(name)
    cols = {"hsr": pl.UInt64(), "reason": pl.Int64(), "errno": pl.Int64(), "type": pl.Int64(),
            "gpa": pl.UInt64(), "waited": pl.Boolean(), "ns": pl.Int64(), "new": pl.Int64()}
    return df.select("idx", "ts", pl.col(pid_column(df)).alias("vcpu_tid"), pl.lit(name).alias("event"),
                     *[(pl.col(c) if c in df.columns else pl.lit(None)).cast(dt).alias(c) for c, dt in cols.items()])


def inner_events(t: EventTables, intervals: pl.DataFrame, names: tuple[str, ...] = INNER_EVENTS) -> pl.DataFrame:
    """Events of a vCPU thread inside one of its handling intervals, with ``exit_idx`` (and ``entry_idx``)."""
    frames = [_inner_frame(t, n) for n in names if t.has(n)]
    if not frames:
        return _inner_frame(t, "kvm_mmio").head(0).with_columns(
            pl.lit(None, pl.UInt32).alias("exit_idx"), pl.lit(None, pl.UInt32).alias("entry_idx"))
    ev = pl.concat(frames).sort("idx")
    keys = intervals.select(pl.col("idx").alias("exit_idx"), "vcpu_tid", "entry_idx",
                            pl.col("idx").alias("k")).sort("k")
    joined = ev.with_columns(pl.col("idx").alias("k")).join_asof(keys, on="k", by="vcpu_tid", strategy="backward",
                                                                 check_sortedness=False)
    inside = pl.col("exit_idx").is_not_null() & (pl.col("entry_idx").is_null() | (pl.col("idx") < pl.col("entry_idx")))
    return joined.filter(inside).drop("k")


def _inner_summary(inner: pl.DataFrame) -> pl.DataFrame:
    ev = pl.col("event")
    usr = ev == "kvm_userspace_exit"
    reason = (pl.when(pl.col("errno") < 0).then(pl.lit("restart"))
              .otherwise(pl.col("reason").replace_strict(USERSPACE_REASONS, default=None, return_dtype=pl.String)
                         .fill_null(pl.lit("REASON_") + pl.col("reason").cast(pl.String))))
    wake = ev == "kvm_vcpu_wakeup"
    return inner.sort("idx").group_by("exit_idx").agg(
        usr.sum().cast(pl.UInt32).alias("userspace_exits"),
        reason.filter(usr).first().alias("userspace_reason"),
        pl.col("ts").filter(usr).first().alias("usr_ts"),
        ((ev == "kvm_mmio") & (pl.col("type") == MMIO_READ_UNSATISFIED)).sum().cast(pl.UInt32).alias("mmio_reads"),
        ((ev == "kvm_mmio") & (pl.col("type") == MMIO_WRITE)).sum().cast(pl.UInt32).alias("mmio_writes"),
        pl.col("gpa").filter(ev == "kvm_mmio").first().alias("mmio_gpa"),
        (ev == "kvm_handle_sys_reg").sum().cast(pl.UInt32).alias("sysreg_traps"),
        ev.is_in(["kvm_guest_fault", "kvm_access_fault"]).sum().cast(pl.UInt32).alias("guest_faults"),
        pl.when(pl.col("waited")).then(pl.lit("wait")).otherwise(pl.lit("poll")).filter(wake).last().alias("wakeup"),
        pl.col("ns").filter(wake).last().alias("wakeup_ns"),
        pl.col("new").filter(ev == "kvm_halt_poll_ns").last().alias("halt_poll_ns"),
    )


def _classify(t: EventTables, arch: str, inner: pl.DataFrame) -> pl.DataFrame:
    """idx, ret, esr_ec, exit_class, class_inferred for every kvm_exit."""
    ex = t.table("kvm_exit")
    if arch == "arm64":
        return ex.select("idx", pl.col("ret").cast(pl.Int32), pl.col("esr_ec").cast(pl.Int32),
                         arm64.exit_class(pl.col("ret"), pl.col("esr_ec")).alias("exit_class"),
                         pl.lit(False).alias("class_inferred"))
    if arch == "x86":
        isa = pl.col("isa") if "isa" in ex.columns else None
        return ex.select("idx", pl.lit(None, pl.Int32).alias("ret"), pl.lit(None, pl.Int32).alias("esr_ec"),
                         x86.exit_class(pl.col("exit_reason"), isa).alias("exit_class"),
                         pl.lit(False).alias("class_inferred"))
    inferred = arm32.inferred_class(inner).rename({"exit_idx": "idx"})
    return (ex.select("idx").join(inferred, on="idx", how="left")
            .select("idx", pl.lit(None, pl.Int32).alias("ret"), pl.lit(None, pl.Int32).alias("esr_ec"),
                    pl.col("exit_class").fill_null(arm32.NO_EVIDENCE), pl.lit(True).alias("class_inferred")))


@dataclass
class ExitTable:
    """The per-exit table and what was learnt building it."""

    exits: pl.DataFrame
    arch: str
    notes: list[str] = field(default_factory=list)
    inner: pl.DataFrame | None = None


@requires_events("kvm:kvm_entry", "kvm:kvm_exit", analysis="exits")
def exit_table(t: EventTables, phases: pl.DataFrame) -> ExitTable:
    """One row per kvm_exit: the docs/stages.md columns, then ``EXTRA_SCHEMA``."""
    arch = kvm_arch(set(t.table("kvm_exit").columns))
    intervals = exit_intervals(t)
    inner = inner_events(t, intervals)
    classes = _classify(t, arch, inner)
    summary = _inner_summary(inner).rename({"exit_idx": "idx"})
    zero = ["userspace_exits", "mmio_reads", "mmio_writes", "sysreg_traps", "guest_faults"]
    df = (intervals.join(classes, on="idx", how="left").join(summary, on="idx", how="left")
          .with_columns(phase_of(pl.col("t_ns"), phases).alias("phase"),
                        (pl.col("entry_ns") - pl.col("usr_ts")).alias("vmm_ns"),
                        *[pl.col(c).fill_null(0) for c in zero]))
    schema = {**EXIT_SCHEMA, **EXTRA_SCHEMA}
    out = df.select(list(schema)).cast(schema)  # type: ignore[arg-type]
    return ExitTable(out, arch, _notes(t, arch), inner)


def _notes(t: EventTables, arch: str) -> list[str]:
    notes = []
    if arch == "arm32":
        notes.append("kvm_exit has no exit reason (32-bit ARM): classes are inferred from the events "
                     "in each handling interval; OTHER = no classifying event (IRQ or an untraced trap)")
    for name, what in (("kvm_userspace_exit", "userspace exits"), ("kvm_mmio", "MMIO accesses"),
                       ("kvm_vcpu_wakeup", "halt polling / wakeups")):
        if name not in t.formats:
            notes.append(f"no {name} in this capture: {what} are not counted")
    return notes


def _interval_stats(col: str, label: str) -> list[pl.Expr]:
    c = pl.col(col)
    return [c.min().alias(f"{label}_min_ns"), c.quantile(0.5, "nearest").cast(pl.Int64).alias(f"{label}_p50_ns"),
            c.quantile(0.99, "nearest").cast(pl.Int64).alias(f"{label}_p99_ns"), c.max().alias(f"{label}_max_ns"),
            c.sum().alias(f"{label}_total_ns")]


def summarise(exits: pl.DataFrame, by: list[str], span_ns: int | pl.Expr | None) -> pl.DataFrame:
    """Per group of ``by`` (e.g. ``["exit_class"]``): count, rate_per_s, both intervals, inner events.

    ``span_ns`` is the time the counts are divided by (an int, or an expression over the groups,
    e.g. the phase duration); None leaves ``rate_per_s`` null.
    """
    span = pl.lit(span_ns) if isinstance(span_ns, int) else span_ns
    aggs = [pl.len().cast(pl.UInt32).alias("count"),
            *_interval_stats("handling_ns", "handling"), *_interval_stats("guest_run_ns", "guest_run"),
            pl.col("userspace_exits").sum().alias("userspace_exits"), pl.col("vmm_ns").sum().alias("vmm_ns"),
            pl.col("mmio_reads").sum().alias("mmio_reads"), pl.col("mmio_writes").sum().alias("mmio_writes"),
            pl.col("sysreg_traps").sum().alias("sysreg_traps"),
            (pl.col("wakeup") == "poll").sum().cast(pl.UInt32).alias("wakeups_poll"),
            (pl.col("wakeup") == "wait").sum().cast(pl.UInt32).alias("wakeups_wait"),
            pl.col("halt_poll_ns").is_not_null().sum().cast(pl.UInt32).alias("halt_poll_changes")]
    out = exits.group_by(by).agg(aggs)
    rate = (pl.col("count") / (span / 1e9)) if span is not None else pl.lit(None, pl.Float64)
    out = out.with_columns(rate.cast(pl.Float64).alias("rate_per_s"))
    front = [*by, "count", "rate_per_s"]
    return out.select(*front, *[c for c in out.columns if c not in front]).sort(
        [*by[:-1], "count", by[-1]], descending=[False] * (len(by) - 1) + [True, False], nulls_last=True)
