"""The host's figures against independent measurements on real captures from the emulated arm64 board
(captures/README.md): the guest's own trace and cyclictest's own per-loop output (-v), RT throttling
with a SCHED_FIFO vCPU beside a SCHED_OTHER hog, and two vCPUs.

Absolute times are those of an emulated machine (QEMU TCG); the relations checked here hold on any."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from kvmtrace.analysis.latency import LatencyAnalysis, analyze
from kvmtrace.analysis.loops import Loops, loop_table
from kvmtrace.capture import open_capture
from kvmtrace.ingest.cyclictest import read_cyclictest

CAPTURES = Path(__file__).resolve().parents[1] / "captures"
PAIR = CAPTURES / "board-vhe-guest-pair"
THROTTLE = CAPTURES / "board-vhe-rt-throttle"
TWO = CAPTURES / "board-vhe-2vcpu-guest"


def _loops(path: Path, thread: int = 0) -> tuple[LatencyAnalysis, Loops]:
    a = analyze(open_capture(path, use_cache=False), "all")
    guest = open_capture(path / "guest", use_cache=False)
    return a, loop_table(a, guest, read_cyclictest(path / "guest" / "cyclictest.txt"), thread)


@pytest.fixture(scope="module", params=[(PAIR, 0), (THROTTLE, 0), (TWO, 0), (TWO, 1)],
                ids=["pair", "rt-throttle", "2vcpu-thread0", "2vcpu-thread1"])
def loops(request: pytest.FixtureRequest) -> tuple[LatencyAnalysis, Loops]:
    path, thread = request.param
    return _loops(path, thread)


def test_guest_clock_aligned_from_the_traces_alone(loops: tuple[LatencyAnalysis, Loops]) -> None:
    al = loops[1].alignment
    assert al.contained == 1.0 and min(al.contained_halves) == 1.0
    assert al.uncertainty_ns < 100_000


def test_every_loop_found_in_the_guest_trace(loops: tuple[LatencyAnalysis, Loops]) -> None:
    t = loops[1].table
    traced = t.filter(pl.col("traced_ns").is_not_null())
    assert traced.height == t.height > 500
    # cyclictest reads the clock after it is back in user space: never before its switch-in
    assert (traced["measured_ns"] >= traced["traced_ns"]).all()


def test_host_part_never_exceeds_what_the_guest_measured(loops: tuple[LatencyAnalysis, Loops]) -> None:
    lp = loops[1]
    same = lp.table.filter("host_same_timer")
    assert same.height > 20
    assert same.filter(pl.col("host_part_ns") > pl.col("measured_ns")).height == 0
    # the host's deadline is the guest's own (cyclictest's hrtimer), within the alignment's uncertainty
    off = (same["host_deadline_ns"] - same["guest_deadline_ns"]).abs()
    assert off.max() <= lp.alignment.uncertainty_ns + 20_000


@pytest.mark.parametrize("path", [PAIR, THROTTLE, TWO], ids=["pair", "rt-throttle", "2vcpu"])
def test_fitted_deadlines_are_never_early(path: Path) -> None:
    """The regression that started issue #10: a CVAL fit anchored on one odd pair put every deadline
    150 us early (the fit before it, on these captures: +104 us, +82 us and -1056 us against the
    exact deadlines; on 10 s runs -333 us and -39.9 ms). On captures that have the exact source too,
    the fit (deadlines the latest the evidence allows) is never earlier than the exact deadlines."""
    a = analyze(open_capture(path, use_cache=False), "all")
    _ = a.table
    check = next(c for c in a.deadlines.checks if c["check"] == "cval-fit - exact")
    assert check["interrupts"] > 50
    assert check["median_ns"] >= 0 and check["median_ns"] - check["p99_abs_ns"] > -20_000
    calib = next(c for c in a.deadlines.checks if c["check"] == "hrtimer - cval (calibrated)")
    assert abs(calib["median_ns"]) < 2_000 and calib["within_20us"] > 0.95


def test_rt_throttling_is_named_with_its_period_and_budget() -> None:
    a = analyze(open_capture(THROTTLE, use_cache=False), "all", worst_n=3)
    th = a.throttling
    assert th.intervals.height >= 3
    assert th.period_ns is not None and abs(th.period_ns - 1_000_000_000) < 50_000_000
    assert th.budget_ns is not None and abs(th.budget_ns - 950_000_000) < 20_000_000
    assert th.configured == {"sched_rt_runtime_us": 950000, "sched_rt_period_us": 1000000}
    worst = a.worst()[0]
    assert worst["causes"][0]["cause_kind"] == "rt_throttling"
    assert worst["causes"][0]["cause"] == "sh"  # the hog (busybox sh loop)
    assert "throttled" in worst["verdict"]
    top = a.blame.filter(pl.col("cause_kind") == "rt_throttling").row(0, named=True)
    assert top["cause"] == "sh" and top["slow_top"] >= th.intervals.height - 1


def test_worst_list_ranks_every_interrupt_whatever_its_path() -> None:
    a = analyze(open_capture(THROTTLE, use_cache=False), "all", worst_n=5)
    worst = [w["best_latency_ns"] for w in a.worst()]
    assert worst == sorted(a.table["best_latency_ns"].to_list(), reverse=True)[:5]
    # the largest delays here include running-path ones (deadline unknown to the host): they rank
    assert {w["path"] for w in a.worst()} >= {"running", "preempted"}
    assert any(w["latency_basis"] == "host_irq" for w in a.worst())


def test_two_vcpus_get_their_own_figures() -> None:
    a = analyze(open_capture(TWO, use_cache=False), "all")
    doc = a.document()
    tids = sorted(a.vcpus["vcpu_tid"].to_list())
    assert len(tids) == 2
    assert sorted(v["vcpu_tid"] for v in doc["per_vcpu"]) == tids
    assert sum(v["interrupts"] for v in doc["per_vcpu"]) == doc["interrupts"]["count"]
    assert sorted({r["vcpu_tid"] for r in doc["blame_by_vcpu"]}) == tids
    mapping = _loops(TWO, 0)[1].alignment.vcpu_of_cpu
    assert sorted(mapping.values()) == tids and len(mapping) == 2


def test_blame_adds_up_to_the_latency() -> None:
    a = analyze(open_capture(PAIR, use_cache=False), "all")
    per = a.shares.group_by("irq_no").agg(pl.col("share_ns").sum())
    joined = a.table.select("irq_no", "best_latency_ns", "timer_ns").join(per, on="irq_no")
    # every nanosecond from the deadline (or host IRQ) to kvm_entry is someone's (an early wakeup,
    # timer_ns < 0, starts at the host IRQ instead)
    span = pl.col("best_latency_ns") - pl.when(pl.col("timer_ns") < 0).then(-pl.col("timer_ns")).otherwise(0)
    diff = joined.select((pl.col("share_ns") - span).abs().alias("d"))["d"].to_numpy()
    assert np.percentile(diff, 99) == 0


@pytest.mark.parametrize("path", [PAIR, THROTTLE, TWO], ids=["pair", "rt-throttle", "2vcpu"])
def test_blocked_interrupts_woke_a_thread_that_was_off_its_cpu(path: Path) -> None:
    """A sched_wakeup of a vCPU thread still on its CPU (about to block, halt-polling) wakes nothing:
    on the pair capture one such wakeup (t=78.865889 s, inside `kvm guest vtimer`, the thread switched
    in at 78.858 and out only at 79.051) was taken for a 187 ms blocked-path interrupt."""
    a = analyze(open_capture(path, use_cache=False), "all")
    blocked = a.table.filter(pl.col("path") == "blocked").select("vcpu_tid", "wakeup_ns").sort("wakeup_ns")
    states = a.states.sort("start_ns").select("vcpu_tid", "start_ns", "state")
    at = blocked.join_asof(states, left_on="wakeup_ns", right_on="start_ns", by="vcpu_tid", strategy="backward",
                           allow_exact_matches=False)
    assert at.height > 50
    assert set(at["state"].drop_nulls().to_list()) <= {"blocked", "waking"}  # sched_waking comes just before


def test_analyze_with_the_guest_explains_loops_on_both_sides(tmp_path: Path) -> None:
    import json
    import subprocess
    import sys

    out = tmp_path / "loops.parquet"
    proc = subprocess.run([sys.executable, "-m", "kvmtrace", "analyze", str(THROTTLE), "--json", "--worst", "2",
                           "--loops-out", str(out)], capture_output=True, text=True, check=True)
    g = json.loads(proc.stdout)["guest"]  # THROTTLE/guest is found by itself
    assert g["summary"]["host_part_exceeds_measured"] == 0
    worst = g["worst_loops"][0]
    assert worst["measured_ns"] == 52_234_000  # cyclictest's Max for this run
    assert "in the host" in worst["verdict"] and "throttled" in worst["verdict"] and "`sh`" in worst["verdict"]
    assert "the guest scheduler" in worst["verdict"]
    loops = pl.read_parquet(out)
    assert loops.height == g["summary"]["loops"]
