"""The ``kvmtrace`` command: one thin function per subcommand; the work lives in the modules they call."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from kvmtrace import __version__
from kvmtrace.errors import CaptureError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Explain where a KVM guest's latency comes from, from ftrace captures.")
err = Console(stderr=True)

CaptureArg = Annotated[Path, typer.Argument(help="trace.dat, text capture, or capture directory")]
NoCache = Annotated[bool, typer.Option("--no-cache", help="read the trace again, ignore the Parquet cache")]


@contextmanager
def user_errors() -> Iterator[None]:
    """Bad input: one line on stderr, exit code 2, no traceback."""
    try:
        yield
    except CaptureError as exc:
        sys.stderr.write(f"kvmtrace: {exc.one_line()}\n")
        raise typer.Exit(2) from None
    except KeyboardInterrupt:
        err.print("kvmtrace: interrupted")
        raise typer.Exit(130) from None


def _open(capture: Path, no_cache: bool) -> Any:
    from kvmtrace.capture import open_capture
    from kvmtrace.render.progress import LazyProgress

    with LazyProgress(f"reading {capture}") as progress:
        return open_capture(capture, use_cache=not no_cache, progress=progress)


@app.command()
def info(capture: CaptureArg, json_out: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
         no_cache: NoCache = False) -> None:
    """Format, kernel, clock, CPUs, time span, events per type, lost events, markers and phases."""
    from kvmtrace.render.info import info_dict, render_info

    with user_errors():
        doc = info_dict(_open(capture, no_cache))
    if json_out:
        sys.stdout.write(json.dumps(doc, indent=2, default=str) + "\n")
    else:
        render_info(doc, Console())


@app.command()
def convert(capture: CaptureArg,
            to: Annotated[str, typer.Option("--to", help="output format: parquet")],
            outdir: Annotated[Path, typer.Argument(help="output directory")],
            no_cache: NoCache = False) -> None:
    """Write the common table and one table per event type (Parquet)."""
    from kvmtrace.render.parquet import write_tables

    with user_errors():
        if to != "parquet":
            raise CaptureError(None, None, f"--to {to!r}: expected 'parquet'")
        written = write_tables(_open(capture, no_cache).tables, outdir)
    err.print(f"wrote {len(written)} files to {outdir}")


@app.callback(invoke_without_command=True)
def _version(version: Annotated[bool, typer.Option("--version", help="print the version")] = False) -> None:
    if version:
        print(f"kvmtrace {__version__}")
        raise typer.Exit(0)


def main() -> None:
    run: Callable[[], Any] = app
    run()
