"""Run a kvmtrace command in-process (typer's runner: stdout is not a terminal) and return what it printed."""

from __future__ import annotations

from typer.testing import CliRunner

from kvmtrace.cli import app


def cli(*args: str, env: dict[str, str] | None = None) -> str:
    """The command's output; fails the test when it exits non-zero."""
    res = CliRunner().invoke(app, list(args), env=env)
    assert res.exit_code == 0, res.output
    return res.output
