"""A windowed read (pages cut by their header times before decoding) gives exactly the rows of a full
read filtered by time, renumbered, in both engines, on real captures of several shapes."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from kvmtrace.ingest.tracedat.reader import read_tracedat
from tests.report_oracle import CAPTURES

REAL = [CAPTURES / name / "trace.dat" for name in
        ("arm64-vhe-cyclictest", "x86-host-cyclictest-stress", "x86-raw-syscalls", "board-vhe-hog")]


def _equal(windowed: object, full: object) -> None:
    assert_frame_equal(windowed.events, full.events)  # type: ignore[attr-defined]
    assert sorted(windowed.by_event) == sorted(full.by_event)  # type: ignore[attr-defined]
    for name, table in full.by_event.items():  # type: ignore[attr-defined]
        assert_frame_equal(windowed.by_event[name], table)  # type: ignore[attr-defined]


@pytest.mark.parametrize("engine", ["native", "numpy"])
@pytest.mark.parametrize("path", REAL, ids=lambda p: p.parent.name)
def test_windowed_equals_full_filtered(path: Path, engine: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KVMTRACE_ENGINE", engine)
    full = read_tracedat(path)
    ts = full.events["ts"]
    first, last = int(ts[0]), int(ts[-1])
    span = last - first
    cuts = [(first + span // 3, first + span // 3 + span // 50), (None, first + span // 10),
            (last - span // 10, None), (first - 10, last + 10), (int(ts[1000]), int(ts[1000])),
            (last + 1, last + 100)]
    for start, end in cuts:
        windowed = read_tracedat(path, window=(start, end))
        _equal(windowed, full.cut(start, end))
        inside = full.events.filter(pl.col("ts").is_between(start if start is not None else first,
                                                            end if end is not None else last))
        assert windowed.events.height == inside.height


def test_convert_window_writes_the_cut(tmp_path: Path) -> None:
    """``convert --window START:END`` reads only those pages and writes what a full read cut there gives;
    a phase window is cut from a full read; a window outside the capture is one line, exit 2."""
    from typer.testing import CliRunner

    from kvmtrace.capture import open_capture
    from kvmtrace.cli import app

    path = CAPTURES / "arm64-vhe-cyclictest" / "trace.dat"
    full = read_tracedat(path)
    phase = open_capture(path, use_cache=False).window("cyclictest")
    for spec, (start, end) in (("25:25.5", (25_000_000_000, 25_500_000_000)), ("cyclictest", phase)):
        out = tmp_path / spec.replace(":", "_")
        res = CliRunner().invoke(app, ["convert", str(path), "--to", "parquet", str(out), "--window", spec])
        assert res.exit_code == 0, res.output
        assert_frame_equal(pl.read_parquet(out / "events.parquet"), full.cut(start, end).events)
        assert full.cut(start, end).events.height > 1000
    res = CliRunner().invoke(app, ["convert", str(path), "--to", "parquet", str(tmp_path / "x"), "--window", "99:100"])
    assert res.exit_code == 2 and "no event in this window" in res.output
