"""``analyze`` over time chunks (analysis/chunked.py) gives the document of the whole capture in memory,
to the byte, on real captures and on synthetic ones whose deadlines come from each kind of clock map,
however many chunks there are; and the command takes the chunked path on request."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from kvmtrace.analysis.chunked import analyze_chunked
from kvmtrace.analysis.latency import analyze
from kvmtrace.capture import open_capture
from kvmtrace.ingest.tracedat.reader import read_structure, read_tracedat, time_chunks
from tests.cli_runner import cli
from tests.report_oracle import CAPTURES
from tests.test_analyze_synth import case_of

# real captures of several shapes: one vCPU (VHE and nVHE), two vCPUs, a CPU hog, guest memory faults,
# rt throttling, the study's phases (each with thousands of interrupts and several deadline sources)
REAL = ["arm64-vhe-cyclictest", "arm64-nvhe-cyclictest", "board-vhe-2vcpu-guest", "board-vhe-hog",
        "board-vhe-mem", "board-vhe-rt-throttle", "board-study"]


def _data_bytes(capture: Path) -> int:
    """The trace data of a capture as the reader decodes it (zstd and zlib inflated)."""
    f = read_structure(capture / "trace.dat", populate=False)
    return sum(c.length for b in f.buffers for c in b.cpus)


def _documents(path: Path, chunk_bytes: int, window: str | None = None) -> tuple[dict, dict, int]:
    whole = analyze(open_capture(path, use_cache=False), window).document()
    found = analyze_chunked(path, window, 5, chunk_bytes)
    assert found is not None and found.latency is not None, "expected the capture to be cut into chunks"
    chunked = found.latency
    chunks = len(time_chunks(open_capture(path, use_cache=False).trace_path, chunk_bytes)) + 1
    return whole, chunked.document(), chunks


@pytest.mark.parametrize("name", REAL)
def test_chunked_document_is_the_whole_captures(name: str) -> None:
    path = CAPTURES / name
    whole, chunked, chunks = _documents(path, _data_bytes(path) // 6)
    assert chunks >= 5
    assert whole["interrupts"]["count"] > 500
    assert json.dumps(chunked, sort_keys=True) == json.dumps(whole, sort_keys=True)


def test_chunked_table_and_blame_rows_are_the_whole_captures() -> None:
    path = CAPTURES / "board-vhe-hog"
    whole = analyze(open_capture(path, use_cache=False), "all")
    found = analyze_chunked(path, "all", 5, _data_bytes(path) // 8)
    assert found is not None and found.latency is not None
    chunked = found.latency
    assert_frame_equal(chunked.table, whole.table)  # event indices and interrupt numbers made global
    assert_frame_equal(chunked.shares, whole.shares)
    assert_frame_equal(chunked.blame_by_vcpu, whole.blame_by_vcpu)
    assert_frame_equal(chunked.stalls, whole.stalls)
    assert_frame_equal(chunked.deadlines.table.sort("t_idx"), whole.deadlines.table.sort("t_idx"))


@pytest.mark.parametrize("preset", ["adversarial-fit", "adversarial", "hog", "study-guest"])
def test_chunked_synth_every_clock_map(preset: str, tmp_path_factory: pytest.TempPathFactory) -> None:
    """adversarial-fit has no hrtimer events (deadlines from the fitted map), adversarial a calibrated
    map with outliers, hog and study-guest the background timers: fitted once over all chunks."""
    out = case_of(preset, tmp_path_factory).out
    whole, chunked, chunks = _documents(out, _data_bytes(out) // 7, "all")
    assert chunks >= 6
    sources = whole["deadlines"]["sources"]
    assert sources, "the preset's deadlines are known"
    assert json.dumps(chunked, sort_keys=True) == json.dumps(whole, sort_keys=True)


def test_fitted_map_is_fitted_once_over_all_chunks(tmp_path_factory: pytest.TempPathFactory) -> None:
    out = case_of("adversarial-fit", tmp_path_factory).out
    found = analyze_chunked(out, "all", 5, _data_bytes(out) // 7)
    assert found is not None and found.latency is not None
    chunked = found.latency
    assert chunked.deadlines.counter is not None
    assert chunked.deadlines.counter.how == "fitted"
    assert set(chunked.table["deadline_source"].drop_nulls().unique()) == {"cval-fit"}


def test_time_chunks_cut_the_data_into_equal_parts() -> None:
    trace = CAPTURES / "arm64-vhe-cyclictest" / "trace.dat"  # v7, zstd: sizes count the inflated pages
    full = read_tracedat(trace).events["ts"]
    size = _data_bytes(trace.parent)
    assert size > 2 * trace.stat().st_size
    assert time_chunks(trace, size) == []
    edges = time_chunks(trace, size // 4)
    assert 3 <= len(edges) <= 5 and edges == sorted(edges)
    counts = pl.Series([int(full[0]) - 1, *edges, int(full[-1]) + 1])
    per_chunk = [int(((full >= a) & (full < b)).sum()) for a, b in itertools.pairwise(counts.to_list())]
    assert sum(per_chunk) == full.len()
    assert min(per_chunk) > full.len() / (2 * len(per_chunk))  # about equal: by pages, not by time


def test_cli_chunk_mb_gives_the_same_json() -> None:
    path = str(CAPTURES / "board-vhe-hog")  # 3.9 MB of trace data (inflated): 4 chunks of 1 MB
    whole = json.loads(cli("analyze", path, "--json", "--no-cache", "--chunk-mb", "0"))
    chunked = json.loads(cli("analyze", path, "--json", "--no-cache", "--chunk-mb", "1"))
    assert chunked == whole


@pytest.mark.parametrize("name", [*REAL, "x86-host-cyclictest-stress", "x86-raw-syscalls"])
def test_info_in_chunks_is_the_whole_captures(name: str) -> None:
    """Events per type and CPU, time span, markers, phases and the read report: counted chunk by chunk,
    the same document (x86-host-cyclictest-stress: an empty top buffer and a named one)."""
    path = CAPTURES / name
    mb = max(1, _data_bytes(path) // 6 >> 20)
    whole = json.loads(cli("info", str(path), "--json", "--no-cache", "--chunk-mb", "0"))
    chunked = json.loads(cli("info", str(path), "--json", "--no-cache", "--chunk-mb", str(mb)))
    assert len(time_chunks(path / "trace.dat", mb << 20)) >= 1  # at least two chunks
    assert chunked == whole


def test_cli_chunk_mb_same_table_and_blame_files(tmp_path: Path) -> None:
    path = str(CAPTURES / "board-vhe-hog")
    for mb in ("0", "1"):
        cli("analyze", path, "--no-cache", "--chunk-mb", mb, "--out", str(tmp_path / f"irqs-{mb}.parquet"),
            "--blame-out", str(tmp_path / f"blame-{mb}.parquet"))
    for name in ("irqs", "blame"):
        chunked, whole = (pl.read_parquet(tmp_path / f"{name}-{mb}.parquet") for mb in ("1", "0"))
        assert_frame_equal(chunked, whole)


def test_cli_chunk_mb_negative_is_one_line() -> None:
    from typer.testing import CliRunner

    from kvmtrace.cli import app

    res = CliRunner().invoke(app, ["analyze", str(CAPTURES / "arm64-vhe-cyclictest"), "--chunk-mb", "-1"])
    assert res.exit_code == 2
    assert "--chunk-mb -1: expected a number of 0 or more" in res.output
    assert "Traceback" not in res.output


def test_host_realtime_threads_are_found_over_chunks_as_in_memory() -> None:
    """The native section is not analysed in chunks, but its threads are found there (to say so):
    counted chunk by chunk, they are the threads the in-memory analysis explains."""
    from kvmtrace.analysis.chunked import _Wakers, clock_maps, plan
    from kvmtrace.analysis.native import NativeAnalysis
    from kvmtrace.model.wakeups import measuring_threads

    path = CAPTURES / "x86-host-cyclictest-stress"  # a host with cyclictest and stress, no guest
    cap = open_capture(path, use_cache=False)
    counted = measuring_threads(cap.tables, None).to_list()  # without cyclictest's own tids: by counting
    explained = NativeAnalysis(cap, 0, 1 << 62).tids.to_list()  # with them
    assert counted and explained
    edges = time_chunks(cap.trace_path, _data_bytes(path) // 6)
    assert len(edges) >= 4
    wakers = _Wakers()
    clock_maps(path, plan(path, edges), wakers)
    assert wakers.threads([], set()) == counted
    assert wakers.threads([int(t) for t in cap.cyclictest["tid"].to_list()], set()) == explained
    assert wakers.threads([], set(counted)) == []


@pytest.mark.parametrize("name", ["x86-host-cyclictest-stress", "study-host"])
def test_a_host_without_guest_gets_the_same_native_analysis_in_chunks(
        name: str, tmp_path_factory: pytest.TempPathFactory) -> None:
    """cyclictest on a host without a guest: on a real x86 host under stress, and in the study-host
    preset. Neither traced hrtimer_start, so each thread's deadline grid is fitted to its expiries,
    once over all chunks. Wakeups, stages, blame and the cyclictest check over 5 chunks are those of
    the whole capture."""
    from kvmtrace.analysis.native import NativeAnalysis

    path = CAPTURES / name if name.startswith("x86") else case_of(name, tmp_path_factory).out
    found = analyze_chunked(path, None, 5, _data_bytes(path) // 5)
    assert found is not None and found.latency is None and found.native is not None
    whole = json.loads(cli("analyze", str(path), "--json", "--no-cache", "--chunk-mb", "0"))
    wakeups = whole["native"]["wakeups"]
    assert wakeups["count"] > 1000 and wakeups["by_source"] == {"grid-fit": wakeups["count"]}
    chunk_mb = str(max(1, _data_bytes(path) // (5 << 20)))
    assert json.loads(cli("analyze", str(path), "--json", "--no-cache", "--chunk-mb", chunk_mb)) == whole
    mem = NativeAnalysis(open_capture(path, use_cache=False), found.window.start_ns, found.window.end_ns, 5)
    assert_frame_equal(found.native.table, mem.table)
    assert_frame_equal(found.native.shares, mem.shares)
