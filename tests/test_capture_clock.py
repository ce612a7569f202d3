"""The trace clock: the file's, unless the file lost it (says local) and capture.json names the
recorder's, as in the bundled board captures cut with trace-cmd split."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from kvmtrace.capture import open_capture
from kvmtrace.model.clocks import mono_clock
from tests.report_oracle import CAPTURES


def test_a_clock_lost_by_trace_cmd_split_comes_from_capture_json() -> None:
    cap = open_capture(CAPTURES / "board-vhe-guest-pair", use_cache=False)
    assert cap.tables.meta.clock == "mono"
    assert cap.tables.meta.options["clock_source"].startswith("capture.json (the trace file says local")
    clock = mono_clock(cap.tables)
    assert clock is not None and (clock.offset_ns, clock.spread_ns, clock.source) == (0, 0, "mono trace clock")


def test_the_file_clock_wins_when_it_names_one(tmp_path: Path) -> None:
    shutil.copytree(CAPTURES / "board-vhe-hog", tmp_path / "cap")
    manifest = json.loads((tmp_path / "cap" / "capture.json").read_text())
    manifest["tracing"]["clock"] = "global"
    (tmp_path / "cap" / "capture.json").write_text(json.dumps(manifest))
    cap = open_capture(tmp_path / "cap", use_cache=False)
    assert cap.tables.meta.clock == "mono"
    assert cap.tables.meta.options["clock_source"] == "the trace file (capture.json says 'global')"
    plain = open_capture(CAPTURES / "board-vhe-hog" / "trace.dat", use_cache=False)
    assert plain.tables.meta.clock == "mono" and "clock_source" not in plain.tables.meta.options
