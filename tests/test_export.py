"""kvmtrace export on real captures: the Perfetto trace (read back with the perfetto package's own protobuf
bindings) and the Chrome JSON hold every interrupt, stage, vCPU state, exit and fault that the tables
written by `irqs`, `vcpus`, `exits` and `faults` hold, at the same times."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from kvmtrace.analysis.latency import analyze
from kvmtrace.capture import open_capture
from kvmtrace.cli import app
from kvmtrace.model.interrupts import STAGES
from kvmtrace.render.chrome_json import read_chrome_json
from kvmtrace.render.perfetto import read_perfetto
from kvmtrace.render.timeline import lanes, rate_bin_ns
from tests.cli_runner import cli
from tests.report_oracle import CAPTURES

PAIR = CAPTURES / "board-vhe-guest-pair"
THROTTLE = CAPTURES / "board-vhe-rt-throttle"
DEVICE = Path(__file__).parent / "fixtures" / "board-device-irq"



@dataclass
class Case:
    capture: Path
    irqs: pl.DataFrame
    states: pl.DataFrame
    exits: pl.DataFrame
    faults: pl.DataFrame
    doc: dict
    lo: int
    hi: int
    tracks: dict[int, object]
    events: pl.DataFrame
    chrome: pl.DataFrame


def _export(capture: Path, tmp: Path, window: str | None = None) -> Case:
    win = ["--window", window] if window else []
    cli("export", str(capture), "--to", "perfetto", "-o", str(tmp / "t.pftrace"), *win)
    cli("export", str(capture), "--to", "chrome-json", "-o", str(tmp / "t.json"), *win)
    cli("irqs", str(capture), "--out", str(tmp / "irqs.parquet"), *win)
    cli("vcpus", str(capture), "--out", str(tmp / "states.parquet"))
    cli("exits", str(capture), "--out", str(tmp / "exits.parquet"))
    cli("faults", str(capture), "--out", str(tmp / "faults.parquet"))
    doc = json.loads(cli("analyze", str(capture), "--json", *win))
    irqs = pl.read_parquet(tmp / "irqs.parquet").with_columns(
        pl.min_horizontal(pl.coalesce("deadline_ns", "t_ns"), "t_ns").alias("start_ns"))
    # the exported range: the analysis window, widened to hold its interrupts whole
    lo = min(doc["window"]["start_ns"], int(irqs["start_ns"].min()))
    hi = max(doc["window"]["end_ns"], int(irqs["entry_at_ns"].max()))
    descriptors, events = read_perfetto(tmp / "t.pftrace")
    return Case(capture, irqs, pl.read_parquet(tmp / "states.parquet"), pl.read_parquet(tmp / "exits.parquet"),
                pl.read_parquet(tmp / "faults.parquet"), doc, lo, hi, {d.uuid: d for d in descriptors}, events,
                read_chrome_json(tmp / "t.json"))


@pytest.fixture(scope="module", params=[PAIR, THROTTLE], ids=["guest-pair", "rt-throttle"])
def case(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Case:
    return _export(request.param, tmp_path_factory.mktemp("export"))


def slices(events: pl.DataFrame) -> pl.DataFrame:
    """Begin/end pairs matched per track in file order (a mismatched end fails): track, start, end, name,
    category, args, depth, flow_ids, terminating."""
    stacks: dict[int, list[dict]] = {}
    out = []
    for e in events.filter(pl.col("type").is_in(["TYPE_SLICE_BEGIN", "TYPE_SLICE_END"])).iter_rows(named=True):
        stack = stacks.setdefault(e["track"], [])
        if e["type"] == "TYPE_SLICE_BEGIN":
            stack.append({**e, "depth": len(stack)})
            continue
        assert stack, f"slice end without a begin on track {e['track']} at {e['ts']}"
        b = stack.pop()
        out.append({"track": b["track"], "start": b["ts"], "end": e["ts"], "name": b["name"],
                    "category": b["category"], "args": b["args"], "depth": b["depth"],
                    "flow_ids": b["flow_ids"], "terminating": b["terminating"]})
    assert all(not s for s in stacks.values()), "slices left open"
    return pl.DataFrame(out, infer_schema_length=None)


def track_ids(c: Case, name: str, parent: str | None = None) -> list[int]:
    parents = {u for u, d in c.tracks.items() if parent is None or d.name == parent}
    return [u for u, d in c.tracks.items() if d.name == name and (parent is None or d.parent_uuid in parents)]


def in_range(c: Case, df: pl.DataFrame, col: str = "t_ns") -> pl.DataFrame:
    return df.filter(pl.col(col).is_between(c.lo, c.hi))


def test_tracks_are_cpus_vcpus_phases(case: Case) -> None:
    names = {d.name for d in case.tracks.values()}
    tid, comm = case.doc["vcpus"][0]["vcpu_tid"], case.doc["vcpus"][0]["comm"]
    group = f"vCPU {tid} ({comm})"
    assert {"CPUs", "CPU 0", "CPU 1", group, "Phases and markers", "markers"} <= names
    children = {d.name for d in case.tracks.values() if d.parent_uuid == track_ids(case, group)[0]}
    assert children == {"states", "interrupts", "exits", "stage-2 faults", "exits per second",
                        "stage-2 faults per second"}
    counters = [d for d in case.tracks.values() if d.HasField("counter")]
    assert {d.name for d in counters} == {"exits per second", "stage-2 faults per second"}


def test_every_interrupt_is_a_slice_from_deadline_to_entry(case: Case) -> None:
    s = slices(case.events).filter(pl.col("category") == "interrupt")
    assert s.height == case.irqs.height == case.doc["interrupts"]["count"]
    got = s.select("start", "end").sort("start", "end")
    want = case.irqs.select(pl.col("start_ns").alias("start"), pl.col("entry_at_ns").alias("end")).sort("start", "end")
    assert got.equals(want)
    assert s.filter(pl.col("track").is_in(track_ids(case, "interrupts"))).height == s.height


def test_interrupt_arguments_carry_the_verdict_and_blocker(case: Case) -> None:
    s = slices(case.events).filter(pl.col("category") == "interrupt")
    args = [json.loads(a) for a in s["args"]]
    assert all(a["verdict"] and "irq_no" in a and "best_latency_ns" in a for a in args)
    by_start = {(x, a["best_latency_ns"]): a for x, a in zip(s["start"].to_list(), args, strict=True)}
    for w in case.doc["interrupts"]["worst"]:
        start = min(w["deadline_ns"] if w["deadline_ns"] is not None else w["t_ns"], w["t_ns"])
        a = by_start[(start, w["best_latency_ns"])]
        assert a["verdict"] == w["verdict"]
        assert a.get("cause") == w["cause"] and a.get("blocker_comm") == w["blocker_comm"]


def test_stages_nest_inside_their_interrupt_and_add_up(case: Case) -> None:
    s = slices(case.events)
    stages = s.filter(pl.col("category") == "stage")
    assert stages["depth"].unique().to_list() == [1]
    host = [x for x in STAGES if x != "timer"]
    want = sum(case.irqs.filter(pl.col(f"{x}_ns") > 0).height for x in STAGES)
    assert stages.height == want
    assert Counter(stages["name"].to_list()) == {x: case.irqs.filter(pl.col(f"{x}_ns") > 0).height for x in STAGES
                                                 if case.irqs.filter(pl.col(f"{x}_ns") > 0).height}
    irq_no = pl.col("args").str.json_path_match("$.irq_no").cast(pl.Int64)
    host_sum = (stages.filter(pl.col("name").is_in(host)).group_by(irq_no.alias("irq_no"))
                .agg((pl.col("end") - pl.col("start")).sum().alias("sum"), pl.col("start").min().alias("first"),
                     pl.col("end").max().alias("last")))
    irqs = case.irqs.select(pl.col("irq_no").cast(pl.Int64), "total_ns", "t_ns", "entry_at_ns")
    j = host_sum.join(irqs, on="irq_no")
    assert j.height == case.irqs.height
    assert (j["sum"] == j["total_ns"]).all()
    assert (j["first"] == j["t_ns"]).all() and (j["last"] == j["entry_at_ns"]).all()


def test_vcpu_states_are_the_vcpus_table(case: Case) -> None:
    s = slices(case.events).filter(pl.col("category") == "vcpu_state")
    st = case.states.filter(pl.col("end_ns") > case.lo, pl.col("start_ns") < case.hi).with_columns(
        pl.col("start_ns").clip(lower_bound=case.lo), pl.col("end_ns").clip(upper_bound=case.hi)
    ).filter(pl.col("end_ns") > pl.col("start_ns"))
    assert s.height == st.height > 1000
    assert s.select("start", "end", "name").sort("start").rows() == st.select("start_ns", "end_ns", "state").rows()


def test_exits_and_faults_are_instants_with_decoded_fields(case: Case) -> None:
    inst = case.events.filter(pl.col("type") == "TYPE_INSTANT")
    ex = in_range(case, case.exits)
    exits = inst.filter(pl.col("category") == "exit")
    assert exits.height == ex.height > 100
    assert sorted(exits["ts"].to_list()) == sorted(ex["t_ns"].to_list())
    assert Counter(exits["name"].to_list()) == Counter(ex["exit_class"].to_list())
    f = in_range(case, case.faults)
    faults = inst.filter(pl.col("category") == "fault")
    assert faults.height == f.height > 0
    first = json.loads(faults.sort("ts")["args"][0])
    row = f.sort("t_ns").row(0, named=True)
    assert first["ipa"] == f"{row['ipa']:#x}" and first["esr"] == f"{row['esr']:#x}"
    assert first["kind"] == row["kind"] and first["region"] == row["region"] and first["ec_name"] == row["ec_name"]


def test_rate_counters_integrate_to_the_event_counts(case: Case) -> None:
    width = rate_bin_ns(case.hi - case.lo)
    for name, table in (("exits per second", case.exits), ("stage-2 faults per second", case.faults)):
        c = case.events.filter(pl.col("type") == "TYPE_COUNTER", pl.col("track").is_in(track_ids(case, name)))
        assert c.height == (case.hi - case.lo) // width + 1
        assert round(float(c["counter"].sum()) * width / 1e9) == in_range(case, table).height


def test_flows_go_from_the_host_irq_to_the_guest_entry(case: Case) -> None:
    s = slices(case.events)
    ends = s.filter(pl.col("terminating").list.len() > 0).explode("terminating")
    assert ends.height == case.irqs.height
    assert set(ends["name"].unique()) == {"guest"}
    entry = case.irqs.select((pl.col("irq_no").cast(pl.UInt64) + 1).alias("terminating"), "entry_at_ns")
    j = ends.join(entry, on="terminating")
    assert (j["start"] == j["entry_at_ns"]).all()
    starts = s.filter(pl.col("category") == "cpu", pl.col("flow_ids").list.len() > 0)
    assert starts["flow_ids"].list.len().sum() == case.irqs.height
    blocked = case.irqs.filter(pl.col("switch_in_ns").is_not_null()).height
    steps = s.filter(pl.col("category") == "vcpu_state", pl.col("flow_ids").list.len() > 0)
    assert steps["flow_ids"].list.len().sum() == blocked


def test_cpu_tracks_hold_every_non_idle_segment(case: Case) -> None:
    a = analyze(open_capture(case.capture))
    seg = a.segments.filter(pl.col("owner_pid").fill_null(-1) != 0, pl.col("end_ns") > case.lo,
                            pl.col("start_ns") < case.hi)
    seg = seg.with_columns(pl.col("start_ns").clip(lower_bound=case.lo), pl.col("end_ns").clip(upper_bound=case.hi))
    seg = seg.filter(pl.col("end_ns") > pl.col("start_ns"))
    s = slices(case.events).filter(pl.col("category") == "cpu")
    assert s.height == seg.height
    for cpu in (0, 1):
        got = s.filter(pl.col("track").is_in(track_ids(case, f"CPU {cpu}"))).sort("start")
        want = seg.filter(pl.col("cpu") == cpu).sort("start_ns")
        assert got["start"].to_list() == want["start_ns"].to_list()
        assert got["end"].to_list() == want["end_ns"].to_list()


def test_chrome_json_holds_the_same_timeline(case: Case) -> None:
    ev = case.chrome
    b = ev.filter(pl.col("ph") == "b")
    irq = b.filter(pl.col("name").str.starts_with("irq "))
    assert irq.height == case.irqs.height
    assert irq["id"].n_unique() == irq.height
    assert sorted(round(x * 1000) for x in irq["ts"]) == sorted(case.irqs["start_ns"].to_list())
    assert ev.filter(pl.col("ph") == "e").height == b.height
    states = ev.filter(pl.col("ph") == "X", pl.col("cat") == "vcpu_state")
    assert states.height == slices(case.events).filter(pl.col("category") == "vcpu_state").height
    assert ev.filter(pl.col("ph") == "i", pl.col("cat") == "exit").height == in_range(case, case.exits).height
    assert ev.filter(pl.col("ph") == "i", pl.col("cat") == "fault").height == in_range(case, case.faults).height
    assert ev.filter(pl.col("ph") == "f").height == case.irqs.height
    names = set(ev.filter(pl.col("ph") == "M", pl.col("name") == "process_name")["pid"].to_list())
    assert len(names) == 3  # CPUs, the vCPU, phases and markers


def test_overlapping_interrupts_get_lanes_and_async_events(tmp_path: Path) -> None:
    c = _export(DEVICE, tmp_path, "all")
    s = slices(c.events).filter(pl.col("category") == "interrupt")
    assert s.height == c.irqs.height
    lane_tracks = track_ids(c, "interrupts")
    assert len(lane_tracks) == 2
    assert {c.tracks[t].sibling_merge_key for t in lane_tracks} == {"vcpu123-interrupts"}
    for t in lane_tracks:  # no overlap inside a lane
        lane = s.filter(pl.col("track") == t).sort("start")
        assert (lane["start"].shift(-1) >= lane["end"]).fill_null(True).all()
    irq = c.chrome.filter(pl.col("ph") == "b", pl.col("name").str.starts_with("irq "))
    assert irq.height == c.irqs.height


def test_lanes_are_greedy() -> None:
    assert lanes([0, 1, 3, 5], [4, 3, 6, 7]) == [0, 1, 1, 0]
    assert lanes([0, 1, 2], [4, 3, 6]) == [0, 1, 2]
    assert lanes([], []) == []


def test_guest_tracks_on_the_host_clock(tmp_path: Path) -> None:
    out = tmp_path / "g.pftrace"
    cli("export", str(PAIR), "--to", "perfetto", "-o", str(out), "--guest", str(PAIR / "guest"))
    descriptors, events = read_perfetto(out)
    names = {d.uuid: d.name for d in descriptors}
    guest_cpu = [u for u, n in names.items() if n.startswith("guest CPU 0")]
    assert guest_cpu and names[guest_cpu[0]] == "guest CPU 0 (vCPU 123)"
    markers = events.filter(pl.col("category") == "marker", pl.col("name") == "L2_CYCLICTEST_START")
    assert markers.height == 2  # the host's copy and the guest's own, aligned
    ts = sorted(markers["ts"].to_list())
    assert 0 < ts[1] - ts[0] < 100_000_000


def test_unknown_target_is_one_line_and_exit_2(tmp_path: Path) -> None:
    res = CliRunner().invoke(app, ["export", str(PAIR), "--to", "svg", "-o", str(tmp_path / "x")])
    assert res.exit_code == 2
    assert "expected one of perfetto, chrome-json" in res.output
