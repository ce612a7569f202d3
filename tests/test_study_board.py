"""The study on a real board pair (captures/board-study: the same cyclictest, lat_mem_rd and
lat_pagefault natively on the emulated KVM host, then in its guest, which records itself with a
kprobe on handle_mm_fault): compare's table, and the study's page-fault finding shown directly."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from kvmtrace.analysis.study import compare, run_of
from kvmtrace.capture import open_capture
from kvmtrace.cli import app
from tests.report_oracle import report

STUDY = Path(__file__).resolve().parents[1] / "captures" / "board-study"


def test_compare_has_every_row_of_the_study() -> None:
    host, guest = run_of(open_capture(STUDY / "native"), "host"), run_of(open_capture(STUDY), "guest")
    rows = {r["measure"]: r for r in compare([host, guest], study=True).rows}
    for name in ("cyclictest max (us)", "cyclictest p95 (us)", "lat_mem_rd seq (ns)", "lat_mem_rd random (ns)",
                 "lat_pagefault file (us)"):
        assert name in rows and "study" in rows[name], name
    # every loop of both runs from cyclictest's own -v output, not the trace's lower bound
    assert rows["cyclictest p95 (us)"]["sources"] == ["cyclictest's own output (cyclictest.txt), every loop",
                                                      "cyclictest's own output (guest/cyclictest.txt), every loop"]
    assert rows["lat_mem_rd random (ns)"]["values"] == [193.625, 1775.71]  # kvmtrace result markers of each run
    assert host.kind == "host" and guest.kind == "guest"


def test_guest_page_faults_are_stage_1_during_the_benchmark() -> None:
    res = CliRunner().invoke(app, ["faults", str(STUDY), "--guest", str(STUDY / "guest"), "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    rows = {r["phase"]: (r["stage2_faults"], r["stage1_faults"]) for r in doc["stage1"]}
    assert doc["stage1_events"] == ["handle_mm_fault"]
    # the study: during lat_pagefault the guest's faults are stage-1 ones; the stage-2 mappings are few
    for phase in ("lat_mem_rd_random", "lat_pagefault", "lat_pagefault_anon"):
        stage2, stage1 = rows[phase]
        assert stage1 > 5 * stage2, (phase, stage2, stage1)
    # every handle_mm_fault line of the guest's trace is counted once, in some phase
    lines = sum(ev == "handle_mm_fault" for ev in report(str(STUDY / "guest" / "trace.dat")).event)
    assert sum(s1 for _, s1 in rows.values()) == lines
