"""Device interrupts injected by the VMM (kvm_irq_line level 1), on a real capture from the emulated
arm64 board (tests/fixtures/board-device-irq: one second of the vhe-guest-trace scenario, where
QEMU's I/O thread injects SPI 79 into the guest's vCPU thread `CPU 0/KVM`)."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from kvmtrace.analysis.latency import analyze
from kvmtrace.capture import open_capture
from tests.report_oracle import parse_fields, report

FIXTURE = Path(__file__).parent / "fixtures" / "board-device-irq"
STAGES = ["host_irq_ns", "vcpu_wait_ns", "inject_ns", "exit_ns", "entry_ns"]


@pytest.fixture(scope="module")
def table() -> pl.DataFrame:
    return analyze(open_capture(FIXTURE, use_cache=False), window="all").table


def test_every_level_1_injection_is_one_device_interrupt(table: pl.DataFrame) -> None:
    rep = report(str(FIXTURE / "trace.dat"))
    lines = [ts for ts, ev, rest in zip(rep.ts, rep.event, rep.rest, strict=True)
             if ev == "kvm_irq_line" and parse_fields(rest).get("level") == "1"]
    device = table.filter(pl.col("kind") == "device")
    assert len(lines) == 76
    assert sorted(device["t_ns"].to_list()) == sorted(lines)
    assert device["irq"].unique().to_list() == [79]
    assert device["vcpu_tid"].unique().to_list() == [123]
    assert device.group_by("path").len().sort("path").rows() == [("blocked", 55), ("host", 12), ("running", 9)]


def test_one_blocked_device_interrupt_against_the_raw_lines(table: pl.DataFrame) -> None:
    # trace-cmd report -t, CPU 0/KVM (123) blocked, QEMU's thread 119 on CPU 1:
    #   64.876595712 kvm_irq_line num: 79, level: 1        (qemu-system-aar-119, CPU 1)
    #   64.876807360 irq_handler_entry irq=2 name=IPI      (CPU 0)
    #   64.876924112 sched_wakeup CPU 0/KVM:123            (CPU 0, in the IPI handler)
    #   64.876972272 irq_handler_exit irq=2                (CPU 0)
    #   64.877098272 sched_switch swapper/0 ==> CPU 0/KVM  (CPU 0)
    row = table.filter(pl.col("kind") == "device", pl.col("t_ns") == 64_876_595_712).row(0, named=True)
    assert row["path"] == "blocked"
    assert row["host_irq_ns"] == 64_876_924_112 - 64_876_595_712
    assert row["vcpu_wait_ns"] == 64_877_098_272 - 64_876_924_112
    assert row["inject_ns"] is None and row["exit_ns"] is None
    # the rest of the IPI handler after the wakeup; the idle time after it is nobody's
    assert (row["blocker_comm"], row["blocker_ns"]) == ("irq:IPI", 64_876_972_272 - 64_876_924_112)


def test_stages_add_up(table: pl.DataFrame) -> None:
    assert table.filter(pl.sum_horizontal(STAGES) != pl.col("total_ns")).height == 0
    assert table.filter(pl.any_horizontal(pl.col([*STAGES, "total_ns"]) < 0)).height == 0


def test_timer_deadlines_without_hrtimer_start_are_fitted(table: pl.DataFrame) -> None:
    # this recording has hrtimer_expire_* but no hrtimer_start (the latency preset gained it
    # later): the deadlines come from the CVALs KVM saved, fitted to the trace clock
    blocked = table.filter(pl.col("kind") == "timer", pl.col("path") == "blocked")
    assert blocked.height > 50
    assert blocked["deadline_source"].unique().to_list() == ["cval-fit"]
    # the intercept is the 3rd-lowest upper bound: two wakeups (relayed by IPIs before their
    # deadlines, by another source) lie below it; no single pair sets it
    assert blocked.filter(pl.col("timer_ns") < 0).height == 2
