"""kvmtrace synth: trace-cmd reads every preset, round trip through the readers, truth vs events,
determinism, the study calibration, and generation speed."""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest

from kvmtrace.ingest.tracedat.reader import read_tracedat
from kvmtrace.synth import PRESETS, apply_override, preset, simulate
from kvmtrace.synth.run import Result, _loops_for_events

needs_trace_cmd = pytest.mark.skipif(shutil.which("trace-cmd") is None, reason="needs trace-cmd")
SMALL = {"study-host": 1500, "study-guest": 1500, "hog": 800, "rt-vcpu": 800, "boot-faults": 300, "arm32": 800,
         "adversarial": 800, "adversarial-fit": 800, "busy-guest": 800, "rt-throttle": 1500, "idle-wait": 800,
         "stalls": 1500}


def run(name: str, out: Path, seed: int = 7, keep: bool = False, **kw: Any) -> Result:
    params = preset(name)
    params["cyclictest"]["loops"] = SMALL[name]
    if params.get("boot"):
        apply_override(params, "boot.guest_ms=60")
    return simulate(params, seed, out, keep=keep, **kw)


@pytest.fixture(scope="module")
def captures(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Result]]:
    base = tmp_path_factory.mktemp("synth")
    return {name: (base / name, run(name, base / name, keep=True)) for name in PRESETS}


@needs_trace_cmd
@pytest.mark.parametrize("name", sorted(PRESETS))
def test_trace_cmd_reads_every_preset(captures: dict[str, tuple[Path, Result]], name: str) -> None:
    out, result = captures[name]
    proc = subprocess.run(["trace-cmd", "report", "-t", "-i", str(out / "trace.dat")],
                          capture_output=True, text=True, check=True)
    assert proc.stderr == ""
    lines = [ln for ln in proc.stdout.splitlines() if ln and not ln.startswith("cpus=")]
    assert len(lines) == result.events
    per_event: dict[str, int] = {}
    for ln in lines:
        m = re.search(r"\]\s+[\d.]+: (\S+):", ln)
        ev = m.group(1) if m else ""
        per_event[ev] = per_event.get(ev, 0) + 1
    assert per_event == result.counts
    if name != "study-host":
        assert "kvm_entry" in result.counts and "kvm_exit" in result.counts
    if name not in ("study-host", "arm32"):
        assert "name=kvm guest vtimer" in proc.stdout or result.counts.get("kvm_timer_update_irq")


@pytest.mark.parametrize("name", ["hog", "boot-faults", "arm32", "study-host", "adversarial", "stalls"])
def test_round_trip_equals_emitted(captures: dict[str, tuple[Path, Result]], name: str) -> None:
    out, result = captures[name]
    tables = read_tracedat(out / "trace.dat")
    assert tables.events.height == result.events
    by_name: dict[str, list[dict[str, Any]]] = {}
    for batch in result.kept:
        by_name.setdefault(batch["name"], []).append(batch)
    for ev, batches in by_name.items():
        got = tables.by_event[ev]
        pid_col = "common_pid" if "pid" in got.columns and ev == "sched_wakeup" else "pid"
        cols: dict[str, Any] = {
            "ts": np.concatenate([b["ts"] for b in batches]),
            "cpu": np.concatenate([b["cpu"] for b in batches]),
            pid_col: np.concatenate([b["pid"] for b in batches]),
        }
        for key in batches[0]["values"]:
            vals = np.concatenate([b["values"][key] for b in batches])
            cols[key] = [v.decode() for v in vals] if vals.dtype.kind == "S" else vals
        string_field = _string_field(got.columns, ev)
        if string_field:
            cols[string_field] = [b["text"] for b in batches for _ in range(len(b["ts"]))]
        want = pl.DataFrame(cols)
        have = got.select([c for c in want.columns])
        want = want.cast(have.schema)  # type: ignore[arg-type]
        keys = ["ts", "cpu", pid_col]
        assert have.sort(keys).equals(want.sort(keys)), ev


def _string_field(columns: list[str], ev: str) -> str | None:
    if ev == "irq_handler_entry":
        return "name"
    if ev == "print":
        return "buf"
    return None


@pytest.mark.parametrize("name", ["hog", "rt-vcpu", "study-guest", "arm32", "boot-faults", "adversarial",
                                  "busy-guest", "rt-throttle", "idle-wait", "stalls"])
def test_truth_boundaries_fall_on_events(captures: dict[str, tuple[Path, Result]], name: str) -> None:
    """Every stage boundary of the truth is an event of the trace: the interrupt's start (a host
    irq_handler_entry; kvm_irq_line for a device interrupt; the injection at the vCPU's load on the
    host path; the switch-in that injects it on the preempted path), the wakeup, the switch-in, the
    injection, kvm_exit, kvm_entry."""
    out, _result = captures[name]
    t = read_tracedat(out / "trace.dat")
    ev = t.events
    stamps = {
        e: set(ev.filter(pl.col("event") == e)["ts"].to_list())
        for e in ("irq_handler_entry", "sched_wakeup", "sched_switch", "kvm_timer_update_irq",
                  "kvm_exit", "kvm_entry", "irq_handler_exit", "kvm_guest_fault", "kvm_irq_line")
    }
    intr = pl.read_parquet(out / "truth" / "interrupts.parquet")
    assert intr.height > 0
    a32 = name == "arm32"
    inject_event = "irq_handler_exit" if a32 else "kvm_timer_update_irq"
    for row in intr.iter_rows(named=True):
        t0, device = row["t_ns"], row["kind"] == "device"
        start = ("kvm_irq_line" if device else "kvm_timer_update_irq" if row["path"] == "host"
                 else "sched_switch" if row["path"] == "preempted" else "irq_handler_entry")
        assert t0 in stamps[start]
        assert t0 + row["total_ns"] in stamps["kvm_entry"]
        assert row["total_ns"] == sum(row[f"{s}_ns"] or 0 for s in
                                      ("host_irq", "vcpu_wait", "inject", "exit", "entry"))
        if row["path"] == "blocked":
            wake = t0 + row["host_irq_ns"]
            assert wake in stamps["sched_wakeup"]
            assert wake + row["vcpu_wait_ns"] in stamps["sched_switch"]
            if not a32 and not device:
                assert wake + row["vcpu_wait_ns"] + row["inject_ns"] in stamps["kvm_timer_update_irq"]
        elif row["path"] == "running":
            inj = t0 + (row["host_irq_ns"] or 0)
            assert device or inj in stamps[inject_event]
            assert inj + row["exit_ns"] in stamps["kvm_exit"]
    exits = pl.read_parquet(out / "truth" / "exits.parquet")
    assert exits.height == t.table("kvm_exit").height
    assert set(exits["t_ns"].to_list()) <= stamps["kvm_exit"]
    assert set((exits["t_ns"] + exits["handling_ns"]).drop_nulls().to_list()) <= stamps["kvm_entry"]
    faults = pl.read_parquet(out / "truth" / "faults.parquet")
    assert faults.height == t.table("kvm_guest_fault").height
    assert set(faults["t_ns"].to_list()) <= stamps["kvm_guest_fault"]


def test_faults_truth(captures: dict[str, tuple[Path, Result]]) -> None:
    out, _ = captures["boot-faults"]
    f = pl.read_parquet(out / "truth" / "faults.parquet")
    assert {"t_ns", "vcpu_tid", "ipa", "kind", "level", "write", "mmio", "phase", "handling_ns"} <= set(f.columns)
    assert set(f["phase"].drop_nulls().unique().to_list()) >= {"boot", "lmbench"}
    ram = f.filter(~pl.col("mmio"))
    assert ((ram["ipa"] >= 0x40000000) & (ram["ipa"] < 0x80000000)).all()
    mmio = f.filter(pl.col("mmio"))
    assert mmio["isv"].all() and (mmio["ec"] == 0x24).all()
    assert set(f["kind"].unique().to_list()) <= {"translation", "access_flag", "permission"}
    assert f.filter(pl.col("phase") == "lmbench").height > 1000


@pytest.mark.parametrize("name", ["hog", "adversarial"])
def test_same_seed_same_bytes(tmp_path: Path, name: str) -> None:
    digests = []
    for i in range(2):
        run(name, tmp_path / f"a{i}", seed=3)
        digests.append(hashlib.sha256((tmp_path / f"a{i}" / "trace.dat").read_bytes()).hexdigest())
    run(name, tmp_path / "b", seed=4)
    assert digests[0] == digests[1]
    assert hashlib.sha256((tmp_path / "b" / "trace.dat").read_bytes()).hexdigest() != digests[0]
    for table in ("interrupts", "exits", "faults"):
        a = pl.read_parquet(tmp_path / "a0" / "truth" / f"{table}.parquet")
        b = pl.read_parquet(tmp_path / "a1" / "truth" / f"{table}.parquet")
        assert a.equals(b)


@pytest.mark.parametrize("name", ["hog", "boot-faults", "study-host", "adversarial", "rt-throttle", "idle-wait",
                                  "stalls", "busy-guest"])
def test_chunking_does_not_change_the_capture(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    """The simulation hands its results over in chunks; how they are cut changes the page layout of
    trace.dat, never an event or the truth (every random stream is independent of the chunking)."""
    import kvmtrace.synth.run as synth_run

    outs = []
    for flush in (synth_run.FLUSH_ITEMS, 2000):
        monkeypatch.setattr(synth_run, "FLUSH_ITEMS", flush)
        outs.append(tmp_path / f"flush{flush}")
        result = run(name, outs[-1], seed=5)
    assert result.events > 5 * 2000 // 17  # several chunks
    one, many = (read_tracedat(o / "trace.dat") for o in outs)
    assert sorted(one.by_event) == sorted(many.by_event)
    for ev, table in one.by_event.items():
        cols = [c for c in table.columns if c != "idx"]
        assert table.select(cols).sort(cols).equals(many.by_event[ev].select(cols).sort(cols)), ev
    for table_name in ("interrupts", "exits", "faults", "cyclictest"):
        a = pl.read_parquet(outs[0] / "truth" / f"{table_name}.parquet")
        assert a.equals(pl.read_parquet(outs[1] / "truth" / f"{table_name}.parquet")), table_name


@pytest.mark.slow
def test_study_calibration(tmp_path: Path) -> None:
    """Guest vs host cyclictest max and p95 relate as in the study (48x, 2.3x)."""
    res = {}
    for side in ("study-host", "study-guest"):
        simulate(preset(side), 1, tmp_path / side)
        res[side] = pl.read_parquet(tmp_path / side / "truth" / "cyclictest.parquet")["latency_ns"]
    host, guest = res["study-host"], res["study-guest"]
    max_ratio = guest.max() / host.max()  # type: ignore[operator]
    p95_ratio = guest.quantile(0.95) / host.quantile(0.95)  # type: ignore[operator]
    print(f"\nstudy calibration (120000 loops): host max {host.max() / 1e3:.0f} us, "  # type: ignore[operator]
          f"p95 {host.quantile(0.95) / 1e3:.0f} us; guest max {guest.max() / 1e3:.0f} us, "  # type: ignore[operator]
          f"p95 {guest.quantile(0.95) / 1e3:.0f} us; ratios max {max_ratio:.1f}x, p95 {p95_ratio:.2f}x")  # type: ignore[operator]
    assert 30 <= max_ratio <= 70
    assert 1.9 <= p95_ratio <= 2.8
    intr = pl.read_parquet(tmp_path / "study-guest" / "truth" / "interrupts.parquet")
    worst = intr.sort("total_ns", descending=True).head(20)
    assert (worst["vcpu_wait_ns"].fill_null(0) > worst["total_ns"] // 2).mean() >= 0.8  # type: ignore[operator]


def test_events_scaling_speed(tmp_path: Path) -> None:
    params = preset("hog")
    params["cyclictest"]["loops"] = _loops_for_events(params, 1, 2_000_000)
    started = time.perf_counter()
    result = simulate(params, 1, tmp_path / "big")
    took = time.perf_counter() - started
    print(f"\n--events 2000000 (hog): {result.events} events in {took:.1f} s "
          f"({result.events / took / 1e6:.2f} M events/s)")
    assert 1_700_000 <= result.events <= 2_300_000
