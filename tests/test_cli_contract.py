"""Every analysis command speaks the same language: --window, --json, --format, --out; bad option
values are one line and exit 2; --out writes and says so instead of printing the report."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from kvmtrace import __version__
from kvmtrace.cli import app

VHE = Path(__file__).parent.parent / "captures" / "arm64-vhe-cyclictest"
COMMANDS = ("analyze", "exits", "faults", "vcpus")


def _run(*args: str) -> tuple[int, str, str]:
    res = CliRunner().invoke(app, list(args))
    return res.exit_code, res.stdout, res.stderr


@pytest.mark.parametrize("cmd", COMMANDS)
@pytest.mark.parametrize(("window", "expected"), [
    ("52:51", "--window '52:51': the end is not after the start"),
    ("nosuch", "--window 'nosuch': no such phase (phases: boot, cyclictest; or 'all', or START:END seconds)"),
    ("1000:1001", "--window '1000:1001': the capture spans 6.574998 .. 34.545499 s: no event in this window"),
])
def test_bad_windows_are_one_line(cmd: str, window: str, expected: str) -> None:
    code, out, err = _run(cmd, str(VHE), "--window", window)
    assert code == 2 and out == "" and err == f"kvmtrace: {VHE}: {expected}\n"


@pytest.mark.parametrize("cmd", COMMANDS)
def test_out_writes_the_table_and_says_so(cmd: str, tmp_path: Path) -> None:
    code, out, err = _run(cmd, str(VHE), "--window", "cyclictest", "--out", str(tmp_path / "t.parquet"))
    assert code == 0 and out == "", out
    rows = pl.read_parquet(tmp_path / "t.parquet")
    assert err.strip() == f"wrote {rows.height:,} rows to {tmp_path / 't.parquet'}" and rows.height > 0
    code, out, err = _run(cmd, str(VHE), "--out", str(tmp_path / "missing" / "t.csv"))
    assert code == 2 and err == f"kvmtrace: {tmp_path / 'missing' / 't.csv'}: cannot write: folder " \
                                f"'{tmp_path / 'missing'}' does not exist\n"


@pytest.mark.parametrize("cmd", COMMANDS)
def test_json_and_help(cmd: str) -> None:
    code, out, _ = _run(cmd, str(VHE), "--window", "cyclictest", "--json")
    assert code == 0 and isinstance(json.loads(out), dict)
    code, out, _ = _run(cmd, str(VHE), "--window", "cyclictest", "--format", "json")
    assert code == 0 and isinstance(json.loads(out), dict)
    code, out, _ = _run(cmd, "--help")
    options = {line.split()[1]: line for line in out.splitlines() if line.startswith("│ --")}
    assert {"--window", "--json", "--out", "--format", "--no-cache"} <= set(options), out
    assert "<bool>" not in options["--json"] and "<path>" in options["--out"]  # a flag takes no value


def test_worst_version_and_format_checked() -> None:
    code, _, err = _run("analyze", str(VHE), "--worst", "-1")
    assert code == 2 and err == "kvmtrace: --worst -1: expected a number of 0 or more\n"
    code, _, err = _run("exits", str(VHE), "--format", "xml")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "xml" in err, err
    code, out, _ = _run("--version")
    assert code == 0 and out == f"kvmtrace {__version__}\n"


def test_steps_show_on_a_terminal_only() -> None:
    """A spinner names the step being computed once a command has run past its delay, on a terminal;
    elsewhere (pipes, CI logs, the tests' runner) it prints nothing."""
    import io
    import time

    from rich.console import Console

    from kvmtrace.progress import step
    from kvmtrace.render.progress import StepSpinner

    for terminal in (True, False):
        buf = io.StringIO()
        console = Console(file=buf, force_terminal=terminal, width=80)
        with StepSpinner("computing", delay=0.0, console=console):
            step("vCPU states")
            time.sleep(0.3)
            step("blame")
            time.sleep(0.3)
        text = buf.getvalue()
        assert ("computing: blame" in text) is terminal, text
        assert ("vCPU states" in text) is terminal
    step("outside")  # no reporter: nothing happens
