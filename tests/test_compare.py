"""kvmtrace compare: the study's table for any set of runs, on the synthesised study pair and real captures."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from kvmtrace.analysis.study import check_fail_if, compare, run_of
from kvmtrace.capture import open_capture
from kvmtrace.model.results import benchmark_results
from kvmtrace.synth.run import simulate
from kvmtrace.synth.scenario import preset

CAPTURES = Path(__file__).resolve().parents[1] / "captures"


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    out = tmp_path_factory.mktemp("study")
    for name in ("study-host", "study-guest"):
        params = preset(name)
        params["cyclictest"]["loops"] = 6000
        simulate(params, 1, out / name)
    return out / "study-host", out / "study-guest"


def test_study_shape_from_the_traces(pair: tuple[Path, Path]) -> None:
    host, guest = (run_of(open_capture(p, use_cache=False), label) for p, label in zip(pair, ("host", "guest"),
                                                                                          strict=True))
    cmp = compare([host, guest], study=True)
    rows = {r["measure"]: r for r in cmp.rows}
    assert rows["cyclictest max (us)"]["ratios"][1] > 3  # the study: 48x over 120,000 loops; 6,000 here
    assert 1.5 < rows["cyclictest p95 (us)"]["ratios"][1] < 4  # the study: 2.3x
    assert rows["cyclictest max (us)"]["study"] == {"host": 185.0, "guest": 8939.0, "ratio": 48.32}
    assert host.kind == "host" and guest.kind == "guest"
    # the benchmark figures are the presets' inputs (the study's), read back from the result markers
    assert rows["lat_mem_rd random (ns)"]["ratios"][1] == round(273.75 / 122.30, 3)
    assert rows["lat_mem_rd seq (ns)"]["ratios"][1] == round(96.20 / 95.60, 3)
    assert rows["lat_pagefault file (us)"]["ratios"][1] == round(2.38 / 2.40, 3)
    why = next(e for e in cmp.explanations if e.startswith("cyclictest max"))
    assert "irq/109-dw-mci" in why  # the synthesised guest's worst wait: the threaded device IRQ


def test_fail_if_gates_a_change(pair: tuple[Path, Path]) -> None:
    args = [sys.executable, "-m", "kvmtrace", "compare", f"{pair[0]}=host", f"{pair[1]}=guest"]
    gated = subprocess.run([*args, "--fail-if", "p99>+20%"], capture_output=True, text=True)
    assert gated.returncode == 3 and "fail-if: p99>+20%" in gated.stdout
    ok = subprocess.run([*args, "--fail-if", "max>100000", "--json"], capture_output=True, text=True)
    assert ok.returncode == 0
    doc = json.loads(ok.stdout)
    assert doc["kvmtrace_compare"] == 1 and doc["failed"] == [] and len(doc["runs"]) == 2
    bad = subprocess.run([*args, "--fail-if", "p99 about 20"], capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "--fail-if" in bad.stderr


def test_runs_with_nothing_in_common_say_what_each_has() -> None:
    a = run_of(open_capture(CAPTURES / "board-vhe-mem"), "mem")
    b = run_of(open_capture(CAPTURES / "x86-host-cyclictest-stress"), "x86")
    with pytest.raises(Exception) as exc:
        compare([a, b])
    assert "no measure in common" in str(exc.value) and "lat_mem_rd random (ns)" in str(exc.value)
    assert check_fail_if(compare([b, b]), ["max>1"]) == ["max>1: cyclictest max (us) 4789 -> 4789"]


def test_benchmark_results_tied_to_their_phase() -> None:
    cap = open_capture(CAPTURES / "board-vhe-mem")
    r = benchmark_results(cap.markers, cap.phases)
    got = {(x["bench"], x["variant"], x["phase"]): x["value"] for x in r.iter_rows(named=True)}
    assert got == {("lat_mem_rd", "seq", "lat_mem_rd_seq"): 10.82, ("lat_mem_rd", "random", "lat_mem_rd_random"): 342.6,
                   ("lat_pagefault", "file", "lat_pagefault"): 430.3887,
                   ("lat_pagefault", "anon", "lat_pagefault_anon"): 96.0367}
