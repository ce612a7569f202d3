"""cyclictest in the guest, loop by loop, beside the host's view of the same wakeup.

Inputs: the host's latency analysis, the guest's own capture (its cyclictest thread's timer
wakeups: :mod:`kvmtrace.model.wakeups`), the guest clock aligned to the host's
(:mod:`kvmtrace.model.align`), and cyclictest's ``-v`` output (:mod:`kvmtrace.ingest.cyclictest`).

- Loop -> guest wakeup: every loop sleeps once (cyclictest moves a deadline that has passed to the
  next interval ahead), so the n-th wakeup of its thread is its n-th loop, up to one shift (loops
  before the guest's recording started, or after cyclictest stopped printing), found as the one that
  makes measured and traced latencies agree best. A timer that expired before the thread got to
  sleep wakes it where it runs (no switch-in): plain "next switch-in" pairing breaks there.
- Guest wakeup -> host interrupt: the host ``kvm_entry`` of that vCPU that came last before the
  guest's timer IRQ (which the entry delivered).

Columns: loop, measured_ns (cyclictest), guest_deadline_ns (host clock), guest_switch_in_ns,
traced_ns (guest deadline -> switch-in of the thread), host_* (the host interrupt: irq_no, path,
deadline_ns, entry_at_ns), host_same_timer (the host interrupt's deadline is this loop's, within the
alignment: false when it delivered an earlier guest timer, the tick, in whose handler the loop's
timer expired too), host_part_ns (host deadline -> kvm_entry, where host_same_timer),
host_part_true_ns (guest deadline -> kvm_entry), guest_part_ns (kvm_entry -> switch-in).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

from kvmtrace.analysis.latency import LatencyAnalysis
from kvmtrace.capture import Capture
from kvmtrace.errors import CaptureError
from kvmtrace.ingest.cyclictest import CyclictestOutput
from kvmtrace.model.align import Alignment, align
from kvmtrace.model.wakeups import thread_wakeups

MAX_SHIFT = 50
SAME_DEADLINE_NS = 20_000  # beyond the alignment's uncertainty, deadlines this close are the same timer


@dataclass
class Loops:
    """The loop table and how it was matched."""

    table: pl.DataFrame
    alignment: Alignment
    shift: int
    tid: int

    def summary(self) -> dict[str, Any]:
        t = self.table
        with_host = t.filter(pl.col("host_part_ns").is_not_null())
        over = with_host.filter(pl.col("host_part_ns") > pl.col("measured_ns"))
        diff = (t["measured_ns"] - t["traced_ns"]).drop_nulls()
        return {"loops": t.height, "matched_host": with_host.height, "host_part_exceeds_measured": over.height,
                "measured_minus_traced_median_ns": int(diff.median()) if diff.len() else None,  # type: ignore[arg-type]
                "alignment": self.alignment.to_dict(), "loop_shift": self.shift, "thread": self.tid}


def best_shift(measured: np.ndarray, traced: np.ndarray) -> int:
    """Shift s (wakeup index = loop + s) with the smallest median |measured - traced|."""
    def cost(s: int) -> float:
        a, b = measured[max(0, -s):], traced[max(0, s):]
        n = min(len(a), len(b))
        return float(np.median(np.abs(a[:n] - b[:n]))) if n > 10 else float("inf")
    return min(range(-MAX_SHIFT, MAX_SHIFT + 1), key=cost)


def loop_table(host: LatencyAnalysis, guest: Capture, cyclictest: CyclictestOutput, thread: int = 0) -> Loops:
    """One row per cyclictest loop of ``thread`` (module docstring)."""
    vcpus = host.vcpus["vcpu_tid"]
    al = align(host.capture.tables, guest.tables, vcpus)
    tid = _thread_tid(guest, cyclictest, thread)
    w = thread_wakeups(guest.tables, pl.Series([tid], dtype=pl.Int32)).sort("deadline_ns")
    loops = cyclictest.loops.filter(pl.col("thread") == thread).sort("loop")
    shift = best_shift(loops["latency_us"].to_numpy() * 1000, w["latency_ns"].to_numpy())
    vcpu_of = pl.DataFrame({"cpu": list(al.vcpu_of_cpu), "vcpu_tid": list(al.vcpu_of_cpu.values())},
                           schema={"cpu": pl.Int32(), "vcpu_tid": pl.Int32()})
    w = w.join(vcpu_of, on="cpu", how="left")
    traced = w.with_row_index("k").select(
        "vcpu_tid", pl.col("cpu").alias("guest_cpu"),
        (pl.col("k").cast(pl.Int64) - shift + loops["loop"].min()).alias("loop"),
        (pl.col("deadline_ns") + al.offset_ns).alias("guest_deadline_ns"),
        (pl.col("irq_ns") + al.offset_ns).alias("guest_irq_ns"),
        (pl.col("wakeup_ns") + al.offset_ns).alias("guest_wakeup_ns"),
        (pl.col("switch_in_ns") + al.offset_ns).alias("guest_switch_in_ns"),
        pl.col("latency_ns").alias("traced_ns"))
    rows = loops.select("loop", (pl.col("latency_us") * 1000).alias("measured_ns")).join(traced, on="loop",
                                                                                          how="left")
    ints = host.table.filter(pl.col("kind") == "timer").select(
        "vcpu_tid", pl.col("irq_no").alias("host_irq_no"), pl.col("path").alias("host_path"),
        pl.col("deadline_ns").alias("host_deadline_ns"), pl.col("t_ns").alias("host_t_ns"),
        pl.col("entry_at_ns").alias("host_entry_ns"),
        pl.col("best_latency_ns").alias("host_best_ns"), "latency_basis", "cause_kind", "cause")
    rows = rows.sort("guest_irq_ns", nulls_last=True).join_asof(
        ints.sort("host_entry_ns"), left_on="guest_irq_ns", right_on="host_entry_ns", by="vcpu_tid",
        strategy="backward", check_sortedness=False)
    # the host interrupt was this loop's when its deadline is the loop's (within the alignment); else it
    # delivered an earlier guest timer (the tick) and the loop's expired inside the guest's handler
    same = (pl.col("host_deadline_ns") - pl.col("guest_deadline_ns")).abs() <= al.uncertainty_ns + SAME_DEADLINE_NS
    rows = rows.with_columns(same.alias("host_same_timer"))
    rows = rows.with_columns(
        pl.when(pl.col("host_same_timer")).then(pl.col("host_entry_ns") - pl.col("host_deadline_ns"))
          .alias("host_part_ns"),
        (pl.col("host_entry_ns") - pl.col("guest_deadline_ns")).alias("host_part_true_ns"),
        (pl.col("guest_switch_in_ns") - pl.col("host_entry_ns")).alias("guest_part_ns"))
    # the guest's stages, from the host's kvm_entry on (or from the deadline when the timer expired
    # inside the guest's handling of an earlier one)
    start = pl.max_horizontal("host_entry_ns", "guest_deadline_ns")
    rows = rows.with_columns(
        (pl.col("guest_irq_ns") - pl.col("host_entry_ns")).clip(lower_bound=0).alias("guest_entry_ns"),
        (pl.col("guest_wakeup_ns") - pl.max_horizontal("guest_irq_ns", start)).alias("guest_irq_stage_ns"),
        (pl.col("guest_switch_in_ns") - pl.col("guest_wakeup_ns")).alias("guest_wait_ns"),
        (pl.col("measured_ns") - pl.col("traced_ns")).alias("guest_user_ns"))
    # the host's window holds both sides: the loops whose deadline falls in it
    win = host.window
    rows = rows.filter(pl.col("guest_deadline_ns").is_between(win.start_ns, win.end_ns)
                       | pl.col("guest_deadline_ns").is_null())
    return Loops(rows.sort("loop"), al, shift, tid)


def loop_verdicts(lp: Loops, host: LatencyAnalysis, guest: Capture, worst_n: int = 5) -> list[dict[str, Any]]:
    """The slowest loops, each with one sentence covering both sides (host causes, guest scheduler)."""
    from kvmtrace.analysis.verdicts import cause_phrase
    from kvmtrace.model.blockers import cpu_segments, span_shares
    from kvmtrace.model.stalls import stalls
    from kvmtrace.units import fmt_ns

    slow = lp.table.sort("measured_ns", descending=True, maintain_order=True).head(worst_n)
    g = guest.tables
    off = lp.alignment.offset_ns
    spans = pl.concat([  # the guest's scheduler (wakeup -> switch-in), then its way back to the clock read
        slow.select(pl.col("loop").alias("key"), pl.lit("wait").alias("part"), pl.col("guest_cpu").alias("cpu"),
                    (pl.col("guest_wakeup_ns") - off).alias("start_ns"),
                    (pl.col("guest_switch_in_ns") - off).alias("end_ns")),
        slow.select(pl.col("loop").alias("key"), pl.lit("user").alias("part"), pl.col("guest_cpu").alias("cpu"),
                    (pl.col("guest_switch_in_ns") - off).alias("start_ns"),
                    (pl.col("guest_switch_in_ns") - off + pl.col("guest_user_ns")).alias("end_ns"))]).drop_nulls()
    owned = span_shares(spans, cpu_segments(g, stalls(g))) if spans.height else spans
    owned = owned.filter(pl.col("owner_pid").is_null() | (pl.col("owner_pid") != lp.tid)) if owned.height else owned
    out = []
    for r in slow.to_dicts():
        parts = []
        # the host interrupt delivered this loop's timer: its deadline is the loop's, or it had none
        # (running path) and its entry came after the loop's deadline
        mine = r.get("host_same_timer") or (r["host_deadline_ns"] is None and (r["host_part_true_ns"] or -1) >= 0)
        if r["host_irq_no"] is not None and mine:
            causes = host.causes(r["host_irq_no"])
            part = r["host_part_ns"] if r["host_part_ns"] is not None else r["host_part_true_ns"]
            late = max(0, r["host_t_ns"] - max(r["guest_deadline_ns"], r["host_deadline_ns"] or 0))
            before = f"{fmt_ns(late)} until the host took the timer's interrupt, then " if late > 0.1 * part else ""
            if causes:
                parts.append(f"{fmt_ns(part)} in the host: {before}" + cause_phrase(causes[0], host.throttling))
        def who(part: str, loop: int = r["loop"], cpu: int = r["guest_cpu"]) -> str:
            mine = owned.filter(pl.col("key") == loop, pl.col("part") == part).group_by("owner").agg(
                pl.col("share_ns").sum()).sort(["share_ns", "owner"], descending=[True, False]
                                               ) if owned.height else owned
            if not mine.height:
                return ""
            owner, ns = mine["owner"][0], fmt_ns(mine["share_ns"][0])
            if owner == "stall":  # the whole guest silent: its vCPU was not running on the host
                return f", the guest was stopped for {ns} (its vCPU not running on the host)"
            return f", `{owner}` ran on guest CPU {cpu} for {ns}"
        if r["guest_wait_ns"]:
            parts.append(f"{fmt_ns(r['guest_wait_ns'])} the guest scheduler (wakeup -> switch-in{who('wait')})")
        if r["guest_user_ns"] is not None:
            parts.append(f"{fmt_ns(r['guest_user_ns'])} back to user space and the clock read{who('user')}")
        text = f"loop {r['loop']} took {fmt_ns(r['measured_ns'])} (cyclictest): " + "; ".join(parts)
        out.append({"loop": r["loop"], "measured_ns": r["measured_ns"], "verdict": text})
    return out


def _thread_tid(guest: Capture, cyclictest: CyclictestOutput, thread: int) -> int:
    """The measuring thread's tid, from its T: line (cyclictest's output, else the guest's markers)."""
    for summary in (cyclictest.summary, guest.cyclictest):
        mine = summary.filter(pl.col("thread") == thread)
        if mine.height:
            return int(mine["tid"][0])
    raise CaptureError(cyclictest.path, None, f"no 'T:' summary line for cyclictest thread {thread}: cannot tell "
                                              "its thread id")
