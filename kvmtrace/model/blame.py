"""Who is to blame for each guest interrupt's latency: every nanosecond from the deadline (or, when it
is unknown, the host IRQ) to the ``kvm_entry`` that delivered the interrupt, charged to someone.

The span is cut by the vCPU thread's states (:mod:`kvmtrace.model.vcpus`); each piece is charged to
the owners (:mod:`kvmtrace.model.blockers`) of the CPU that mattered then:

==================  ===============================  ==================================================
vCPU state          CPU looked at                    meaning
==================  ===============================  ==================================================
``blocked``         the CPU that took the host IRQ   the timer's delivery: who ran there while the IRQ
                                                     was due, then the IRQ handler that woke the vCPU
``waking``          the CPU the vCPU then ran on     who held the CPU the woken vCPU waited for
``preempted``       the CPU the vCPU then ran on     who ran while the runnable vCPU was switched out
``host_handling``   the vCPU's own CPU               KVM/QEMU work in the vCPU thread, or handlers on it
``guest``           the vCPU's own CPU               the guest ran on until it exited
==================  ===============================  ==================================================

``cause_kind``: ``task``, ``irq``, ``softirq``, ``idle`` (the CPU was idle: a wakeup or migration
problem, not a busy CPU), ``stall`` (every CPU silent: :mod:`kvmtrace.model.stalls`),
``rt_throttling`` (a task that ran while a real-time vCPU was throttled:
:mod:`kvmtrace.model.throttling`), ``vcpu`` (the vCPU thread itself in the host), ``guest``.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from kvmtrace.model.blockers import sorted_by, span_shares
from kvmtrace.model.throttling import Throttling
from kvmtrace.model.vcpus import STATE

SLOW_NS = 1_000_000  # interrupts slower than this are counted per top cause
MAX_SPAN_STATES = 100  # an interrupt's span over more vCPU states than this is charged for its last ones only
CAUSE_KINDS = ("task", "irq", "softirq", "idle", "stall", "rt_throttling", "vcpu", "guest")
CAUSE_KIND = pl.Enum(CAUSE_KINDS)
SHARE_SCHEMA = {"irq_no": pl.UInt32(), "vcpu_tid": pl.Int32(), "state": pl.String(), "cpu": pl.Int32(),
                "cause_kind": pl.String(),
                "cause": pl.String(), "cause_pid": pl.Int32(), "share_ns": pl.Int64()}


def pieces(interrupts: pl.DataFrame, states: pl.DataFrame, throttling: Throttling,
           notes: list[str] | None = None) -> pl.DataFrame:
    """Each interrupt's span cut by its vCPU's states: irq_no, vcpu_tid, state (a vcpus.STATE), cpu, start_ns,
    end_ns, throttled.

    ``interrupts`` needs irq_no, vcpu_tid, t_ns, deadline_ns, preempted_at_ns, entry_at_ns, irq_cpu (the span
    starts at the deadline, else at the preemption, else at the host event)."""
    st = (sorted_by(states, "vcpu_tid", "start_ns")
          .with_columns(pl.col("cpu").shift(-1).over("vcpu_tid").alias("next_cpu"), pl.col("state").cast(STATE))
          .with_row_index("st_no"))
    spans = interrupts.select(
        "irq_no", "vcpu_tid", "irq_cpu",
        pl.min_horizontal(pl.coalesce("deadline_ns", "preempted_at_ns", "t_ns"), "t_ns").alias("span_start"),
        pl.col("entry_at_ns").alias("span_end"))
    keys = st.select("vcpu_tid", "start_ns", "st_no")
    spans = spans.sort("span_start").join_asof(
        keys.rename({"start_ns": "a", "st_no": "k0"}), left_on="span_start", right_on="a", by="vcpu_tid",
        strategy="backward", check_sortedness=False)
    spans = spans.sort("span_end").join_asof(
        keys.rename({"start_ns": "b", "st_no": "k1"}), left_on="span_end", right_on="b", by="vcpu_tid",
        strategy="backward", allow_exact_matches=False, check_sortedness=False)
    spans = spans.filter(pl.col("k0").is_not_null(), pl.col("k1").is_not_null())
    too_long = spans.filter(pl.col("k1").cast(pl.Int64) - pl.col("k0") >= MAX_SPAN_STATES).height
    if too_long and notes is not None:
        notes.append(f"{too_long:,} interrupts start more than {MAX_SPAN_STATES:,} vCPU state changes before their "
                     f"delivery (a deadline that cannot be right: a pending timer is taken at the next entry): "
                     f"their blame covers only the last {MAX_SPAN_STATES:,} states")
    last_states = pl.col("k1").cast(pl.Int64) - (MAX_SPAN_STATES - 1)  # state numbers are unsigned: no wrap
    rows = (spans.with_columns(pl.max_horizontal(pl.col("k0").cast(pl.Int64), last_states).alias("k0"))
            .with_columns(pl.int_ranges("k0", pl.col("k1") + 1).alias("st_no")).explode("st_no"))
    at = rows["st_no"]
    rows = rows.with_columns(st["state"].gather(at).alias("state"), st["start_ns"].gather(at).alias("s0"),
                             st["end_ns"].gather(at).alias("s1"), st["cpu"].gather(at).alias("own_cpu"),
                             st["next_cpu"].gather(at).alias("next_cpu"))
    waiting = pl.col("state").is_in(["waking", "preempted"])
    cpu = (pl.when(pl.col("state") == "blocked").then(pl.col("irq_cpu"))
           .when(waiting).then(pl.coalesce("next_cpu", "own_cpu")).otherwise(pl.col("own_cpu")))
    out = rows.select("irq_no", "vcpu_tid", "state", cpu.cast(pl.Int32).alias("cpu"),
                      pl.max_horizontal("s0", "span_start").alias("start_ns"),
                      pl.min_horizontal("s1", "span_end").alias("end_ns"), pl.col("s0").alias("state_start_ns"))
    return (_with_throttled(out, throttling.intervals)
            .drop("state_start_ns").filter(pl.col("end_ns") > pl.col("start_ns"), pl.col("cpu").is_not_null()))


def _with_throttled(pieces: pl.DataFrame, intervals: pl.DataFrame) -> pl.DataFrame:
    """Adds ``throttled``: a preempted piece whose state began with a real-time throttling interval
    (``intervals``: Throttling.intervals) of its vCPU thread."""
    if intervals.height == 0:
        return pieces.with_columns(pl.lit(False).alias("throttled"))
    throttled = intervals.select(pl.col("task_pid").alias("vcpu_tid"), pl.col("start_ns").alias("state_start_ns"),
                                 pl.lit(True).alias("throttled")).unique()
    return (pieces.join(throttled, on=["vcpu_tid", "state_start_ns"], how="left")
            .with_columns(((pl.col("state") == "preempted") & pl.col("throttled").fill_null(False)).alias("throttled")))


def shares(interrupts: pl.DataFrame, states: pl.DataFrame, segments: pl.DataFrame,
           throttling: Throttling, notes: list[str] | None = None) -> pl.DataFrame:
    """Every interrupt's latency charged to causes: SHARE_SCHEMA rows (one per interrupt, state and owner);
    what could not be charged is said in ``notes``."""
    return charges(interrupts, states, segments, throttling, notes).table()


def _cause_kind(owner_kinds: pl.DataFrame) -> pl.Expr:
    """The cause_kind of a row of span_shares over pieces, its owner categorical (``owner_kinds``: owner and
    the kind of its name, ``stall``, ``irq``, ``softirq`` or null)."""
    def kind(name: str) -> pl.Expr:
        return pl.lit(name, dtype=CAUSE_KIND)
    named = pl.col("owner").to_physical().replace_strict(owner_kinds["owner"].to_physical(),
                                                         owner_kinds["named"], default=None)
    return (pl.when(named == "stall").then(kind("stall"))
            .when(pl.col("owner_pid") == 0).then(kind("idle"))
            .when(named == "irq").then(kind("irq"))
            .when(named == "softirq").then(kind("softirq"))
            .when(pl.col("owner_pid") == pl.col("vcpu_tid"))
            .then(pl.when(pl.col("state") == "guest").then(kind("guest")).otherwise(kind("vcpu")))
            .when(pl.col("throttled")).then(kind("rt_throttling"))
            .otherwise(kind("task")))


def _owner_kinds(owners: pl.Series) -> pl.DataFrame:
    """owner (categorical), named (CAUSE_KIND): the kind an owner's name alone gives, null for tasks."""
    owner = pl.col("owner").cast(pl.String)
    named = (pl.when(owner == "stall").then(pl.lit("stall")).when(owner.str.starts_with("irq:")).then(pl.lit("irq"))
             .when(owner.str.starts_with("softirq:")).then(pl.lit("softirq")))
    return owners.unique().drop_nulls().to_frame("owner").with_columns(named.cast(CAUSE_KIND).alias("named"))


@dataclass(frozen=True)
class Charges:
    """Every interrupt's latency charged to causes, with state, cause_kind and cause as categories (cheap to
    group and sort): irq_no, vcpu_tid, state, cpu, cause_kind, cause, cause_pid, share_ns; in no order (the
    top causes and blame need none)."""

    rows: pl.DataFrame

    def table(self) -> pl.DataFrame:
        """SHARE_SCHEMA rows by irq_no, then largest share first."""
        return self.rows.sort("irq_no", "share_ns", descending=[False, True]).cast(SHARE_SCHEMA)  # type: ignore[arg-type]

    def top(self) -> pl.DataFrame:
        """Per interrupt the cause with the largest share: irq_no, cause_kind, cause, cause_pid, cause_ns
        (ties: the first cause by name; categories sort by their names)."""
        by_cause = self.rows.lazy().group_by("irq_no", "cause_kind", "cause", "cause_pid").agg(pl.col("share_ns").sum())
        return (by_cause.filter(pl.col("share_ns") == pl.col("share_ns").max().over("irq_no"))  # only the largest sort
                .sort("irq_no", "cause").unique("irq_no", keep="first", maintain_order=True)
                .select("irq_no", pl.col("cause_kind").cast(pl.String), pl.col("cause").cast(pl.String),
                        "cause_pid", pl.col("share_ns").alias("cause_ns"))
                .collect())


def charges(interrupts: pl.DataFrame, states: pl.DataFrame, segments: pl.DataFrame,
            throttling: Throttling, notes: list[str] | None = None) -> Charges:
    """``shares`` before its categories are spelled out."""
    p = pieces(interrupts, states, throttling, notes)
    categories = {"irq_no": pl.UInt32(), "vcpu_tid": pl.Int32(), "state": STATE, "cpu": pl.Int32(),
                  "cause_kind": CAUSE_KIND, "cause": pl.Categorical(), "cause_pid": pl.Int32(), "share_ns": pl.Int64()}
    if p.height == 0:
        return Charges(pl.DataFrame(schema=categories))
    owned = span_shares(p.with_row_index("key"), segments.with_columns(pl.col("owner").cast(pl.Categorical)))
    idle = pl.col("owner_pid") == 0
    name = pl.when(idle).then(pl.lit("idle", dtype=pl.Categorical)).otherwise(pl.col("owner"))
    kind = _cause_kind(_owner_kinds(owned["owner"]))
    rows = (owned.lazy()  # a query: polars groups faster than the eager group_by
            .select("irq_no", "vcpu_tid", "state", "cpu", kind.alias("cause_kind"), name.alias("cause"),
                    pl.col("owner_pid").alias("cause_pid"), "share_ns")
            .group_by("irq_no", "state", "cpu", "cause_kind", "cause", "cause_pid")
            .agg(pl.col("vcpu_tid").first(), pl.col("share_ns").sum())  # one vCPU per interrupt
            .select(list(categories)).cast(categories))  # type: ignore[arg-type]
    return Charges(rows.collect())


def blame_table(share_rows: pl.DataFrame | pl.LazyFrame, interrupts: pl.DataFrame, by_vcpu: bool = False
                ) -> pl.DataFrame:
    """Causes over all interrupts (``share_rows``: SHARE_SCHEMA, or Charges.rows): cause_kind, cause,
    cause_pid, total_ns, interrupts (with a share), slow_top (interrupts over 1 ms whose largest share it
    is), share (of all latency); per vCPU on request."""
    keys = ["vcpu_tid"] if by_vcpu else []
    slow = interrupts.filter(pl.col("best_latency_ns") > SLOW_NS).select("irq_no", "cause_kind", "cause", "cause_pid")
    slow_top = slow.join(interrupts.select("irq_no", "vcpu_tid"), on="irq_no").group_by(
        *keys, "cause_kind", "cause", "cause_pid").agg(pl.len().cast(pl.UInt32).alias("slow_top"))
    group = [*keys, "cause_kind", "cause", "cause_pid"]
    total = pl.col("total_ns").sum().over(keys) if keys else pl.col("total_ns").sum()
    return (share_rows.lazy().group_by(group)
            .agg(pl.col("share_ns").sum().alias("total_ns"), pl.col("irq_no").n_unique().cast(pl.UInt32)
                 .alias("interrupts"))
            .with_columns(pl.col("cause_kind", "cause").cast(pl.String))  # categories (Charges.rows) or strings
            .join(slow_top.lazy(), on=group, how="left", nulls_equal=True)
            .with_columns(pl.col("slow_top").fill_null(0), (pl.col("total_ns") / total).round(4).alias("share"))
            .sort([*keys, "total_ns"], descending=[False] * len(keys) + [True])
            .collect(engine="streaming"))  # shares on disk (analysis/chunked.py) are streamed, not loaded


def waiting_holders(states: pl.DataFrame, segments: pl.DataFrame, throttling: Throttling) -> pl.DataFrame:
    """Who held the CPU while each vCPU thread was runnable but not running (``waking``, ``preempted``):
    vcpu_tid, state, cause_kind, cause, cause_pid, total_ns, intervals; largest first per vCPU."""
    st = (states.sort("vcpu_tid", "start_ns")
          .with_columns(pl.col("cpu").shift(-1).over("vcpu_tid").alias("next_cpu"))
          .filter(pl.col("state").is_in(["waking", "preempted"])))
    throttled = throttling.intervals.select(pl.col("task_pid").alias("vcpu_tid"), "start_ns",
                                            pl.lit(True).alias("throttled")).unique()
    spans = (st.join(throttled, on=["vcpu_tid", "start_ns"], how="left")
             .select("vcpu_tid", "state", pl.coalesce("next_cpu", "cpu").cast(pl.Int32).alias("cpu"), "start_ns",
                     "end_ns", pl.col("throttled").fill_null(False)).with_row_index("key"))
    owned = span_shares(spans, segments)
    kind = (pl.when(pl.col("owner") == "stall").then(pl.lit("stall"))
            .when(pl.col("owner_pid") == 0).then(pl.lit("idle"))
            .when(pl.col("owner").str.starts_with("irq:")).then(pl.lit("irq"))
            .when(pl.col("owner").str.starts_with("softirq:")).then(pl.lit("softirq"))
            .when(pl.col("throttled")).then(pl.lit("rt_throttling")).otherwise(pl.lit("task")))
    return (owned.with_columns(kind.alias("cause_kind"),
                               pl.when(pl.col("owner_pid") == 0).then(pl.lit("idle")).otherwise(pl.col("owner"))
                               .alias("cause"))
            .group_by("vcpu_tid", "state", "cause_kind", "cause", pl.col("owner_pid").alias("cause_pid"))
            .agg(pl.col("share_ns").sum().alias("total_ns"), pl.col("key").n_unique().alias("intervals"))
            .sort(["vcpu_tid", "total_ns"], descending=[False, True]))
