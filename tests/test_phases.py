"""Phase markers: every convention, a user's pattern by option and by capture.json, bad patterns."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from kvmtrace.capture import open_capture
from kvmtrace.cli import app

TRACE = """\
cpus=1
           init-1     [000]     0.100000000: print:                ip=0x0 buf=L2_BOOT_START
           init-1     [000]     0.200000000: print:                ip=0x0 buf=kvmtrace phase warm begin
           init-1     [000]     0.300000000: print:                ip=0x0 buf=kvmtrace phase warm end
           init-1     [000]     0.400000000: print:                ip=0x0 buf=PHASE load START
           init-1     [000]     0.500000000: print:                ip=0x0 buf=bench=steady:start
           init-1     [000]     0.600000000: print:                ip=0x0 buf=PHASE load END
           init-1     [000]     0.700000000: print:                ip=0x0 buf=bench=steady:end
           init-1     [000]     0.800000000: print:                ip=0x0 buf=L2_BOOT_END
"""
PATTERN = r"bench=(?P<name>\w+):(?P<edge>start|end)"


def _phases(path: Path, pattern: str | None = None) -> dict[str, tuple[int, int]]:
    cap = open_capture(path, use_cache=False, phase_pattern=pattern)
    return {r["name"]: (r["start_ns"], r["end_ns"]) for r in cap.phases.iter_rows(named=True)}


def test_builtin_conventions(tmp_path: Path) -> None:
    (tmp_path / "trace.txt").write_text(TRACE)
    phases = _phases(tmp_path / "trace.txt")
    assert phases["boot"] == (100_000_000, 800_000_000)
    assert phases["warm"] == (200_000_000, 300_000_000)
    assert phases["load"] == (400_000_000, 600_000_000)
    assert "steady" not in phases


def test_pattern_by_option_and_manifest(tmp_path: Path) -> None:
    (tmp_path / "trace.txt").write_text(TRACE)
    assert _phases(tmp_path / "trace.txt", PATTERN)["steady"] == (500_000_000, 700_000_000)
    (tmp_path / "capture.json").write_text(json.dumps(
        {"kvmtrace_capture": 1, "trace": "trace.txt", "phase_pattern": PATTERN}))
    assert _phases(tmp_path)["steady"] == (500_000_000, 700_000_000)
    res = CliRunner().invoke(app, ["--phase-pattern", PATTERN, "info", str(tmp_path / "trace.txt"), "--json"])
    assert res.exit_code == 0, res.output
    assert {p["name"] for p in json.loads(res.stdout)["phases"]} >= {"steady", "load", "warm", "boot"}


def test_bad_patterns_are_one_line(tmp_path: Path) -> None:
    (tmp_path / "trace.txt").write_text(TRACE)
    for args, expected in (
        (["--phase-pattern", "bench=(", "info", str(tmp_path / "trace.txt")],
         "--phase-pattern: phase pattern 'bench=(': not a regular expression"),
        (["--phase-pattern", r"(?P<name>\w+)", "info", str(tmp_path / "trace.txt")],
         "expected the named groups (?P<name>...) and (?P<edge>...)"),
    ):
        res = CliRunner().invoke(app, args)
        assert res.exit_code == 2 and expected in res.output and "Traceback" not in res.output, res.output
        assert len(res.output.strip().splitlines()) == 1
    (tmp_path / "capture.json").write_text(json.dumps({"kvmtrace_capture": 1, "trace": "trace.txt",
                                                       "phase_pattern": "(?P<name>x"}))
    res = CliRunner().invoke(app, ["info", str(tmp_path)])
    assert res.exit_code == 2 and "capture.json: key 'phase_pattern': phase pattern" in res.output, res.output
