"""kvmtrace exits: classes and intervals checked against a direct count of `trace-cmd report` lines."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from kvmtrace.analysis.exits import exits_report
from kvmtrace.arch import arm64, x86
from kvmtrace.capture import open_capture
from kvmtrace.cli import app
from kvmtrace.errors import MissingEventsError
from kvmtrace.model.exits import exit_table
from tests.report_oracle import CAPTURES, as_int, have_trace_cmd, parse_fields, report

VHE = CAPTURES / "arm64-vhe-cyclictest"
NVHE = CAPTURES / "arm64-nvhe-cyclictest"
needs_report = pytest.mark.skipif(not have_trace_cmd(), reason="trace-cmd not installed")


def _decode(ret: int, ec: int) -> str:
    """The oracle's own decoding of one kvm_exit line (plain Python, independent of the polars code)."""
    if ret == 2:
        return arm64.EC_NAMES.get(ec, f"EC_0x{ec:02x}")
    return {0: "IRQ", 1: "SERROR", 3: "IL", 0xBADCA11: "HYP_GONE"}[ret]


def _report_classes(path: Path, start: int | None = None, end: int | None = None) -> Counter[str]:
    rep = report(str(path / "trace.dat"))
    out: Counter[str] = Counter()
    for ts, ev, rest in zip(rep.ts, rep.event, rep.rest, strict=True):
        if ev == "kvm_exit" and (start is None or start <= ts <= end):  # type: ignore[operator]
            f = parse_fields(rest)
            out[_decode(as_int(f["ret"]), as_int(f["esr_ec"]))] += 1
    return out


@needs_report
def test_cyclictest_window_classes_equal_report_count() -> None:
    cap = open_capture(VHE)
    start, end = cap.window("cyclictest")
    rep = exits_report(cap.tables, cap.phases, "vhe", ("cyclictest", *cap.window("cyclictest")))
    got = dict(zip(rep.by_class["exit_class"], rep.by_class["count"], strict=True))
    direct = _report_classes(VHE, start, end)
    assert got == dict(direct)
    assert got == {"WFx": 9549, "IRQ": 579, "DABT_LOW": 305, "HVC64": 2, "IABT_LOW": 1}


@needs_report
@pytest.mark.parametrize("path", [VHE, NVHE], ids=["vhe", "nvhe"])
def test_whole_capture_classes_equal_report_count(path: Path) -> None:
    cap = open_capture(path)
    rep = exits_report(cap.tables, cap.phases, "x")
    got = dict(zip(rep.by_class["exit_class"], rep.by_class["count"], strict=True))
    assert got == dict(_report_classes(path))
    assert sum(got.values()) == (46_052 if path == VHE else rep.exits.height)


@needs_report
def test_intervals_match_report_neighbours() -> None:
    """handling = next kvm_entry of the thread - kvm_exit; guest run = kvm_exit - previous kvm_entry."""
    rep = report(str(VHE / "trace.dat"))
    last: dict[int, tuple[str, int]] = {}
    handling: list[int | None] = []
    guest_run: list[int | None] = []
    pending: dict[int, tuple[int, int]] = {}
    for ts, pid, ev in zip(rep.ts, rep.pid, rep.event, strict=True):
        if ev not in ("kvm_exit", "kvm_entry"):
            continue
        prev = last.get(pid)
        if ev == "kvm_exit":
            guest_run.append(ts - prev[1] if prev and prev[0] == "kvm_entry" else None)
            handling.append(None)
            pending[pid] = (len(handling) - 1, ts)
        elif prev and prev[0] == "kvm_exit":
            i, t_exit = pending.pop(pid)
            handling[i] = ts - t_exit
        last[pid] = (ev, ts)
    cap = open_capture(VHE)
    ex = exit_table(cap.tables, cap.phases).exits
    assert ex["handling_ns"].to_list() == handling
    assert ex["guest_run_ns"].to_list() == guest_run
    assert handling.count(None) == 1  # the capture ends inside the last exit's handling


def test_inner_events_in_cyclictest_window() -> None:
    cap = open_capture(VHE)
    rep = exits_report(cap.tables, cap.phases, "vhe", ("cyclictest", *cap.window("cyclictest")))
    row = {r["exit_class"]: r for r in rep.by_class.iter_rows(named=True)}
    assert (row["DABT_LOW"]["mmio_reads"], row["DABT_LOW"]["mmio_writes"]) == (148, 157)
    assert row["DABT_LOW"]["userspace_exits"] == 305
    assert row["DABT_LOW"]["vmm_ns"] > 0
    assert row["WFx"]["wakeups_poll"] + row["WFx"]["wakeups_wait"] == 9549
    assert row["WFx"]["wakeups_poll"] == 82
    assert row["IRQ"]["userspace_exits"] == 0


def test_exit_columns_follow_the_contract() -> None:
    cap = open_capture(VHE)
    ex = exit_table(cap.tables, cap.phases).exits
    assert ex.columns[:10] == ["t_ns", "vcpu_tid", "cpu", "ret", "esr_ec", "exit_class", "class_inferred",
                               "handling_ns", "guest_run_ns", "phase"]
    assert ex.schema["vcpu_tid"] == pl.Int32 and ex.schema["handling_ns"] == pl.Int64
    assert ex["vcpu_tid"].unique().to_list() == [468]
    assert ex.filter(pl.col("exit_class") == "IRQ")["esr_ec"].unique().to_list() == [0]


def test_missing_events_named() -> None:
    cap = open_capture(CAPTURES / "x86-host-cyclictest-stress")
    with pytest.raises(MissingEventsError) as exc:
        exits_report(cap.tables, cap.phases, "x86")
    assert exc.value.missing == ["kvm:kvm_entry", "kvm:kvm_exit"]


def test_cli_json_and_out(tmp_path: Path) -> None:
    out = tmp_path / "exits.parquet"
    res = CliRunner().invoke(app, ["exits", str(VHE), "--window", "cyclictest", "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["kvmtrace_exits"] == 1 and doc["exits"] == 10_436
    # --out writes the table and says so, instead of printing the report
    wrote = CliRunner().invoke(app, ["exits", str(VHE), "--window", "cyclictest", "--out", str(out)])
    assert wrote.exit_code == 0 and wrote.output.strip() == "wrote 10,436 rows to " + str(out)
    assert pl.read_parquet(out).height == 10_436
    bad = CliRunner().invoke(app, ["exits", str(VHE), "--window", "lmbench"])
    assert bad.exit_code == 2


def test_arm64_exit_class_decoding() -> None:
    df = pl.DataFrame({"ret": [0, 1, 2, 2, 2, 3, 0xBADCA11, 2 | (1 << 31) - (1 << 32), 7],
                       "ec": [0, 0, 0x01, 0x1A, 0x0A, 0, 0, 0x24, 0]},
                      schema={"ret": pl.Int32, "ec": pl.UInt32})
    got = df.select(arm64.exit_class(pl.col("ret"), pl.col("ec")).alias("c"))["c"].to_list()
    assert got == ["IRQ", "SERROR", "WFx", "ERET", "EC_0x0a", "IL", "HYP_GONE", "DABT_LOW", "RET_7"]


def test_x86_reasons() -> None:
    df = pl.DataFrame({"r": [30, 48, 0x80000021, 0x7B, 0x400, 999], "isa": [1, 1, 1, 2, 2, 2]})
    got = df.select(x86.exit_class(pl.col("r"), pl.col("isa")).alias("c"))["c"].to_list()
    assert got == ["IO_INSTRUCTION", "EPT_VIOLATION", "INVALID_STATE", "io", "npf", "SVM_999"]


ARM32_TRACE = """\
cpus=1
 qemu-system-arm-100   [000]     1.000000000: kvm_entry:            vcpu_pc=0x80008000
 qemu-system-arm-100   [000]     1.000010000: kvm_exit:             vcpu_pc=0x80008004
 qemu-system-arm-100   [000]     1.000011000: kvm_guest_fault:      vcpu_pc=0x80008004 hsr=0x93800006 ipa=0x1c090000
 qemu-system-arm-100   [000]     1.000012000: kvm_mmio:             type=2 len=4 gpa=0x1c090000 val=0x41
 qemu-system-arm-100   [000]     1.000020000: kvm_entry:            vcpu_pc=0x80008008
 qemu-system-arm-100   [000]     1.000030000: kvm_exit:             vcpu_pc=0x8000800c
 qemu-system-arm-100   [000]     1.000031000: kvm_wfi:              vcpu_pc=0x8000800c
 qemu-system-arm-100   [000]     1.000050000: kvm_entry:            vcpu_pc=0x80008010
 qemu-system-arm-100   [000]     1.000060000: kvm_exit:             vcpu_pc=0x80008014
 qemu-system-arm-100   [000]     1.000061000: kvm_hvc:              vcpu_pc=0x80008014 r0=0x0 imm=0x0
 qemu-system-arm-100   [000]     1.000065000: kvm_entry:            vcpu_pc=0x80008018
 qemu-system-arm-100   [000]     1.000070000: kvm_exit:             vcpu_pc=0x8000801c
 qemu-system-arm-100   [000]     1.000072000: kvm_entry:            vcpu_pc=0x8000801c
"""


def test_arm32_classes_are_inferred(tmp_path: Path) -> None:
    path = tmp_path / "arm32.txt"
    path.write_text(ARM32_TRACE)
    cap = open_capture(path, use_cache=False)
    table = exit_table(cap.tables, cap.phases)
    ex = table.exits
    assert table.arch == "arm32"
    assert ex["exit_class"].to_list() == ["DABT_LOW", "WFx", "HVC32", "OTHER"]
    assert ex["class_inferred"].to_list() == [True] * 4
    assert ex["handling_ns"].to_list() == [10_000, 20_000, 5_000, 2_000]
    assert ex["guest_run_ns"].to_list() == [10_000, 10_000, 10_000, 5_000]
    assert any("inferred" in n for n in table.notes)
