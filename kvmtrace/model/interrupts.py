"""Guest interrupts as timelines of stages (columns and stage names: docs/stages.md).

Each interrupt is reconstructed with ``join_asof`` on the global event order (``idx``), per
vCPU thread: from the host-side event that starts it to the ``kvm_entry`` that delivers it.

- blocked timer path: host IRQ -> ``sched_wakeup`` of the vCPU -> switch-in -> injection
  (``kvm_timer_update_irq`` level 1) -> ``kvm_entry``
- running timer path: host IRQ (``kvm guest vtimer``) -> injection -> ``kvm_exit`` -> ``kvm_entry``
- device interrupts from the VMM: ``kvm_irq_line`` level 1 -> (wakeup -> switch-in ->) entry
- preempted timer path: the deadline passed while the runnable vCPU was switched out -> switch-in
  -> injection (at vCPU load) -> ``kvm_entry``
- x86: ``kvm_inj_virq`` / ``kvm_apic_accept_irq`` -> ``kvm_entry``
"""

from __future__ import annotations

import polars as pl

from kvmtrace.errors import MissingEventsError
from kvmtrace.ingest.tables import EventTables, pid_column

STAGES = ("timer", "host_irq", "vcpu_wait", "inject", "exit", "entry")
STAGE_COLUMNS = tuple(f"{s}_ns" for s in STAGES)
TIMER_IDX_TO_IRQ = {1: 27, 0: 30}  # arm64: arch_timer context index 1 = virtual timer (PPI 27), 0 = physical (PPI 30)

INTERRUPT_SCHEMA: dict[str, pl.DataType] = {
    "vcpu_tid": pl.Int32(), "irq": pl.Int32(), "kind": pl.String(), "path": pl.String(), "cpu": pl.Int32(),
    "t_ns": pl.Int64(), "deadline_ns": pl.Int64(),
    **{c: pl.Int64() for c in STAGE_COLUMNS},
    "total_ns": pl.Int64(), "latency_ns": pl.Int64(),
    "blocker_comm": pl.String(), "blocker_pid": pl.Int32(), "blocker_ns": pl.Int64(),
    "deadline_source": pl.String(), "deadline_uncertainty_ns": pl.Int64(),
    "host_irq": pl.String(), "wakeup_ns": pl.Int64(), "switch_in_ns": pl.Int64(), "inject_at_ns": pl.Int64(),
    "exit_at_ns": pl.Int64(), "entry_at_ns": pl.Int64(), "t_idx": pl.UInt32(), "entry_idx": pl.UInt32(),
    "w_idx": pl.UInt32(), "switch_idx": pl.UInt32(), "wait_cpu": pl.Int32(), "preempted_at_ns": pl.Int64(),
}


def _by_vcpu(t: EventTables, name: str, vcpus: pl.Series, *extra: str | pl.Expr) -> pl.DataFrame:
    df = t.table(name)
    return (df.filter(pl.col(pid_column(df)).is_in(vcpus.implode()))
              .select(pl.col(pid_column(df)).alias("vcpu_tid"), "idx", "ts", "cpu", *extra))


def _next(left: pl.DataFrame, right: pl.DataFrame, left_on: str, prefix: str) -> pl.DataFrame:
    """For each left row, the first right row of the same vCPU strictly after ``left_on`` (idx)."""
    r = right.rename({c: f"{prefix}_{c}" for c in right.columns if c != "vcpu_tid"})
    return left.sort(left_on).join_asof(r, left_on=left_on, right_on=f"{prefix}_idx", by="vcpu_tid",
                                        strategy="forward", allow_exact_matches=False, check_sortedness=False)


def irq_context(t: EventTables) -> pl.DataFrame:
    """Hard-IRQ handler intervals per CPU: cpu, idx (entry), ts, end_idx, end_ns, irq, name."""
    if not t.has("irq_handler_entry"):
        return pl.DataFrame(schema={"cpu": pl.Int32(), "idx": pl.UInt32(), "ts": pl.Int64(), "irq": pl.Int32(),
                                    "name": pl.String(), "end_idx": pl.UInt32(), "end_ns": pl.Int64()})
    entries = t.table("irq_handler_entry").select("cpu", "idx", "ts", "irq", "name")
    exits = t.table("irq_handler_exit").select("cpu", pl.col("idx").alias("end_idx"), pl.col("ts").alias("end_ns"))
    return entries.join_asof(exits, left_on="idx", right_on="end_idx", by="cpu", strategy="forward",
                             check_sortedness=False)


def _enclosing_irq(df: pl.DataFrame, at: str, cpu: str, irqs: pl.DataFrame) -> pl.DataFrame:
    """Adds irq_idx/irq_ts/irq_name: the hard IRQ handler running on ``cpu`` at event ``at``, if any."""
    r = irqs.select(pl.col("cpu").alias(cpu), pl.col("idx").alias("irq_idx"), pl.col("ts").alias("irq_ts"),
                    pl.col("name").alias("irq_name"), pl.col("end_idx").alias("irq_end_idx"))
    out = df.sort(at).join_asof(r, left_on=at, right_on="irq_idx", by=cpu, strategy="backward",
                                check_sortedness=False)
    inside = pl.col("irq_end_idx").is_null() | (pl.col("irq_end_idx") > pl.col(at))
    return out.with_columns(
        [pl.when(inside).then(pl.col(c)).otherwise(None).alias(c) for c in ("irq_idx", "irq_ts", "irq_name")]
    ).drop("irq_end_idx")


def has_injection_events(t: EventTables) -> bool:
    """arm64 logs timer injections; 32-bit ARM of the Linux 3.9 era has no timer or vgic tracepoints."""
    return t.has("kvm_timer_update_irq") or t.has("vgic_update_irq_pending")


def timer_injections(t: EventTables, vcpus: pl.Series) -> pl.DataFrame:
    """Injection events of guest timer interrupts (level 1): vcpu_tid, idx, ts, cpu, irq."""
    if t.has("kvm_timer_update_irq"):
        return (_by_vcpu(t, "kvm_timer_update_irq", vcpus, pl.col("irq").cast(pl.Int32), "level")
                .filter(pl.col("level") == 1).drop("level"))
    if t.has("vgic_update_irq_pending"):
        return (_by_vcpu(t, "vgic_update_irq_pending", vcpus, pl.col("irq").cast(pl.Int32), "level")
                .filter(pl.col("level").cast(pl.Int32) == 1, pl.col("irq").is_in([27, 30])).drop("level"))
    raise MissingEventsError(t.meta.path, "interrupt timelines",
                             ["kvm:kvm_timer_update_irq", "kvm:vgic_update_irq_pending"],
                             "record with -e kvm:kvm_timer_update_irq")


def blocked_timer_interrupts(t: EventTables, vcpus: pl.Series, irqs: pl.DataFrame) -> pl.DataFrame:
    """Timer interrupts that woke a blocked vCPU thread."""
    wakeups = (t.table("sched_wakeup").filter(pl.col("pid").is_in(vcpus.implode()))
               .select(pl.col("pid").alias("vcpu_tid"), pl.col("idx").alias("w_idx"), pl.col("ts").alias("w_ts"),
                       pl.col("cpu").alias("w_cpu")))
    switch_in = (t.table("sched_switch").filter(pl.col("next_pid").is_in(vcpus.implode()))
                 .select(pl.col("next_pid").alias("vcpu_tid"), "idx", "ts", "cpu"))
    entry = _by_vcpu(t, "kvm_entry", vcpus)
    df = _next(wakeups, switch_in, "w_idx", "s")
    df = _next(df, wakeups.select("vcpu_tid", pl.col("w_idx").alias("idx")), "w_idx", "nw")
    df = df.filter(pl.col("s_idx").is_not_null(), pl.col("nw_idx").is_null() | (pl.col("s_idx") < pl.col("nw_idx")))
    # a wakeup of a thread that is still on its CPU (about to block, or halt-polling) wakes nothing
    sw = t.table("sched_switch")
    moves = pl.concat([
        sw.filter(pl.col("prev_pid").is_in(vcpus.implode())).select(
            pl.col("prev_pid").alias("vcpu_tid"), pl.col("idx").alias("m_idx"), pl.lit(False).alias("on_cpu")),
        sw.filter(pl.col("next_pid").is_in(vcpus.implode())).select(
            pl.col("next_pid").alias("vcpu_tid"), pl.col("idx").alias("m_idx"), pl.lit(True).alias("on_cpu"))]
    ).sort("m_idx")
    df = df.sort("w_idx").join_asof(moves, left_on="w_idx", right_on="m_idx", by="vcpu_tid", strategy="backward",
                                    check_sortedness=False)
    df = df.filter(~pl.col("on_cpu").fill_null(False)).drop("m_idx", "on_cpu")
    df = _next(df, entry, "s_idx", "e")
    if has_injection_events(t):
        df = _next(df, timer_injections(t, vcpus), "s_idx", "i")
        df = df.filter(pl.col("i_idx").is_not_null(), pl.col("e_idx").is_not_null(),
                       pl.col("i_idx") < pl.col("e_idx"))
    else:  # 32-bit ARM: the injection is not traced; the guest timer is IRQ 27
        df = df.filter(pl.col("e_idx").is_not_null()).with_columns(
            pl.lit(27, pl.Int32).alias("i_irq"), pl.lit(None, pl.Int64).alias("i_ts"))
    df = _enclosing_irq(df, "w_idx", "w_cpu", irqs)
    return df.select(
        "vcpu_tid", pl.col("i_irq").alias("irq"), pl.lit("timer").alias("kind"), pl.lit("blocked").alias("path"),
        pl.col("e_cpu").alias("cpu"), pl.coalesce("irq_ts", "w_ts").alias("t_ns"),
        pl.coalesce("irq_idx", "w_idx").alias("t_idx"), pl.col("irq_name").alias("host_irq"),
        pl.col("w_ts").alias("wakeup_ns"), pl.col("s_ts").alias("switch_in_ns"),
        pl.col("i_ts").alias("inject_at_ns"), pl.lit(None, pl.Int64).alias("exit_at_ns"),
        pl.col("e_ts").alias("entry_at_ns"), pl.col("e_idx").alias("entry_idx"), "w_idx",
        pl.col("s_idx").alias("switch_idx"), pl.col("s_cpu").alias("wait_cpu"),
    )


def arm32_running_timer_interrupts(t: EventTables, vcpus: pl.Series, irqs: pl.DataFrame) -> pl.DataFrame:
    """32-bit ARM: the host IRQ ``kvm guest timer`` taken in the vCPU thread; its handler's exit
    stands for the injection (there is no injection tracepoint), then kvm_exit and kvm_entry."""
    guest_irqs = (irqs.filter(pl.col("name").str.starts_with("kvm guest"), pl.col("end_idx").is_not_null())
                  .with_columns(t.at(pl.col("idx"), "pid").alias("vcpu_tid"))
                  .filter(pl.col("vcpu_tid").is_in(vcpus.implode())))
    df = guest_irqs.select("vcpu_tid", pl.col("idx").alias("irq_idx"), pl.col("ts").alias("irq_ts"),
                           pl.col("name").alias("irq_name"), pl.col("end_idx").alias("i_idx"),
                           pl.col("end_ns").alias("i_ts"))
    df = _next(df, _by_vcpu(t, "kvm_exit", vcpus), "i_idx", "x")
    df = _next(df, _by_vcpu(t, "kvm_entry", vcpus), "i_idx", "e")
    df = df.filter(pl.col("x_idx").is_not_null(), pl.col("e_idx").is_not_null(), pl.col("x_idx") < pl.col("e_idx"))
    return df.select(
        "vcpu_tid", pl.lit(27, pl.Int32).alias("irq"), pl.lit("timer").alias("kind"), pl.lit("running").alias("path"),
        pl.col("e_cpu").alias("cpu"), pl.col("irq_ts").alias("t_ns"), pl.col("irq_idx").alias("t_idx"),
        pl.col("irq_name").alias("host_irq"), pl.lit(None, pl.Int64).alias("wakeup_ns"),
        pl.lit(None, pl.Int64).alias("switch_in_ns"), pl.col("i_ts").alias("inject_at_ns"),
        pl.col("x_ts").alias("exit_at_ns"), pl.col("e_ts").alias("entry_at_ns"), pl.col("e_idx").alias("entry_idx"),
        pl.lit(None, pl.UInt32).alias("w_idx"), pl.lit(None, pl.UInt32).alias("switch_idx"),
        pl.lit(None, pl.Int32).alias("wait_cpu"),
    )


def running_timer_interrupts(t: EventTables, vcpus: pl.Series, irqs: pl.DataFrame,
                             taken: pl.DataFrame) -> pl.DataFrame:
    """Timer interrupts injected from a host IRQ taken while the vCPU thread was on the CPU:
    in the guest (path ``running``) or in the host, handling an exit or halt-polling (``host``)."""
    inj = timer_injections(t, vcpus)
    exits = _by_vcpu(t, "kvm_exit", vcpus)
    entry = _by_vcpu(t, "kvm_entry", vcpus)
    df = _enclosing_irq(inj.rename({"idx": "i_idx", "ts": "i_ts", "cpu": "i_cpu"}), "i_idx", "i_cpu", irqs)
    df = df.filter(pl.col("irq_idx").is_not_null())
    df = _next(df, exits, "i_idx", "x")
    df = _next(df, entry, "i_idx", "e")
    df = df.filter(pl.col("e_idx").is_not_null())
    # running: the guest exits after the injection; host: the thread was already in the host
    # (handling an exit, or halt-polling) and the next kvm_entry delivers it
    in_guest = pl.col("x_idx").is_not_null() & (pl.col("x_idx") < pl.col("e_idx"))
    df = df.with_columns(pl.when(in_guest).then(pl.lit("running")).otherwise(pl.lit("host")).alias("path"),
                         pl.when(in_guest).then(pl.col("x_idx")).alias("x_idx"),
                         pl.when(in_guest).then(pl.col("x_ts")).alias("x_ts"))
    df = df.with_columns(pl.coalesce("x_idx", "i_idx").alias("after_idx"))
    df = _next(df, entry, "after_idx", "e2")
    # one interrupt per host IRQ: the first injection in it
    df = df.sort("i_idx").unique(subset=["vcpu_tid", "irq_idx"], keep="first", maintain_order=True)
    df = df.join(taken.select("vcpu_tid", pl.col("entry_idx").alias("e_idx")), on=["vcpu_tid", "e_idx"], how="anti")
    return df.select(
        "vcpu_tid", "irq", pl.lit("timer").alias("kind"), "path",
        pl.col("e2_cpu").alias("cpu"), pl.col("irq_ts").alias("t_ns"), pl.col("irq_idx").alias("t_idx"),
        pl.col("irq_name").alias("host_irq"), pl.lit(None, pl.Int64).alias("wakeup_ns"),
        pl.lit(None, pl.Int64).alias("switch_in_ns"), pl.col("i_ts").alias("inject_at_ns"),
        pl.col("x_ts").alias("exit_at_ns"), pl.col("e2_ts").alias("entry_at_ns"), pl.col("e2_idx").alias("entry_idx"),
        pl.lit(None, pl.UInt32).alias("w_idx"), pl.lit(None, pl.UInt32).alias("switch_idx"),
        pl.lit(None, pl.Int32).alias("wait_cpu"),
    )


def preempted_timer_interrupts(t: EventTables, vcpus: pl.Series, irqs: pl.DataFrame,
                               taken: pl.DataFrame) -> pl.DataFrame:
    """Timer interrupts whose deadline passed while the runnable vCPU thread was switched out
    (preempted, or throttled): no host IRQ; KVM injects the expired timer when the thread is
    switched in again (``kvm_timer_vcpu_load``), and the next kvm_entry delivers it. t_ns is that
    switch-in; the time before it, from the deadline, is ``timer_ns``. Candidates only: a level-1
    update at load also repeats an interrupt that was already pending before the preemption, so
    the analysis keeps those whose deadline fell after ``preempted_at_ns`` (the switch-out)."""
    inj = _enclosing_irq(timer_injections(t, vcpus).rename({"idx": "i_idx", "ts": "i_ts", "cpu": "i_cpu"}),
                         "i_idx", "i_cpu", irqs).filter(pl.col("irq_idx").is_null())
    sw = t.table("sched_switch")
    switch_in = sw.filter(pl.col("next_pid").is_in(vcpus.implode())).select(
        pl.col("next_pid").alias("vcpu_tid"), pl.col("idx").alias("s_idx"), pl.col("ts").alias("s_ts"),
        pl.col("cpu").alias("s_cpu"))
    switch_out = sw.filter(pl.col("prev_pid").is_in(vcpus.implode())).select(
        pl.col("prev_pid").alias("vcpu_tid"), pl.col("idx").alias("o_idx"), pl.col("ts").alias("preempted_at_ns"),
        ((pl.col("prev_state") & 0xFF) == 0).alias("runnable"))
    df = inj.sort("i_idx").join_asof(switch_in, left_on="i_idx", right_on="s_idx", by="vcpu_tid",
                                     strategy="backward", check_sortedness=False)
    df = df.sort("s_idx").join_asof(switch_out, left_on="s_idx", right_on="o_idx", by="vcpu_tid",
                                    strategy="backward", check_sortedness=False)
    df = df.filter(pl.col("runnable").fill_null(False))
    df = _next(df, _by_vcpu(t, "kvm_entry", vcpus), "i_idx", "e")
    df = _next(df, _by_vcpu(t, "kvm_entry", vcpus), "s_idx", "e0")
    # the injection is the first after the switch-in, before the thread entered the guest again
    df = df.filter(pl.col("e_idx").is_not_null(), pl.col("e0_idx") == pl.col("e_idx"))
    df = df.sort("i_idx").unique(subset=["vcpu_tid", "e_idx"], keep="first", maintain_order=True)
    df = df.join(taken.select("vcpu_tid", pl.col("entry_idx").alias("e_idx")), on=["vcpu_tid", "e_idx"], how="anti")
    return df.select(
        "vcpu_tid", "irq", pl.lit("timer").alias("kind"), pl.lit("preempted").alias("path"),
        pl.col("e_cpu").alias("cpu"), pl.col("s_ts").alias("t_ns"), pl.col("s_idx").alias("t_idx"),
        pl.lit(None, pl.String).alias("host_irq"), pl.lit(None, pl.Int64).alias("wakeup_ns"),
        pl.col("s_ts").alias("switch_in_ns"), pl.col("i_ts").alias("inject_at_ns"),
        pl.lit(None, pl.Int64).alias("exit_at_ns"), pl.col("e_ts").alias("entry_at_ns"),
        pl.col("e_idx").alias("entry_idx"), pl.lit(None, pl.UInt32).alias("w_idx"),
        pl.col("s_idx").alias("switch_idx"), pl.col("s_cpu").alias("wait_cpu"), "preempted_at_ns",
    )


def vcpu_ids(t: EventTables, vcpus: pl.Series) -> pl.DataFrame:
    """vcpu_id -> vcpu_tid, learned from the per-vCPU events each vCPU thread emits about itself."""
    for name in ("kvm_timer_update_irq", "kvm_get_timer_map", "vgic_update_irq_pending"):
        if t.has(name):
            df = t.table(name)
            own = df.filter(pl.col(pid_column(df)).is_in(vcpus.implode()))
            if own.height:
                return (own.group_by(pl.col("vcpu_id").cast(pl.Int64)).agg(pl.col(pid_column(df)).mode().first())
                        .select("vcpu_id", pl.col(pid_column(df)).alias("vcpu_tid").cast(pl.Int32)))
    return pl.DataFrame({"vcpu_id": [0], "vcpu_tid": vcpus.head(1).cast(pl.Int32)})


def device_interrupts(t: EventTables, vcpus: pl.Series) -> pl.DataFrame:
    """Interrupts a VMM thread injects with ``kvm_irq_line`` level 1, to the vCPU that the following
    ``vgic_update_irq_pending`` names: blocked (wakeup -> switch-in -> entry), running (kick ->
    kvm_exit -> entry) or in the host (the next entry delivers it)."""
    lines = t.table("kvm_irq_line").filter(pl.col("level") == 1)
    pid = pid_column(lines)
    df = lines.select(pl.col(pid).alias("injector"), pl.col("idx").alias("t_idx"), pl.col("ts").alias("t_ns"),
                      pl.col("irq_num").cast(pl.Int32).alias("irq"), pl.col("vcpu_idx").cast(pl.Int64).alias("vcpu_id"))
    if t.has("vgic_update_irq_pending"):  # the target the vgic chose
        vg = t.table("vgic_update_irq_pending").filter(pl.col("level").cast(pl.Int32) == 1)
        vg = vg.select(pl.col(pid_column(vg)).alias("injector"), pl.col("idx").alias("v_idx"),
                       pl.col("irq").cast(pl.Int32).alias("irq"), pl.col("vcpu_id").cast(pl.Int64).alias("v_id"))
        df = df.sort("t_idx").join_asof(vg, left_on="t_idx", right_on="v_idx", by=["injector", "irq"],
                                        strategy="forward", check_sortedness=False)
        df = df.with_columns(pl.coalesce("v_id", "vcpu_id").alias("vcpu_id"))
    df = df.join(vcpu_ids(t, vcpus), on="vcpu_id", how="inner")
    wakeups = (t.table("sched_wakeup").filter(pl.col("pid").is_in(vcpus.implode()))
               .select(pl.col("pid").alias("vcpu_tid"), "idx", "ts"))
    switch_in = (t.table("sched_switch").filter(pl.col("next_pid").is_in(vcpus.implode()))
                 .select(pl.col("next_pid").alias("vcpu_tid"), "idx", "ts", "cpu"))
    df = _next(df, _by_vcpu(t, "kvm_entry", vcpus), "t_idx", "e")
    df = _next(df, _by_vcpu(t, "kvm_exit", vcpus), "t_idx", "x")
    df = _next(df, wakeups, "t_idx", "w")
    df = _next(df, switch_in, "w_idx", "s")
    df = df.filter(pl.col("e_idx").is_not_null())
    blocked = pl.col("w_idx").is_not_null() & (pl.col("w_idx") < pl.col("e_idx")) & \
        pl.col("s_idx").is_not_null() & (pl.col("s_idx") < pl.col("e_idx"))
    running = ~blocked & pl.col("x_idx").is_not_null() & (pl.col("x_idx") < pl.col("e_idx"))
    df = df.with_columns(pl.when(blocked).then(pl.lit("blocked")).when(running).then(pl.lit("running"))
                         .otherwise(pl.lit("host")).alias("path"))
    df = _next(df.with_columns(pl.when(running).then(pl.col("x_idx")).otherwise(pl.col("t_idx")).alias("after")),
               _by_vcpu(t, "kvm_entry", vcpus), "after", "d")
    # one row per interrupt line and delivery: a line asserted again before the entry is the same interrupt
    df = df.sort("t_idx").unique(subset=["vcpu_tid", "irq", "d_idx"], keep="first", maintain_order=True)
    is_b, is_r = pl.col("path") == "blocked", pl.col("path") == "running"
    return df.select(
        "vcpu_tid", "irq", pl.lit("device").alias("kind"), "path", pl.col("d_cpu").alias("cpu"), "t_ns", "t_idx",
        pl.lit(None, pl.String).alias("host_irq"),
        pl.when(is_b).then(pl.col("w_ts")).alias("wakeup_ns"),
        pl.when(is_b).then(pl.col("s_ts")).alias("switch_in_ns"),
        pl.when(~is_b).then(pl.col("t_ns")).alias("inject_at_ns"),
        pl.when(is_r).then(pl.col("x_ts")).alias("exit_at_ns"),
        pl.col("d_ts").alias("entry_at_ns"), pl.col("d_idx").alias("entry_idx"),
        pl.when(is_b).then(pl.col("w_idx")).alias("w_idx"), pl.when(is_b).then(pl.col("s_idx")).alias("switch_idx"),
        pl.when(is_b).then(pl.col("s_cpu")).alias("wait_cpu"),
    )


def with_stages(df: pl.DataFrame) -> pl.DataFrame:
    """Stage durations from the stage boundary timestamps (docs/stages.md)."""
    blocked = pl.col("path") == "blocked"
    running = pl.col("path") == "running"
    preempted = pl.col("path") == "preempted"
    return df.with_columns(
        pl.when(blocked).then(pl.col("wakeup_ns") - pl.col("t_ns"))
          .when(preempted).then(None)
          .when(pl.col("kind") == "device").then(None)  # the VMM's injection is itself the start
          .otherwise(pl.col("inject_at_ns") - pl.col("t_ns")).alias("host_irq_ns"),
        pl.when(blocked).then(pl.col("switch_in_ns") - pl.col("wakeup_ns")).alias("vcpu_wait_ns"),
        pl.when(blocked | preempted).then(pl.col("inject_at_ns") - pl.col("switch_in_ns")).alias("inject_ns"),
        pl.when(running).then(pl.col("exit_at_ns") - pl.col("inject_at_ns")).alias("exit_ns"),
        pl.when(running).then(pl.col("entry_at_ns") - pl.col("exit_at_ns"))
          .when(blocked).then(pl.col("entry_at_ns") - pl.coalesce("inject_at_ns", "switch_in_ns"))
          .otherwise(pl.col("entry_at_ns") - pl.col("inject_at_ns")).alias("entry_ns"),
        (pl.col("entry_at_ns") - pl.col("t_ns")).alias("total_ns"),
    )


def interrupts(t: EventTables, vcpus: pl.Series, part: bool = False) -> pl.DataFrame:
    """All reconstructed guest interrupts (timers and VMM-injected devices), without deadlines and
    blockers (see ``analysis``). ``part``: ``t`` is a time chunk of a capture, which may hold none of
    the events the capture has (no interrupts there, not an error)."""
    needed = ["kvm_entry", "sched_wakeup", "sched_switch"]
    missing = [n for n in needed if not t.has(n)]
    irqs = irq_context(t)
    parts = []
    if not missing:
        parts.append(blocked_timer_interrupts(t, vcpus, irqs))
    taken = parts[0] if parts else pl.DataFrame(schema={"vcpu_tid": pl.Int32(), "entry_idx": pl.UInt32()})
    if t.has("kvm_exit") and t.has("kvm_entry") and irqs.height:
        if has_injection_events(t):
            parts.append(running_timer_interrupts(t, vcpus, irqs, taken))
        else:
            parts.append(arm32_running_timer_interrupts(t, vcpus, irqs))
    if not missing and has_injection_events(t):
        done = pl.concat([p.select("vcpu_tid", "entry_idx").cast({"vcpu_tid": pl.Int32(), "entry_idx": pl.UInt32()})
                          for p in parts]) if parts else taken
        parts.append(preempted_timer_interrupts(t, vcpus, irqs, done))
    if t.has("kvm_irq_line") and not missing:
        parts.append(device_interrupts(t, vcpus))
    if not parts and part:
        return pl.DataFrame(schema=INTERRUPT_SCHEMA)
    if not parts:
        names = [f"sched:{n}" if n.startswith("sched") else f"kvm:{n}" for n in missing]
        raise MissingEventsError(t.meta.path, "interrupt timelines", names)
    df = pl.concat([p.cast({"irq": pl.Int32(), "t_idx": pl.UInt32(), "entry_idx": pl.UInt32(),
                            "w_idx": pl.UInt32(), "switch_idx": pl.UInt32(), "wait_cpu": pl.Int32()})
                    for p in parts], how="diagonal_relaxed")
    if "preempted_at_ns" not in df.columns:
        df = df.with_columns(pl.lit(None, pl.Int64).alias("preempted_at_ns"))
    return with_stages(df).sort("t_ns", "vcpu_tid")
