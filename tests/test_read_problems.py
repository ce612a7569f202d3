"""What the reader could not turn into rows reaches every analysis: lost events timed by their page and
split by the window, in the JSON (``read``) and as terminal warnings, the same read whole or in chunks.

The lossy capture is a real one (board-vhe-hog) whose page headers say events were lost, as the kernel
writes them (tests/real_pages.mark_lost); trace-cmd report reads the same pages as the independent check.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from kvmtrace.cli import app
from kvmtrace.ingest.readreport import Loss, ReadReport, SkippedRegion, merge_reports
from kvmtrace.ingest.tracedat.reader import read_structure
from tests.real_pages import mark_lost
from tests.report_oracle import CAPTURES, have_trace_cmd

pytestmark = pytest.mark.skipif(not have_trace_cmd(), reason="trace-cmd convert makes the lossy copy")

BEFORE_WINDOW_NS = 30_000_000_000  # the hog capture's cyclictest phase runs 51.18 .. 55.75 s
IN_WINDOW_NS = (53_000_000_000, 54_000_000_000)
COUNT = 77


@pytest.fixture(scope="module")
def lossy(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[tuple[int, int, int | None]]]:
    out = tmp_path_factory.mktemp("lossy") / "board-vhe-hog"
    marked = mark_lost(CAPTURES / "board-vhe-hog", out, [BEFORE_WINDOW_NS, *IN_WINDOW_NS], COUNT)
    return out, marked


def _json(*args: str) -> dict[str, Any]:
    res = CliRunner().invoke(app, [*args, "--no-cache", "--json"])
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)


def test_trace_cmd_report_sees_the_same_losses(lossy: tuple[Path, list[tuple[int, int, int | None]]]) -> None:
    path, marked = lossy
    text = subprocess.run(["trace-cmd", "report", "-i", str(path / "trace.dat")], check=True,
                          capture_output=True, text=True).stdout
    assert re.findall(r"CPU:(\d+) \[(\d+) EVENTS DROPPED\]", text) == [("0", str(COUNT))] * len(marked)
    read = _json("info", str(path))["read"]
    assert [(x["cpu"], x["ts_ns"], x["count"]) for x in read["losses"]] == [(0, ts, n) for _, ts, n in marked]
    assert read["lost_events"][""]["0"] == COUNT * len(marked)


def test_analyze_splits_losses_by_its_window(lossy: tuple[Path, list[tuple[int, int, int | None]]]) -> None:
    path, marked = lossy
    doc = _json("analyze", str(path))
    w = doc["window"]
    assert w["start_ns"] < marked[1][1] < marked[2][1] < w["end_ns"] and marked[0][1] < w["start_ns"]
    inside, outside = doc["read"]["problems"]
    assert inside.startswith(f"{2 * COUNT} events were lost in the ring buffer inside this window "
                             f"(CPU 0 at {marked[1][1] / 1e9:.6f} s: {COUNT}, CPU 0 at {marked[2][1] / 1e9:.6f} s")
    assert outside == f"{COUNT} events were lost in the ring buffer outside this window " \
                      f"(CPU 0 at {marked[0][1] / 1e9:.6f} s: {COUNT})"


def test_chunked_analyze_reports_the_same(lossy: tuple[Path, list[tuple[int, int, int | None]]]) -> None:
    path, _ = lossy
    whole = _json("analyze", str(path), "--chunk-mb", "0")
    chunked = _json("analyze", str(path), "--chunk-mb", "1")
    assert chunked["read"] == whole["read"]
    assert chunked == whole


@pytest.mark.parametrize("command", ["exits", "faults", "vcpus"])
def test_every_report_carries_the_losses(lossy: tuple[Path, list[tuple[int, int, int | None]]],
                                         command: str) -> None:
    path, marked = lossy
    read = _json(command, str(path))["read"]
    assert read["problems"][0].startswith(f"{COUNT * len(marked)} events were lost in the ring buffer inside")
    res = CliRunner().invoke(app, [command, str(path), "--no-cache"], env={"COLUMNS": "400"})
    assert res.exit_code == 0
    assert f"warning: {COUNT * len(marked)} events were lost" in res.stdout


def test_a_clean_capture_has_no_problems() -> None:
    doc = _json("analyze", str(CAPTURES / "board-vhe-hog"))
    assert doc["read"]["problems"] == [] and doc["read"]["losses"] == []


def test_merged_chunk_reports_count_each_loss_and_region_once() -> None:
    region = SkippedRegion("buffer '' cpu 1 page 7", "bad commit")
    a = ReadReport(lost_events={"": {0: 5, 1: 0}}, skipped=[region], unknown_events={"id 9": 2},
                   losses=[Loss("", 0, 100, 5)])
    b = ReadReport(lost_events={"": {0: 3, 1: 0}}, skipped=[region], unknown_events={"id 9": 1},
                   losses=[Loss("", 0, 200, 3)])
    merged = merge_reports([a, b])
    assert merged.lost_events == {"": {0: 8, 1: 0}}
    assert merged.skipped == [region]
    assert merged.unknown_events == {"id 9": 3}
    assert [x.ts_ns for x in merged.losses] == [100, 200]


def test_untimed_losses_may_be_inside_any_window() -> None:
    """A text capture's LOST EVENTS line has no time of its own."""
    read = ReadReport().with_losses([Loss("", 1, None, 12), Loss("", 2, None, None)])
    assert read.lost_events == {"": {1: 12}} and read.lost_unknown_pages == {"": {2: 1}}
    assert read.problems(0, 10) == ["12 events were lost and 1 time events were lost without a count in the ring "
                                    "buffer at unknown times (CPU 1: 12, CPU 2: ?): some may be inside this window"]


def test_a_damaged_page_is_said_by_analyze_whole_and_in_chunks(
        lossy: tuple[Path, list[tuple[int, int, int | None]]], tmp_path: Path) -> None:
    path, _ = lossy
    damaged = tmp_path / "damaged"
    shutil.copytree(path, damaged)
    trace = damaged / "trace.dat"
    f = read_structure(trace)
    at = f.buffers[0].cpus[1].file_offset + 140 * f.page_size
    data = bytearray(trace.read_bytes())
    data[at + 8:at + 16] = (f.page_size + 904).to_bytes(8, "little")  # a commit length past the page
    trace.write_bytes(bytes(data))
    whole = _json("analyze", str(damaged), "--chunk-mb", "0")
    assert whole["read"]["problems"][-1] == (
        f"1 region of the capture could not be decoded and was skipped: buffer '' cpu 1 page 140 (file offset "
        f"{at:#x}): commit length {f.page_size + 904} exceeds the page's {f.page_size - 16} data bytes")
    assert _json("analyze", str(damaged), "--chunk-mb", "1") == whole
