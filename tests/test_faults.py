"""kvmtrace faults: stage-2 faults of the real arm64 capture, checked against `trace-cmd report`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from kvmtrace.analysis.faults import faults_report
from kvmtrace.arch import arm64
from kvmtrace.capture import open_capture
from kvmtrace.cli import app
from kvmtrace.errors import MissingEventsError
from kvmtrace.model.exits import exit_table
from kvmtrace.model.faults import fault_table
from tests.report_oracle import CAPTURES, as_int, have_trace_cmd, parse_fields, report

VHE = CAPTURES / "arm64-vhe-cyclictest"
needs_report = pytest.mark.skipif(not have_trace_cmd(), reason="trace-cmd not installed")
VERDICT = ("99% of stage-2 faults (34,304) happened before the cyclictest phase, during guest boot; the cyclictest "
           "phase saw 306: 305 MMIO accesses to the UART (148 reads, 157 writes) and one instruction-fetch "
           "permission fault in RAM; 74 came after it")


def _oracle_decode(hsr: int) -> tuple[int, str, int | None, bool, bool, bool]:
    """Plain-Python ESR decoding from the primer, independent of kvmtrace.arch."""
    ec, fsc = hsr >> 26, hsr & 0x3F
    kind = ("translation" if 4 <= fsc <= 7 else "access_flag" if 8 <= fsc <= 11
            else "permission" if 12 <= fsc <= 15 else "other")
    level = fsc & 3 if kind != "other" else None
    return ec, kind, level, bool(hsr >> 6 & 1) and ec not in (0x20, 0x21), bool(hsr >> 7 & 1), bool(hsr >> 24 & 1)


@needs_report
def test_every_fault_decoded_like_the_report() -> None:
    rep = report(str(VHE / "trace.dat"))
    rows = [(ts, parse_fields(rest)) for ts, ev, rest in zip(rep.ts, rep.event, rep.rest, strict=True)
            if ev == "kvm_guest_fault"]
    cap = open_capture(VHE)
    f = fault_table(cap.tables, cap.phases).faults
    assert f.height == len(rows) == 34_684
    assert f["t_ns"].to_list() == [ts for ts, _ in rows]
    assert f["ipa"].to_list() == [as_int(r["ipa"]) for _, r in rows]
    got = list(zip(*(f[c].to_list() for c in ("ec", "kind", "level", "write", "s1ptw", "isv")), strict=True))
    assert got == [_oracle_decode(as_int(r["hsr"])) for _, r in rows]


@needs_report
def test_split_around_cyclictest_equals_report_count() -> None:
    cap = open_capture(VHE)
    start, end = cap.window("cyclictest")
    rep = report(str(VHE / "trace.dat"))
    ts = [t for t, ev in zip(rep.ts, rep.event, strict=True) if ev == "kvm_guest_fault"]
    direct = {"before": sum(t < start for t in ts), "inside": sum(start <= t <= end for t in ts),
              "after": sum(t > end for t in ts)}
    r = faults_report(cap.tables, cap.phases, "vhe")
    assert r.split == direct == {"before": 34_304, "inside": 306, "after": 74}


def test_cyclictest_window_breakdown_and_verdict() -> None:
    cap = open_capture(VHE)
    r = faults_report(cap.tables, cap.phases, "vhe")
    assert r.verdict == VERDICT
    s, e = cap.window("cyclictest")
    inside = faults_report(cap.tables, cap.phases, "vhe", window=("cyclictest", s, e)).faults
    uart = inside.filter(pl.col("region") == "uart")
    assert uart.height == 305 and uart["mmio"].all() and uart["ec"].unique().to_list() == [0x24]
    assert (uart["write"].sum(), (~uart["write"]).sum()) == (157, 148)
    ram = inside.filter(pl.col("region") == "ram").row(0, named=True)
    assert (ram["ec"], ram["kind"], ram["mmio"], ram["write"]) == (0x20, "permission", False, False)


def test_handling_ns_is_the_enclosing_exit() -> None:
    cap = open_capture(VHE)
    f = fault_table(cap.tables, cap.phases).faults
    ex = exit_table(cap.tables, cap.phases).exits.select(pl.col("t_ns").alias("exit_t_ns"), "handling_ns")
    j = f.join(ex, on="exit_t_ns", how="left", suffix="_exit")
    assert j["handling_ns"].null_count() == 0
    assert (j["handling_ns"] == j["handling_ns_exit"]).all()
    assert (f["exit_t_ns"] < f["t_ns"]).all()
    assert f.filter(pl.col("t_ns") == 7_540_301_584)["handling_ns"].to_list() == [7_548_750_176 - 7_540_153_840]


def test_regions_and_mmio() -> None:
    cap = open_capture(VHE)
    ft = fault_table(cap.tables, cap.phases)
    f = ft.faults
    counts = dict(f.group_by("region").len().iter_rows())
    assert counts == {"uart": 34_047, "gic": 489, "pcie-ecam": 79, "gpio": 17, "rtc": 16, "ram": 35, "pvtime": 1}
    assert f.filter(pl.col("region") == "ram")["mmio"].any() is False
    assert f.filter(pl.col("region") == "pvtime")["mmio"].to_list() == [False]  # a memory-backed device page
    ram = ft.regions.filter((pl.col("name") == "ram") & (pl.col("start") == 0x40000000))
    assert ram["end"].to_list() == [0x50000000]


def test_esr_example_from_the_primer() -> None:
    df = pl.DataFrame({"esr": [0x93560047, 0x82000006, 0x9200004F, 0x93C08084]}, schema={"esr": pl.UInt64})
    got = df.select(arm64.decode_esr(pl.col("esr"))).rows()
    assert got == [(0x24, "translation", 3, True, False, True), (0x20, "translation", 2, False, False, False),
                   (0x24, "permission", 3, True, False, False), (0x24, "translation", 0, False, True, True)]


def test_manifest_guest_memory_wins(tmp_path: Path) -> None:
    shutil.copy(VHE / "trace.dat", tmp_path / "trace.dat")
    (tmp_path / "capture.json").write_text(json.dumps({"kvmtrace_capture": 1, "guest_memory": [
        {"name": "ram", "start": "0x40000000", "size": 0x10000000},
        {"name": "pl011", "start": 0x9000000, "size": 0x1000}]}))
    cap = open_capture(tmp_path)
    assert cap.manifest is not None
    ft = fault_table(cap.tables, cap.phases, cap.manifest.guest_memory)
    counts = dict(ft.faults.group_by("region").len().iter_rows())
    assert counts["pl011"] == 34_047 and counts["ram"] == 35
    assert "guest RAM layout from capture.json" in ft.notes


GUEST_TRACE = """\
cpus=1
           init-1     [000]     0.500000000: print:                ip=0x0 buf=L2_CYCLICTEST_START
     cyclictest-90    [000]     0.600000000: page_fault_user:      address=0x7f0000001000 ip=0x400000 error_code=0x6
     cyclictest-90    [000]     0.700000000: page_fault_user:      address=0x7f0000002000 ip=0x400000 error_code=0x6
           init-1     [000]     0.900000000: print:                ip=0x0 buf=L2_CYCLICTEST_END
     cyclictest-90    [000]     1.000000000: page_fault_user:      address=0x7f0000003000 ip=0x400000 error_code=0x6
"""


def test_guest_stage1_side_by_side(tmp_path: Path) -> None:
    g = tmp_path / "guest.txt"
    g.write_text(GUEST_TRACE)
    res = CliRunner().invoke(app, ["faults", str(VHE), "--guest", str(g), "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    rows = {r["phase"]: (r["stage2_faults"], r["stage1_faults"]) for r in doc["stage1"]}
    assert rows["cyclictest"] == (306, 2)
    assert rows["(none)"] == (133, 1)
    assert rows["boot"] == (34_245, 0)
    assert doc["stage1_events"] == ["page_fault_user"]


def test_cli_out_and_missing_events(tmp_path: Path) -> None:
    out = tmp_path / "faults.parquet"
    res = CliRunner().invoke(app, ["faults", str(VHE), "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert res.output.strip() == f"wrote 34,684 rows to {out}"
    printed = CliRunner().invoke(app, ["faults", str(VHE)])
    assert "34,304 before, 306 inside, 74 after" in printed.output
    df = pl.read_parquet(out)
    assert df.columns[:14] == ["t_ns", "vcpu_tid", "ipa", "esr", "ec", "kind", "level", "write", "s1ptw", "isv",
                               "mmio", "region", "phase", "handling_ns"]
    assert df.height == 34_684
    cap = open_capture(CAPTURES / "x86-host-cyclictest-stress")
    with pytest.raises(MissingEventsError) as exc:
        fault_table(cap.tables, cap.phases)
    assert exc.value.missing == ["kvm:kvm_guest_fault"]


def test_synth_truth_faults_and_exits(tmp_path: Path) -> None:
    """Every fault of the synthesiser's truth found with the same decoded fields and handling_ns;
    exits per class equal to truth/exits.parquet."""
    run = pytest.importorskip("kvmtrace.synth.run")
    scenario = pytest.importorskip("kvmtrace.synth.scenario")
    params = scenario.preset("boot-faults")
    params["cyclictest"]["loops"] = 300
    out = tmp_path / "synth"
    run.simulate(params, 1, out)
    cap = open_capture(out, use_cache=False)
    assert cap.manifest is not None
    truth = pl.read_parquet(out / "truth" / "faults.parquet")
    got = fault_table(cap.tables, cap.phases, cap.manifest.guest_memory).faults
    assert got.height == truth.height > 0
    cols = ["t_ns", "vcpu_tid", "ipa", "esr", "ec", "kind", "level", "write", "s1ptw", "isv", "phase", "handling_ns"]
    assert got.select(cols).equals(truth.select(cols))
    # mmio/region follow docs/stages.md: compare where the truth's IPA lies inside the manifest's regions
    inside = pl.any_horizontal([pl.col("ipa").is_between(m["start"], m["start"] + m["size"] - 1)
                                for m in cap.manifest.guest_memory])
    both = got.with_columns(inside.alias("in_map")).filter("in_map")
    t_in = truth.filter(inside)
    assert both.height > 0 and both.select("mmio", "region").equals(t_in.select("mmio", "region"))
    t_ex = pl.read_parquet(out / "truth" / "exits.parquet")
    ex = exit_table(cap.tables, cap.phases).exits
    per_class = {r[0]: r[1] for r in ex.group_by("exit_class").len().iter_rows()}
    assert per_class == {r[0]: r[1] for r in t_ex.group_by("exit_class").len().iter_rows()}


GUEST_PF = Path(__file__).parent / "fixtures" / "x86-guest-pagefaults"


def test_guest_stage1_counts_every_fault_event_per_phase() -> None:
    """A real recording (this machine, exceptions:page_fault_user/kernel, markers L2_SHELL and
    L2_LMBENCH_START/END around a loop touching 256 pages): stage-1 faults per phase equal the
    fault lines `trace-cmd report` prints inside each phase."""
    rep = report(str(GUEST_PF / "trace.dat"))
    marks = {parse_fields(r).get("buf", r.split(": ", 1)[-1]).strip(): ts
             for ts, ev, r in zip(rep.ts, rep.event, rep.rest, strict=True) if ev == "print"}
    faults = [ts for ts, ev in zip(rep.ts, rep.event, strict=True) if ev.startswith("page_fault")]
    lmbench = sum(marks["L2_LMBENCH_START"] <= ts <= marks["L2_LMBENCH_END"] for ts in faults)
    res = CliRunner().invoke(app, ["faults", str(VHE), "--guest", str(GUEST_PF), "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    rows = {r["phase"]: r["stage1_faults"] for r in doc["stage1"]}
    assert sum(v for v in rows.values() if v) == len(faults) > 9000
    assert rows["lmbench"] == lmbench > 256
    assert sorted(doc["stage1_events"]) == ["page_fault_kernel", "page_fault_user"]


def test_guest_without_fault_events_is_not_recorded(tmp_path: Path) -> None:
    g = tmp_path / "guest.txt"
    g.write_text(GUEST_TRACE.replace("page_fault_user", "sched_yield_x"))
    res = CliRunner().invoke(app, ["faults", str(VHE), "--guest", str(g)])
    assert res.exit_code == 0, res.output
    assert "not recorded" in res.output
    doc = json.loads(CliRunner().invoke(app, ["faults", str(VHE), "--guest", str(g), "--json"]).stdout)
    assert {r["stage1_faults"] for r in doc["stage1"]} == {None}


def test_an_access_flag_fault_is_one_row(tmp_path: Path) -> None:
    """KVM logs an access-flag fault as kvm_guest_fault then kvm_access_fault: one fault, one row."""
    run = pytest.importorskip("kvmtrace.synth.run")
    scenario = pytest.importorskip("kvmtrace.synth.scenario")
    params = scenario.preset("hog")
    params["cyclictest"]["loops"] = 3000
    params["exits"]["ACCESS"]["rate_hz"] = 200
    run.simulate(params, 2, tmp_path / "c")
    cap = open_capture(tmp_path / "c", use_cache=False)
    access = cap.tables.table("kvm_access_fault").height
    assert access > 20
    faults = fault_table(cap.tables, cap.phases).faults
    assert faults.height == cap.tables.table("kvm_guest_fault").height
    assert faults.filter(pl.col("kind") == "access_flag").height == access
