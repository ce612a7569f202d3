"""kvmtrace analyze against the synthesiser's ground truth: every interrupt found, none invented,
every stage equal to the nanosecond, blockers equal (docs/stages.md), deadlines exact where the host
knows them, the top cause of each interrupt where the truth knows it (docs/synth.md).

The adversarial presets (docs/synth.md, "Adversarial mechanisms") are in the same tables; what they
are each built to catch is in tests/test_synth_adversarial.py. Where the analysis is wrong against
the simulation, the test is an xfail(strict) naming the defect."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import polars as pl
import pytest

from kvmtrace.analysis.latency import LatencyAnalysis, analyze
from kvmtrace.capture import Capture, open_capture
from kvmtrace.synth.run import simulate
from kvmtrace.synth.scenario import preset

# loops per preset (small: 2 cores shared with an emulator); seed 7 throughout
LOOPS = {"adversarial": 2000, "adversarial-fit": 2000, "busy-guest": 2000, "rt-throttle": 3000, "stalls": 2000}
# analysis defects these captures show: the xfail(strict) reason of each test that meets one
DEFECTS = {
    "missed_at_load": (
        "analysis defect (model/interrupts.py): a timer interrupt injected at the vCPU thread's load, "
        "kvm_timer_update_irq level 1 right after the sched_switch that resumes a runnable (here: "
        "real-time throttled) vCPU thread, with no host IRQ and no wakeup before it, is not reconstructed. "
        "rt-throttle (seed 7, 3000 loops): the two interrupts of deadlines that passed while the vCPU was "
        "throttled (t_ns 7175815434 and 8175811622, latency 48.1 ms each, the largest timer latencies of "
        "the capture, top cause rt_throttling / stress-ng-cpu) are missing from the table, the worst list "
        "and the blame"),
    "timer_cause": (
        "synth defect (synth truth, not the analysis): the truth charges a late timer interrupt's delivery "
        "(deadline -> host IRQ) to 'idle' even while another task ran on that CPU: study-guest seed 7, the "
        "interrupt at t_ns 8090064541 (deadline 8090010000): kworker/0:1 ran 8089989184 -> 8090045659 (35.7 "
        "us of the 54.5 us delivery), the CPU idled 18.9 us; the analysis names kworker/0:1 (35.7 us), the "
        "truth 'idle'"),
    "fake_stalls": (
        "analysis defect (model/stalls.py): a CPU counts as busy at a silence when its last event has a "
        "non-zero pid, but what KVM traces after a vCPU thread's switch-out to idle (kvm_timer_save_state, "
        "hrtimer_start, in prepare_task_switch) carries the vCPU's pid: on the idle study-guest machine "
        "(30 ms interval; seed 7, 1500 loops), where nothing stops, analyze reports 1,206 'stalls' of "
        "20.1-29.9 ms; the deadline -> host IRQ delivery of 534 of the 1,500 interrupts gets top cause "
        "'stall' instead of 'idle', and 'stall' takes 29 % of all latency in the blame table"),
}


def defect(name: str) -> pytest.MarkDecorator:
    return pytest.mark.xfail(strict=True, reason=DEFECTS[name])


@dataclass
class Case:
    """One synthetic capture (seed 7) and its analysis, built once per session."""

    name: str
    out: Path

    @cached_property
    def capture(self) -> Capture:
        return open_capture(self.out, use_cache=False)

    @cached_property
    def analysis(self) -> LatencyAnalysis:
        return analyze(self.capture, window="all", worst_n=10)

    @cached_property
    def table(self) -> pl.DataFrame:
        return self.analysis.table

    @cached_property
    def truth(self) -> pl.DataFrame:
        return pl.read_parquet(self.out / "truth" / "interrupts.parquet")


_CASES: dict[str, Case] = {}


def case_of(name: str, tmp_path_factory: pytest.TempPathFactory) -> Case:
    if name not in _CASES:
        params = preset(name)
        params["cyclictest"]["loops"] = LOOPS.get(name, 1500)
        out = tmp_path_factory.mktemp(name) / "capture"
        simulate(params, seed=7, out=out)
        _CASES[name] = Case(name, out)
    return _CASES[name]


EXACT = ["path", "irq", "cpu", "host_irq_ns", "vcpu_wait_ns", "inject_ns", "exit_ns", "entry_ns", "total_ns",
         "blocker_comm", "blocker_pid", "blocker_ns"]
DEADLINE = ["deadline_ns", "timer_ns", "latency_ns"]
KEY = ["vcpu_tid", "t_ns", "kind"]
PRESETS = ["hog", "rt-vcpu", "study-guest", "boot-faults", "arm32", "adversarial", "adversarial-fit", "busy-guest",
           "rt-throttle", "idle-wait", "stalls"]

# the presets where a generic check meets an analysis defect (DEFECTS)
MISSED_AT_LOAD: set[str] = set()
FAKE_STALLS: set[str] = set()
TIMER_CAUSE = {"study-guest"}


@pytest.fixture(params=PRESETS)
def case(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Case:
    return case_of(request.param, tmp_path_factory)


def test_every_interrupt_found_and_none_invented(case: Case, request: pytest.FixtureRequest) -> None:
    if case.name in MISSED_AT_LOAD:
        request.applymarker(defect("missed_at_load"))
    ours, truth = case.table, case.truth
    assert truth.height > 1000
    assert ours.select(KEY).sort(KEY).equals(truth.select(KEY).sort(KEY))


def test_stages_and_blockers_equal_to_the_nanosecond(case: Case) -> None:
    joined = case.truth.join(case.table, on=KEY, suffix="_ours")
    assert joined.height >= case.truth.height - 2  # rt-throttle: the two interrupts the analysis misses
    for col in EXACT:
        differ = joined.filter(pl.col(col).ne_missing(pl.col(f"{col}_ours")))
        assert differ.height == 0, (col, differ.select("t_ns", col, f"{col}_ours").head(3).to_dicts())


def test_deadlines_exact_wherever_the_host_can_know_them(case: Case) -> None:
    joined = case.truth.join(case.table, on=KEY, suffix="_ours")
    known = joined.filter(pl.col("deadline_ns_ours").is_not_null())
    if case.name == "adversarial-fit":  # fitted: tests/test_synth_adversarial.py checks the bounds
        assert set(known["deadline_source"].unique().to_list()) == {"cval-fit"}
        return
    # a CVAL holds a deadline to a counter tick (guest timers with different phases on the tick grid);
    # a background timer's expiry (hrtimer) is exact
    tick = -(-1_000_000_000 // preset(case.name)["counter_hz"])
    off = pl.when(pl.col("deadline_source") == "cval").then(tick).otherwise(0)
    for col in DEADLINE:
        assert known.filter((pl.col(col) - pl.col(f"{col}_ours")).abs() > off).height == 0, col
    blocked = joined.filter(pl.col("path") == "blocked", pl.col("kind") == "timer")
    if case.name == "arm32":  # no hrtimer or timer-state tracepoints in the Linux 3.9 formats
        assert known.height == 0
    elif case.name != "rt-throttle":  # (one blocked interrupt there: its background timer gives it, hrtimer)
        # the saved CVAL, mapped by KVM's background hrtimers armed ahead of their deadlines; the guest's
        # physical timer (irq 30) by its background timer's expiry
        assert blocked.filter(pl.col("irq") == 27)["deadline_source"].unique().to_list() == ["cval"]
        assert set(blocked.filter(pl.col("irq") == 30)["deadline_source"].unique().to_list()) <= {"hrtimer"}
    # on the running path the guest programs its timer without exiting: unknown to the host
    running = joined.filter(pl.col("path") == "running")
    assert running["deadline_ns_ours"].null_count() == running.height


def test_top_cause_agrees_where_the_truth_knows_it(case: Case, request: pytest.FixtureRequest) -> None:
    """Where one cause holds 55 % of an interrupt's latency (truth cause_kind/cause), the analysis names it.

    Compared where the host sees that latency: the deadline is known; or, on the running path (no
    deadline on the host: its span starts at the host interrupt), delays of 200 us and more, of which
    the unseen part (deadline -> host interrupt, the delivery) is a few percent at most. Not a stall on
    the running path: it lies wholly before the host interrupt, where the host cannot see a deadline."""
    if case.name in FAKE_STALLS:
        request.applymarker(defect("fake_stalls"))
    if case.name in TIMER_CAUSE:
        request.applymarker(defect("timer_cause"))
    joined = case.truth.join(case.table, on=KEY, suffix="_ours")
    running = (pl.col("path") == "running") & (pl.col("latency_ns") >= 200_000) & (pl.col("cause_kind") != "stall")
    known = joined.filter(pl.col("cause").is_not_null(), pl.col("deadline_ns_ours").is_not_null() | running)
    assert known.height > 0 or case.name in ("arm32", "rt-throttle")
    differ = known.filter((pl.col("cause_kind") != pl.col("cause_kind_ours"))
                          | (pl.col("cause") != pl.col("cause_ours")))
    assert differ.height == 0, differ.select("t_ns", "path", "cause_kind", "cause", "cause_kind_ours",
                                             "cause_ours").head(5).to_dicts()


def test_verdicts_name_the_true_blocker(tmp_path: Path) -> None:
    params = preset("hog")
    params["cyclictest"]["loops"] = 1500
    simulate(params, seed=3, out=tmp_path / "c")
    truth = pl.read_parquet(tmp_path / "c" / "truth" / "interrupts.parquet")
    a = analyze(open_capture(tmp_path / "c", use_cache=False), window="all", worst_n=5)
    waits = [w for w in a.worst() if w["dominant_stage"] == "vcpu_wait"]
    assert waits
    for w in waits:
        true = truth.filter(pl.col("t_ns") == w["t_ns"]).row(0, named=True)
        assert f"`{true['blocker_comm']}` (pid {true['blocker_pid']}) ran on CPU" in w["verdict"]
    assert "stress-ng-cpu" in waits[0]["verdict"]
