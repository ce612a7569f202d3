"""The Python API gives the command line's numbers (kvmtrace.open; docs/api.md)."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
from typer.testing import CliRunner

import kvmtrace
from kvmtrace.cli import app

CAPTURES = Path(__file__).resolve().parents[1] / "captures"
PAIR = CAPTURES / "board-vhe-guest-pair"
X86 = CAPTURES / "x86-host-cyclictest-stress"


def _cli_table(args: list[str], tmp: Path) -> pl.DataFrame:
    out = tmp / "t.parquet"
    res = CliRunner().invoke(app, [*args, "--out", str(out)])
    assert res.exit_code == 0, res.output
    return pl.read_parquet(out)


def test_same_tables_as_the_command_line(tmp_path: Path) -> None:
    cap = kvmtrace.open(PAIR)
    assert cap.interrupts().equals(_cli_table(["analyze", str(PAIR)], tmp_path))
    assert cap.exits().equals(_cli_table(["exits", str(PAIR)], tmp_path))
    assert cap.faults().equals(_cli_table(["faults", str(PAIR)], tmp_path))
    assert cap.vcpus().equals(_cli_table(["vcpus", str(PAIR)], tmp_path))
    doc = json.loads(CliRunner().invoke(app, ["analyze", str(PAIR), "--json"]).stdout)
    assert cap.blame().head(20).to_dicts() == doc["blame"]
    assert cap.events("sched_switch").height == cap.events().filter(pl.col("event") == "sched_switch").height


def test_a_host_without_guest() -> None:
    cap = kvmtrace.open(X86)
    w = cap.wakeups()
    assert w.height == 5000 and w["latency_ns"].max() == 4_781_203
