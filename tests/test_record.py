"""kvmtrace record: real recordings on this machine (root + tracefs), interruptions, errors, record.sh, pyz.

The tracefs tests record in private ``kvmtrace-<pid>`` instances only, and check afterwards that
the instance is gone and the top-level tracing state is what it was.
"""

from __future__ import annotations

import functools
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kvmtrace.capture import open_capture
from kvmtrace.ingest.cyclictest import SUMMARY_RE as _CYCLICTEST_RE
from kvmtrace.record import events as ev
from kvmtrace.record import workloads
from kvmtrace.record.options import parse
from tests.report_oracle import report

ROOT = Path(__file__).resolve().parents[1]
TRACEFS = Path("/sys/kernel/tracing")
PY = sys.executable
SYSTEM_PY = shutil.which("python3") or PY
TOP_KEYS = ("tracing_on", "current_tracer", "trace_clock", "buffer_size_kb", "set_event", "tracing_cpumask")
SHORT_CT = ["--workload", "cyclictest", "--loops", "500", "--interval-us", "1000"]


def _usable() -> bool:
    return os.geteuid() == 0 and (TRACEFS / "instances").is_dir() and shutil.which("cyclictest") is not None


needs_tracefs = [pytest.mark.tracefs,
                 pytest.mark.skipif(not _usable(), reason="needs root, tracefs and cyclictest (rt-tests)")]


def top_level() -> dict[str, str]:
    return {k: (TRACEFS / k).read_text() for k in TOP_KEYS if (TRACEFS / k).exists()}


def recorder(out: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen([PY, "-m", "kvmtrace.record", "-q", "-o", str(out), *args], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def run_recorder(out: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PY, "-m", "kvmtrace.record", "-q", "-o", str(out), *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


def assert_left_as_found(pid: int, before: dict[str, str]) -> None:
    assert not (TRACEFS / "instances" / f"kvmtrace-{pid}").exists()
    assert top_level() == before


def assert_capture_reads(out: Path) -> dict[str, Any]:
    """kvmtrace and trace-cmd both read the capture; returns the manifest."""
    manifest = json.loads((out / "capture.json").read_text())
    assert manifest["kvmtrace_capture"] == 1
    cap = open_capture(out, use_cache=False)
    res = subprocess.run(["trace-cmd", "report", "-i", str(out / "trace.dat")], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert "error" not in res.stderr.lower(), res.stderr
    assert len(report(str(out / "trace.dat")).event) == cap.tables.events.height
    return manifest


# ------------------------------------------------------------------ without tracefs


def test_presets_match_record_sh() -> None:
    text = (ROOT / "scripts" / "record.sh").read_text()
    for preset, var in (("latency", "PRESET_LATENCY"), ("faults", "PRESET_FAULTS"), ("all-kvm", "PRESET_ALL_KVM")):
        m = re.search(rf'^{var}="([^"]*)"', text, re.MULTILINE)
        assert m and m.group(1).split() == ev.PRESETS[preset], preset


def test_resolve_lists_missing_and_rejects_unknown(tmp_path: Path) -> None:
    for system, event in (("sched", "sched_switch"), ("kvm", "kvm_exit"), ("ipi", "ipi_raise"), ("ipi", "ipi_entry")):
        (tmp_path / system / event).mkdir(parents=True)
    cat = ev.EventCatalog(str(tmp_path))
    sel = ev.resolve(cat, ["latency"], ["sched_switch"])
    assert ("ipi", "ipi_entry") in sel.events and ("kvm", "kvm_exit") in sel.events
    assert "kvm:kvm_wfx_arm64" in sel.missing and "sched:sched_wakeup" in sel.missing
    with pytest.raises(ValueError, match="unknown event 'nosuch'"):
        ev.resolve(cat, [], ["nosuch"])


def test_options_split_workload_args() -> None:
    o = parse(["-o", "d", "--workload", "cyclictest", "-p", "latency,faults", "--", "-p", "80", "-q"])
    assert o.workloads == ["cyclictest"] and o.presets == ["latency", "faults"] and o.args == ["-p", "80", "-q"]


def test_cyclictest_summary_rebuilt_from_json(tmp_path: Path) -> None:
    data = {"thread": {"0": {"cycles": 500, "min": 11, "max": 80, "avg": 17.6}}}
    (tmp_path / "ct.json").write_text(json.dumps(data))
    wl = workloads.Workload("cyclictest", "cyclictest", ["cyclictest", "-p", "99", "-i", "30000",
                                                         f"--json={tmp_path / 'ct.json'}"], "ct.txt")
    wl.tids = [4242]
    workloads.finish(wl, "       0:     498:      12\n       0:     499:      15\n# Max Latencies: 00080\n")
    m = _CYCLICTEST_RE.search(wl.markers[0])
    assert m and m["tid"] == "4242" and m["prio"] == "99" and m["interval_us"] == "30000"
    assert (m["loops"], m["min_us"], m["act_us"], m["avg_us"], m["max_us"]) == ("500", "11", "15", "18", "80")


def test_recorder_is_stdlib_only() -> None:
    code = ("import sys; import kvmtrace.record.__main__, kvmtrace.record.recorder, kvmtrace.record.convert; "
            "bad = [m for m in ('polars', 'numpy', 'typer', 'rich') if m in sys.modules]; print(bad)")
    res = subprocess.run([SYSTEM_PY, "-I", "-c", f"import sys; sys.path.insert(0, {str(ROOT)!r}); {code}"],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "[]"


def test_pyz_runs_with_plain_python(tmp_path: Path) -> None:
    pyz = tmp_path / "kvmtrace-record.pyz"
    subprocess.run([PY, str(ROOT / "scripts" / "build_pyz.py"), "-o", str(pyz)], check=True, capture_output=True)
    res = subprocess.run([SYSTEM_PY, "-I", str(pyz), "--help"], capture_output=True, text=True)
    assert res.returncode == 0 and "--workload" in res.stdout


@functools.cache
def _oldest_python() -> str | None:
    """A working Python 3.8 interpreter (the oldest the recorder supports), if this machine has one."""
    found = [str(p) for p in sorted(Path("/root/.pyenv/versions").glob("3.8.*/bin/python3.8"))]
    found += [p for p in (shutil.which("python3.8"), "/usr/bin/python3.8") if p]
    for candidate in found:
        try:
            res = subprocess.run([candidate, "-c", "import sys; print(sys.version_info[:2])"], capture_output=True,
                                 text=True, timeout=30)
        except OSError:
            continue
        if res.returncode == 0 and res.stdout.strip() == "(3, 8)":
            return candidate
    return None


@pytest.mark.tracefs
@pytest.mark.skipif(not _usable() or _oldest_python() is None, reason="needs root, tracefs, cyclictest, Python 3.8")
def test_pyz_records_under_python_3_8(tmp_path: Path) -> None:
    """The one-file recorder under the oldest Python it promises: a real cyclictest recording that
    kvmtrace and trace-cmd read, with the tracing state left as found."""
    pyz = tmp_path / "kvmtrace-record.pyz"
    subprocess.run([PY, str(ROOT / "scripts" / "build_pyz.py"), "-o", str(pyz)], check=True, capture_output=True)
    python38 = _oldest_python()
    assert python38 is not None
    before = top_level()
    out = tmp_path / "cap"
    res = subprocess.run([python38, "-I", str(pyz), "-q", "-o", str(out), *SHORT_CT], capture_output=True, text=True,
                         timeout=60)
    assert res.returncode == 0, res.stderr
    assert top_level() == before
    manifest = assert_capture_reads(out)
    assert [p["name"] for p in manifest["phases"]] == ["cyclictest"]


@pytest.mark.skipif(shutil.which("cc") is None and shutil.which("gcc") is None, reason="needs a C compiler")
def test_bench_programs_build_and_report(tmp_path: Path) -> None:
    subprocess.run(["sh", str(ROOT / "scripts" / "bench" / "build.sh"), str(tmp_path)], check=True, capture_output=True)
    mem = subprocess.run([str(tmp_path / "kvmtrace-lat_mem_rd"), "-r", "-l", "100000", "4"],
                         capture_output=True, text=True, check=True).stdout
    pf = subprocess.run([str(tmp_path / "kvmtrace-lat_pagefault"), "-s", "4", "-n", "2", str(tmp_path / "f")],
                        capture_output=True, text=True, check=True).stdout
    for kind, text in (("lat_mem_rd", mem), ("lat_pagefault", pf)):
        wl = workloads.Workload(kind, kind, [], "x", {"pattern": "random", "stride": 64})
        workloads.finish(wl, text)
        assert wl.results and wl.markers[0].startswith(f"kvmtrace result {kind}")


def test_missing_tracefs_is_one_line(tmp_path: Path) -> None:
    res = run_recorder(tmp_path / "cap", "--tracefs", str(tmp_path))
    assert res.returncode == 2
    assert res.stderr.strip().count("\n") == 0 and "not a tracefs mount" in res.stderr
    assert not (tmp_path / "cap").exists()


def test_from_raw_rejects_non_raw(tmp_path: Path) -> None:
    res = run_recorder(tmp_path / "cap", "--from-raw", str(tmp_path))
    assert res.returncode == 2 and "not a raw capture directory" in res.stderr


# ------------------------------------------------------------------ real recordings


@pytest.fixture(scope="module")
def cyclictest_capture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict[str, str]]]:
    if not _usable():
        pytest.skip("needs root, tracefs and cyclictest")
    out = tmp_path_factory.mktemp("rec") / "cap"
    before = top_level()
    proc = recorder(out, *SHORT_CT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert_left_as_found(proc.pid, before)
    yield out, before


@pytest.mark.tracefs
def test_cyclictest_capture_events_markers_manifest(cyclictest_capture: tuple[Path, dict[str, str]]) -> None:
    out, _ = cyclictest_capture
    manifest = assert_capture_reads(out)
    cap = open_capture(out, use_cache=False)
    counts = cap.tables.events["event"].value_counts()
    seen = set(counts["event"].to_list())
    assert {"sched_switch", "sched_wakeup", "hrtimer_expire_entry", "hrtimer_expire_exit", "print"} <= seen
    texts = cap.markers["text"].to_list()
    assert "kvmtrace phase cyclictest begin" in texts and "kvmtrace phase cyclictest end" in texts
    assert cap.cyclictest.height == 1 and cap.cyclictest["loops"][0] == 500
    assert cap.phases.filter(cap.phases["name"] == "cyclictest").height == 1
    tracing = manifest["tracing"]
    assert isinstance(tracing, dict) and tracing["clock"] == "mono" and "sched:sched_switch" in tracing["events"]
    assert "kvm:kvm_wfx_arm64" in tracing["missing_events"]  # arm64-only events are listed, not fatal
    assert manifest["side"] == ("host" if os.path.exists("/dev/kvm") else "guest")
    assert set(manifest["lost_events"]) == {str(c) for c in range(os.cpu_count() or 1)}
    assert (out / "cyclictest.txt").read_text().count("\n") > 500  # verbose per-loop lines + histogram
    assert not (out / "raw").exists()


@pytest.mark.tracefs
def test_trace_cmd_sees_markers(cyclictest_capture: tuple[Path, dict[str, str]]) -> None:
    out, _ = cyclictest_capture
    rep = report(str(out / "trace.dat"))
    prints = [r for e, r in zip(rep.event, rep.rest, strict=True) if e == "print"]
    assert any("kvmtrace phase cyclictest end" in r for r in prints)
    assert any(_CYCLICTEST_RE.search(r) for r in prints)


@pytest.mark.tracefs
@pytest.mark.skipif(not _usable(), reason="needs root, tracefs and cyclictest")
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupted_recordings_leave_system_as_found(tmp_path: Path, sig: signal.Signals) -> None:
    rng = random.Random()
    seed = rng.randrange(1 << 30)
    rng.seed(seed)
    captures = 0
    for i in range(4):
        delay = rng.uniform(0.0, 1.6) if i < 3 else rng.uniform(0.8, 1.6)  # the last one mid-workload
        out = tmp_path / f"cap{i}"
        before = top_level()
        load = ["--load", "--load-tool", "builtin", "--load-workers", "1"] if i % 2 else []
        proc = recorder(out, "--workload", "cyclictest", "--loops", "100000", "--interval-us", "1000", *load)
        time.sleep(delay)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
        where = f"seed {seed}, run {i}, {sig.name} after {delay:.2f} s: {err}"
        assert proc.returncode in (128 + sig, -sig), where
        assert_left_as_found(proc.pid, before)
        assert not _hogs_of(proc.pid), where
        if out.exists():
            captures += 1
            manifest = assert_capture_reads(out)
            record = manifest["record"]
            assert isinstance(record, dict) and record["status"] == f"interrupted by {sig.name}", where
    assert captures >= 1


def _hogs_of(pid: int) -> list[int]:
    """Built-in load processes of the recorder `pid` still alive (other processes on a shared
    machine may run the same loop: only this recorder's own hogs count)."""
    owner_tag = b"\0kvmtrace-load\0%d\0" % pid
    found = []
    for entry in Path("/proc").iterdir():
        try:
            cmdline = (entry / "cmdline").read_bytes() if entry.name.isdigit() else b""
            if cmdline.endswith(owner_tag):
                found.append(int(entry.name))
        except OSError:
            continue
    return found


@pytest.mark.tracefs
@pytest.mark.skipif(not _usable(), reason="needs root, tracefs and cyclictest")
def test_unknown_event_clock_and_bad_filter(tmp_path: Path) -> None:
    before = top_level()
    for args, text in ((["-e", "nosuch:event"], "unknown event"), (["-C", "nosuchclock"], "unknown trace clock"),
                       (["--filter", "sched:sched_switch=bogus ===", "--duration", "1"], "filter")):
        res = run_recorder(tmp_path / "cap", *args)
        assert res.returncode == 2 and text in res.stderr, res.stderr
        assert len(res.stderr.strip().splitlines()) == 1, res.stderr
        assert not (tmp_path / "cap").exists()
    assert top_level() == before
    assert not [n for n in os.listdir(TRACEFS / "instances") if re.fullmatch(r"kvmtrace-\d+", n)
                and not Path(f"/proc/{n.split('-')[1]}").exists()]


@pytest.mark.tracefs
@pytest.mark.skipif(not _usable() or shutil.which("setpriv") is None, reason="needs root, tracefs and setpriv")
def test_no_permission() -> None:
    """An unprivileged user gets one line. The recorder runs as its pyz from a folder of its own in /tmp
    that user can reach: the checkout and pytest's tmp_path may lie in folders only root can enter
    (a fresh clone in a mktemp -d folder; /tmp/pytest-of-root)."""
    folder = Path(tempfile.mkdtemp(prefix="kvmtrace-noperm-", dir="/tmp"))
    try:
        folder.chmod(0o777)
        pyz = folder / "kvmtrace-record.pyz"
        subprocess.run([PY, str(ROOT / "scripts" / "build_pyz.py"), "-o", str(pyz)], check=True, capture_output=True)
        pyz.chmod(0o644)
        res = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", PY, "-I", str(pyz),
                              "-o", str(folder / "cap"), "--duration", "1"],
                             cwd=folder, capture_output=True, text=True, timeout=30)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    assert res.returncode == 2 and "permission denied" in res.stderr, res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


@pytest.fixture
def tiny_fs(tmp_path: Path) -> Iterator[Path]:
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


@pytest.mark.tracefs
@pytest.mark.skipif(not _usable(), reason="needs root, tracefs and cyclictest")
def test_full_disk(tiny_fs: Path, tmp_path: Path) -> None:
    before = top_level()
    proc = recorder(tiny_fs / "cap", "--no-kallsyms", "-e", "raw_syscalls", "--duration", "5")
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2 and "no space left on device" in err, err
    assert len(err.strip().splitlines()) == 1
    assert_left_as_found(proc.pid, before)
    raw = tiny_fs / "cap" / "raw"
    assert raw.is_dir()  # what was recorded is kept, and builds elsewhere
    res = run_recorder(tmp_path / "rescued", "--from-raw", str(raw))
    assert res.returncode == 0, res.stderr
    assert open_capture(tmp_path / "rescued", use_cache=False).tables.events.height > 0


@pytest.mark.tracefs
@pytest.mark.skipif(not _usable(), reason="needs root, tracefs and cyclictest")
def test_load_and_duration(tmp_path: Path) -> None:
    out = tmp_path / "cap"
    proc = recorder(out, "--duration", "1", "--load", "--load-tool", "builtin", "--load-workers", "2", "-p", "none",
                    "-e", "sched:sched_switch", "--no-kallsyms")
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    manifest = assert_capture_reads(out)
    record = manifest["record"]
    assert isinstance(record, dict) and record["load"]["tool"] == "builtin" and record["load"]["workers"] == 2
    assert [p["name"] for p in manifest["phases"]] == ["load"]
    assert not _hogs_of(proc.pid)


@pytest.mark.tracefs
@pytest.mark.skipif(not _usable(), reason="needs root, tracefs and cyclictest")
def test_record_sh_and_from_raw(tmp_path: Path) -> None:
    before = top_level()
    sh_out = tmp_path / "sh"
    res = subprocess.run(["sh", str(ROOT / "scripts" / "record.sh"), "-o", str(sh_out), "-w", "cyclictest",
                          "-l", "300", "-i", "1000"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert top_level() == before
    assert not [n for n in os.listdir(TRACEFS / "instances") if n.startswith("kvmtrace-") and
                (sh_out / "raw" / "info").read_text().find(f"instance={n}\n") >= 0]
    out = tmp_path / "cap"
    conv = run_recorder(out, "--from-raw", str(sh_out / "raw"))
    assert conv.returncode == 0, conv.stderr
    manifest = assert_capture_reads(out)
    cap = open_capture(out, use_cache=False)
    assert cap.cyclictest.height == 1 and cap.cyclictest["loops"][0] == 300
    assert "kvmtrace phase cyclictest end" in cap.markers["text"].to_list()
    assert manifest["record"]["recorder"] == "record.sh"


@pytest.mark.tracefs
@pytest.mark.skipif(not _usable(), reason="needs root, tracefs and cyclictest")
def test_record_sh_interrupted(tmp_path: Path) -> None:
    before = top_level()
    out = tmp_path / "sh"
    proc = subprocess.Popen(["sh", str(ROOT / "scripts" / "record.sh"), "-o", str(out), "-K", "-w", "cyclictest",
                             "-l", "100000", "-i", "1000"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=30)
    assert proc.returncode == 143
    assert not (TRACEFS / "instances" / f"kvmtrace-{proc.pid}").exists()
    assert top_level() == before
    conv = run_recorder(tmp_path / "cap", "--from-raw", str(out / "raw"))
    assert conv.returncode == 0, conv.stderr
    assert_capture_reads(tmp_path / "cap")
