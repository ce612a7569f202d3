"""Native wakeup timelines (a real-time thread on the host, no guest) against cyclictest's own output
on a real x86 capture (captures/x86-host-cyclictest-stress: cyclictest -m -p 99 -i 1000 -l 5000 -h 400,
its histogram output in cyclictest.txt), and on the guest side of a real board pair."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import polars as pl

from kvmtrace.analysis.native import cyclictest_comparison, native_analysis
from kvmtrace.capture import open_capture
from kvmtrace.ingest.cyclictest import read_cyclictest
from kvmtrace.model.wakeups import grid_deadlines

CAPTURES = Path(__file__).resolve().parents[1] / "captures"
X86 = CAPTURES / "x86-host-cyclictest-stress"
PAIR_GUEST = CAPTURES / "board-vhe-guest-pair" / "guest"


def _native(path: Path):  # type: ignore[no-untyped-def]
    cap = open_capture(path, use_cache=False)
    ev = cap.tables.events
    return native_analysis(cap, int(ev["ts"][0]), int(ev["ts"][-1]))


def test_the_loops_cyclictest_counted_over_its_histogram_are_the_traced_ones() -> None:
    na = _native(X86)
    own = read_cyclictest(X86 / "cyclictest.txt")
    check = cyclictest_comparison(na, own)
    # cyclictest: "# Histogram Overflows: 00004", "# Thread 0: 01598 01949 04445 04450"
    assert check["over_histogram"]["own_loops"] == [1598, 1949, 4445, 4450]
    assert check["over_histogram"]["traced_loops"] == [1598, 1949, 4445, 4450]
    # loop count within 1 %, maximum within 2 % (cyclictest: Total 4996, Max 4789 us)
    assert abs(check["traced"]["loops"] - own.histogram["loops"]) <= 0.01 * own.histogram["loops"]
    assert abs(check["traced"]["max_us"] - own.histogram["max_us"]) <= 0.02 * own.histogram["max_us"]


def test_the_worst_wakeup_is_explained() -> None:
    na = _native(X86)
    worst = na.worst()[0]
    assert worst["deadline_source"] == "grid-fit"
    assert worst["wait_ns"] > 4_700_000  # the thread was woken in time, then waited for its CPU
    assert worst["causes"][0]["cause_kind"] == "task" and worst["causes"][0]["cause_pid"] == 19696
    assert "`python` (pid 19696) ran on CPU 0" in worst["verdict"]


def test_grid_fit_puts_each_expiry_on_its_own_grid_point() -> None:
    import numpy as np

    rng = np.random.default_rng(1)
    deadlines = 5_000_000_000 + 1_000_000 * np.arange(3000)
    late = rng.exponential(5_000, 3000).astype(np.int64) + 1_000
    late[::500] += 600_000  # a few very late ones
    fitted = grid_deadlines(deadlines + late, 1_000_000)
    # the latest grid the evidence allows: off by at most the lowest 0.5 % of lateness, never a period
    assert ((fitted - deadlines) >= 0).all() and (fitted - deadlines).max() < 2_000


def test_exact_deadlines_on_the_guest_side_of_a_board_pair() -> None:
    na = _native(PAIR_GUEST)
    t = na.table
    assert t["deadline_source"].unique().to_list() == ["hrtimer"]
    # stages add up; a timer that expired inside an earlier interrupt's handler (TCG makes those long:
    # 4 here) has a timer stage of 0
    assert t.filter(pl.col("timer_ns") < 0).height == 0
    assert t.filter(pl.col("irq_ns") < pl.col("deadline_ns")).height == 4
    stages = pl.col("timer_ns") + pl.col("host_irq_ns") + pl.col("wait_ns") + pl.col("user_stage_ns").fill_null(0)
    assert t.filter(stages != pl.col("latency_ns")).height == 0
    own = read_cyclictest(PAIR_GUEST / "cyclictest.txt")
    per = cyclictest_comparison(na, own)["per_loop"]
    assert per["shift"] == 0 and per["loops"] > 1400
    # cyclictest reads its clock after the return to user space, which the guest preset does not trace
    assert 0 < per["measured_minus_traced_median_us"] < 300


def test_cli_on_a_host_without_guest() -> None:
    proc = subprocess.run([sys.executable, "-m", "kvmtrace", "analyze", str(X86), "--json", "--cyclictest",
                           str(X86 / "cyclictest.txt")], capture_output=True, text=True, check=True)
    doc = json.loads(proc.stdout)
    assert doc["native"]["threads"] == [{"tid": 19669, "comm": "cyclictest", "wakeups": 5000}]
    assert doc["native"]["cyclictest_check"]["own"]["max_us"] == 4789
    bad = subprocess.run([sys.executable, "-m", "kvmtrace", "analyze",
                          str(Path(__file__).parent / "fixtures" / "x86-guest-pagefaults")],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1
    assert "sched:sched_switch" in bad.stderr and "Traceback" not in bad.stderr
