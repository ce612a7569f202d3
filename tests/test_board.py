"""The emulated-board helpers (scripts/board/): ABI parsing, scenario settings, the CI capture check.

No emulator runs here: scripts/board/ci.sh does that end to end.
"""

from __future__ import annotations

import importlib.util
import shlex
import sys
from pathlib import Path
from types import ModuleType

import pytest

BOARD_DIR = Path(__file__).resolve().parents[1] / "scripts" / "board"


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"board_{name}", BOARD_DIR / f"{name}.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


board = _load("board")
check = _load("check_capture")

DEPENDS = """linux-image-arm64:arm64
  Depends: linux-image-6.1.0-56-arm64:arm64
"""


def test_parse_abi_from_apt_cache_depends() -> None:
    assert board.parse_abi(DEPENDS) == "6.1.0-56-arm64"
    assert board.parse_abi("linux-image-arm64\n  Depends: linux-image-6.12.9+bpo-arm64\n") == "6.12.9+bpo-arm64"


def test_parse_abi_takes_the_newest_of_several() -> None:
    text = DEPENDS + "  Depends: linux-image-6.1.0-9-arm64:arm64\n  |Depends: linux-image-6.1.0-60-arm64:arm64\n"
    assert board.parse_abi(text) == "6.1.0-60-arm64"


def test_parse_abi_fails_with_a_hint() -> None:
    with pytest.raises(board.BoardError, match="arm64 architecture"):
        board.parse_abi("E: No packages found\n")
    with pytest.raises(board.BoardError):
        board.parse_abi("linux-image-arm64\n  Depends: linux-image-6.1.0-56-cloud-amd64\n")


def test_scenarios_cover_the_issue() -> None:
    s = board.SCENARIOS
    assert {s[n].mode for n in s} == {"vhe", "nvhe"}
    assert {s[n].vcpus for n in s} == {1, 2}
    assert {s[n].load for n in s} == {"none", "hog", "hog-fifo"}
    assert any("mem" in s[n].workload for n in s)
    assert any(s[n].guest_trace for n in s)


def test_scenario_env_is_sourceable_shell() -> None:
    env = board.scenario_env(board.SCENARIOS["vhe-hog-fifo"])
    values = dict(line.split("=", 1) for line in env.splitlines())
    assert values["LOAD"] == "hog-fifo" and values["VCPUS"] == "1" and values["SECONDS_RUN"] == "10"
    assert int(values["GUEST_TIMEOUT"]) >= 60
    assert all(shlex.split(v) == [v] or v == "''" for v in values.values())


def test_content_hash_changes_with_inputs(tmp_path: Path) -> None:
    f = tmp_path / "init"
    f.write_text("a")
    first = board.content_hash([f], "6.1.0-56-arm64")
    assert board.content_hash([f], "6.1.0-57-arm64") != first
    f.write_text("b")
    assert board.content_hash([f], "6.1.0-56-arm64") != first


def _good() -> tuple[dict, dict, dict, dict]:
    capture = {"record": {"status": "complete"}, "host": {"arch": "aarch64", "kvm_mode": "vhe"},
               "lost_events": {"0": 0, "1": 0}}
    board_json = {"scenario": {"mode": "vhe", "vcpus": 1}}
    analyze = {"window": {"name": "cyclictest"}, "cyclictest": [{"loops": 4931}],
               "vcpus": [{"vcpu_tid": 121, "comm": "CPU 0/KVM"}],
               "interrupts": {"count": 5214, "by_irq": {"27": 5214}, "stages": {"vcpu_wait": {"count": 2949}}}}
    faults = {"faults": 1200, "by_phase": [{"phase": "guest", "ram": 37, "mmio": 872}]}
    return capture, board_json, analyze, faults


def test_check_capture_accepts_a_good_run() -> None:
    assert check.problems(*_good()) == []


def test_check_capture_names_each_problem() -> None:
    capture, board_json, analyze, faults = _good()
    capture["host"]["kvm_mode"] = "nvhe"
    analyze["window"] = {"name": "guest"}
    analyze["interrupts"]["by_irq"] = {"33": 10}
    faults["by_phase"] = [{"phase": "guest", "ram": 0, "mmio": 5}]
    found = check.problems(capture, board_json, analyze, faults)
    assert len(found) == 4
    assert any("KVM mode" in p for p in found) and any("RAM" in p for p in found)


CAPTURES = Path(__file__).resolve().parents[1] / "captures"


def test_bundled_board_captures_read_back() -> None:
    """The board-made captures in captures/ hold what captures/README.md says (no emulator here)."""
    import polars as pl

    from kvmtrace.capture import open_capture

    hog = open_capture(CAPTURES / "board-vhe-hog", use_cache=False)
    ev = hog.tables.events
    assert ev.height == 114_734 and hog.tables.report.total_lost() == 0
    assert {"boot", "guest", "cyclictest"} <= set(hog.phases["name"].to_list())
    assert hog.cyclictest["loops"].to_list() == [956]
    vcpu = ev.filter(pl.col("event").cast(pl.String) == "kvm_entry")["comm"].cast(pl.String).unique().to_list()
    assert vcpu == ["CPU 0/KVM"]

    mem = open_capture(CAPTURES / "board-vhe-mem", use_cache=False)
    assert {"lat_mem_rd_seq", "lat_mem_rd_random", "lat_pagefault", "lat_pagefault_anon"} <= set(
        mem.phases["name"].to_list())
    faults = mem.tables.events.filter(pl.col("event").cast(pl.String) == "kvm_guest_fault").height
    assert faults == 28_922
    assert mem.manifest is not None and mem.manifest.guest_memory[0]["start"] == 0x40000000
