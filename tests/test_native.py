"""The native kernels (kvmtrace/ingest/tracedat/kernels.c) against the numpy engine: the same tables and the
same report on real captures, on every trace.dat variant, on damaged pages, and on a CPU whose
time goes backwards; and what happens without a C compiler."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kvmtrace.errors import CaptureError
from kvmtrace.ingest import kernels
from kvmtrace.ingest.tables import EventTables
from kvmtrace.ingest.tracedat.reader import read_structure, read_tracedat
from tests.engines import assert_same_tables
from tests.real_pages import REAL, write_real_pages
from tests.report_oracle import CAPTURES
from tests.test_tracedat_writer import COMBOS, new_writer, scenario


def same_tables(path: Path, monkeypatch: pytest.MonkeyPatch) -> EventTables:
    return assert_same_tables(read_tracedat, path, monkeypatch)


@pytest.fixture(scope="module")
def small_real(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_real_pages(tmp_path_factory.mktemp("native") / "small.dat", 16)


def test_the_native_engine_is_what_runs_here() -> None:
    """bootstrap.sh installs a C compiler: the fast path is the one the other tests exercise."""
    eng = kernels.engine()
    assert eng.name == "native", eng.detail


@pytest.mark.parametrize("capture", sorted(p.name for p in CAPTURES.iterdir() if (p / "trace.dat").exists()))
def test_real_captures_give_the_same_tables(capture: str, monkeypatch: pytest.MonkeyPatch) -> None:
    t = same_tables(CAPTURES / capture / "trace.dat", monkeypatch)
    assert t.events.height > 10_000


@pytest.mark.parametrize(("version", "compression", "big_endian", "long_size"), COMBOS)
def test_every_variant_gives_the_same_tables(tmp_path: Path, version: int, compression: str | None,
                                             big_endian: bool, long_size: int,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "trace.dat"
    w, enc = new_writer(version, compression, big_endian, long_size)
    with w:
        expected = scenario(w, enc)
        w.write(path)
    t = same_tables(path, monkeypatch)
    assert t.events.height == len(expected)
    assert t.report.lost_events[""][1] == 17


def test_time_going_backwards_is_ordered_like_numpy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """CPU 0's pages out of order: its stream is not in time order, so the merge falls back to
    the stable sort, and the result is still the numpy engine's."""
    path = write_real_pages(tmp_path / "backwards.dat", 8, reorder={0: [0, 1, 5, 2, 3, 4, 6, 7]})
    t = same_tables(path, monkeypatch)
    assert t.events["ts"].is_sorted()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(flips=st.lists(st.tuples(st.floats(0, 1), st.integers(0, 255)), min_size=1, max_size=8))
def test_damaged_pages_give_the_same_tables_and_report(small_real: Path, flips: list[tuple[float, int]],
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    f = read_structure(small_real)
    start = f.buffers[0].cpus[0].file_offset
    end = f.buffers[0].cpus[-1].file_offset + f.buffers[0].cpus[-1].file_size
    data = bytearray(small_real.read_bytes())
    for where, value in flips:  # inside the ring-buffer pages only: headers, records, payloads
        data[start + int(where * (end - start - 1))] = value
    path = small_real.parent / "damaged.dat"
    path.write_bytes(bytes(data))
    same_tables(path, monkeypatch)


@pytest.fixture
def fresh_build(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """An empty library cache, and the loader's memo cleared before and after."""
    monkeypatch.setenv("KVMTRACE_NATIVE_DIR", str(tmp_path / "native"))
    kernels._load.cache_clear()
    yield
    kernels._load.cache_clear()


def test_it_builds_into_the_cache_dir(tmp_path: Path, fresh_build: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KVMTRACE_ENGINE", "native")
    eng = kernels.engine()
    assert eng.name == "native" and eng.detail.startswith(str(tmp_path / "native"))
    assert [p.suffix for p in (tmp_path / "native").iterdir()] == [".so"]  # no temporary left behind


def test_without_a_compiler_numpy_reads_and_says_why(fresh_build: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CC", "false")
    eng = kernels.engine()
    assert eng.name == "numpy" and "native kernels unavailable" in eng.detail and "false" in eng.detail
    assert read_tracedat(REAL).events.height == 1_054_913
    monkeypatch.setenv("KVMTRACE_ENGINE", "native")
    with pytest.raises(CaptureError, match="KVMTRACE_ENGINE=native, but native kernels unavailable"):
        kernels.engine()


def test_cli_without_a_compiler_when_native_is_required(tmp_path: Path) -> None:
    env = {"KVMTRACE_ENGINE": "native", "CC": "false", "KVMTRACE_NATIVE_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"}
    proc = subprocess.run([sys.executable, "-m", "kvmtrace", "info", str(REAL), "--no-cache"], capture_output=True,
                          text=True, env=env, check=False)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().count("\n") == 0 and "KVMTRACE_ENGINE=native" in proc.stderr


def test_unknown_event_types_are_counted_alike(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Records whose type id has no format: named unknown_type_N in the common table, counted in
    the report, no typed table; the same with both engines."""
    path = tmp_path / "unknown.dat"
    w, enc = new_writer(6, None, False, 8)
    with w:
        scenario(w, enc)
        stray = (9999).to_bytes(2, "little") + b"\0\0" + (42).to_bytes(4, "little") + b"\0" * 8
        w.add_events(0, [(2_000_000_000 + i, stray) for i in range(3)])
        w.write(path)
    t = same_tables(path, monkeypatch)
    assert t.report.unknown_events == {"id 9999": 3}
    unknown = t.events.filter(pl.col("event") == "unknown_type_9999")
    assert unknown.height == 3 and unknown["pid"].to_list() == [42] * 3
