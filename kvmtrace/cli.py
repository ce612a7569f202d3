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

app = typer.Typer(add_completion=True, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Explain where a KVM guest's latency comes from, from ftrace captures.")
err = Console(stderr=True)

CaptureArg = Annotated[Path, typer.Argument(help="trace.dat, text capture, or capture directory")]
def flag(name: str, help_text: str) -> Any:
    """An on/off option, shown in --help without a value placeholder (it takes none)."""
    return typer.Option(name, help=help_text, metavar="")


JsonFlag = Annotated[bool, flag("--json", "print the JSON document")]
NoCache = Annotated[bool, flag("--no-cache", "read the trace again, ignore the Parquet cache")]
ChunkMb = Annotated[int | None, typer.Option(
    "--chunk-mb", help="read a trace.dat in time chunks of about this many MB of trace data, one at a time (the "
                       "same result in less memory); 0: never (default: chunks of 256 MB when the file is over "
                       "512 MB)")]


@contextmanager
def user_errors() -> Iterator[None]:
    """Bad input: one line on stderr, exit code 2, no traceback. Meanwhile, on a terminal, a spinner names
    the model or analysis being computed once the command has taken more than a second."""
    from kvmtrace.render.progress import StepSpinner

    try:
        with StepSpinner("computing"):
            yield
    except CaptureError as exc:
        sys.stderr.write(f"kvmtrace: {exc.one_line()}\n")
        raise typer.Exit(2) from None
    except KeyboardInterrupt:
        err.print("kvmtrace: interrupted")
        raise typer.Exit(130) from None


_options: dict[str, Any] = {"phase_pattern": None}  # the root options every command's capture is opened with


def _open(capture: Path, no_cache: bool, part: tuple[int | None, int | None] | None = None) -> Any:
    """The capture; ``part`` (start_ns, end_ns): only its events are read (capture.open_capture)."""
    from kvmtrace.capture import open_capture
    from kvmtrace.render.progress import LazyProgress

    with LazyProgress(f"reading {capture}") as progress:
        return open_capture(capture, use_cache=not no_cache, progress=progress,
                            phase_pattern=_options["phase_pattern"], window=part)


@app.command()
def info(capture: CaptureArg, json_out: JsonFlag = False,
         chunk_mb: ChunkMb = None, no_cache: NoCache = False) -> None:
    """Format, kernel, clock, CPUs, time span, events per type, lost events, markers and phases."""
    from kvmtrace.analysis.info import info_chunked, info_dict
    from kvmtrace.render.info import render_info

    with user_errors():
        if chunk_mb is not None:
            _positive("--chunk-mb", chunk_mb)
        doc = info_chunked(capture, chunk_mb)
        if doc is None:
            doc = info_dict(_open(capture, no_cache))
    if json_out:
        sys.stdout.write(json.dumps(doc, indent=2, default=str) + "\n")
    else:
        render_info(doc, Console())


@app.command()
def convert(capture: CaptureArg,
            to: Annotated[str, typer.Option("--to", help="output format: parquet")],
            outdir: Annotated[Path, typer.Argument(help="output directory")],
            window: Annotated[str | None, typer.Option(
                "--window", help="only these events: START:END seconds (read from the pages that hold them, "
                                 "nothing else decoded), a phase name, or 'all' (default)")] = None,
            no_cache: NoCache = False) -> None:
    """Write the common table and one table per event type (Parquet)."""
    from kvmtrace.render.parquet import write_tables

    with user_errors():
        if to != "parquet":
            raise CaptureError(None, None, f"--to {to!r}: expected 'parquet'")
        written = write_tables(_tables_in(capture, no_cache, window), outdir)
    err.print(f"wrote {len(written)} files to {outdir}")


def _tables_in(capture: Path, no_cache: bool, window: str | None) -> Any:
    """The tables of a window: START:END read from the pages that hold it only; a phase cut from a full
    read. An empty START:END read is read again whole, so that the resolver can say what the capture spans."""
    from kvmtrace.analysis.window import explicit_range

    part = explicit_range(window)
    if part is not None:
        tables = _open(capture, no_cache, part).tables
        if tables.events.height:
            return tables
    cap = _open(capture, no_cache)
    if window is None:
        return cap.tables
    w = _window(cap, window)
    return cap.tables.cut(w.start_ns, w.end_ns)


Out = Annotated[Path | None, typer.Option(
    "--out", help="write the command's table instead of printing the report: FILE.parquet, .csv, .json, or - "
                  "(JSON records on standard output)")]


def _window(cap: Any, spec: str | None, default_all: bool = False) -> Any:
    """The one window resolver (analysis/window.py); ``default_all``: no --window means everything."""
    from kvmtrace.analysis.window import resolve_window

    return resolve_window(cap.path, "all" if spec is None and default_all else spec, cap.tables.events, cap.phases)


def _positive(name: str, value: int) -> int:
    if value < 0:
        raise CaptureError(None, None, f"{name} {value}: expected a number of 0 or more")
    return value


Format = Annotated[str, typer.Option("--format", help="table, csv, md or json (csv and md: every table, raw "
                                                     "values in ns)")]
Window = Annotated[str | None, typer.Option("--window", help="phase name, 'all' or START:END seconds "
                                            "(default: the cyclictest phase if markers show one)")]


@app.command()
def analyze(capture: CaptureArg, window: Window = None,
            worst: Annotated[int, typer.Option("--worst", help="how many worst interrupts to explain")] = 5,
            json_out: JsonFlag = False,
            blame_out: Annotated[Path | None, typer.Option(
                "--blame-out", help="write the blame table (per cause, overall and per vCPU): "
                                    ".parquet, .csv or .json")] = None,
            cyclictest: Annotated[Path | None, typer.Option(
                "--cyclictest", help="cyclictest's own output (-v, -h, T: lines or --json) to set beside the "
                                     "trace's figures")] = None,
            guest: Annotated[Path | None, typer.Option(
                "--guest", help="the guest's own capture (default: CAPTURE/guest when it exists): align its clock "
                                "and explain cyclictest loop by loop on both sides")] = None,
            loops_out: Annotated[Path | None, typer.Option(
                "--loops-out", help="with a guest capture: write the loop table (.parquet, .csv, .json)")] = None,
            chunk_mb: ChunkMb = None,
            out: Out = None,
            no_cache: NoCache = False, fmt: Format = "table") -> None:
    """Every guest interrupt (and every wakeup of a real-time thread on the host) as a timeline of stages,
    percentiles, blame, and who is to blame for the worst."""
    from kvmtrace.analysis.analyze import analyze_report, chunked_report
    from kvmtrace.render.emit import emit
    from kvmtrace.render.parquet import write_frame
    from kvmtrace.render.tables import output_format

    with user_errors():
        fmt = output_format(fmt, json_out)
        _positive("--worst", worst)
        if chunk_mb is not None:
            _positive("--chunk-mb", chunk_mb)
        output = _cyclictest(cyclictest)
        gcap, guest_output = _guest(capture, guest, cyclictest, no_cache)
        rep = chunked_report(capture, window, worst, chunk_mb, output) if gcap is None else None
        if rep is None:
            rep = analyze_report(_open(capture, no_cache), window, worst, output, gcap, guest_output)
        if rep.loops is not None and loops_out is not None:
            write_frame(rep.loops.table, loops_out)
            err.print(f"wrote {rep.loops.table.height:,} loops to {loops_out}")
        if blame_out is not None and rep.analysis is not None:
            import polars as pl

            a = rep.analysis
            overall = a.blame.with_columns(pl.lit(None, pl.Int32).alias("vcpu_tid"))
            write_frame(pl.concat([overall, a.blame_by_vcpu], how="diagonal_relaxed"), blame_out)
            err.print(f"wrote the blame table to {blame_out}")
        emit(rep, fmt, out)


def _cyclictest(path: Path | None) -> Any:
    from kvmtrace.ingest.cyclictest import read_cyclictest

    return read_cyclictest(path) if path is not None else None


def _guest(capture: Path, guest: Path | None, cyclictest: Path | None, no_cache: bool) -> tuple[Any, Any]:
    """The guest's capture (--guest, else CAPTURE/guest when it exists) and cyclictest's -v output for it
    (--cyclictest, else cyclictest.txt beside the guest's or the host's trace)."""
    path = guest if guest is not None else (capture / "guest" if (capture / "guest").is_dir() else None)
    if path is None:
        return None, None
    gcap = _open(path, no_cache)
    out_file = cyclictest or next((p for p in (path / "cyclictest.txt", capture / "cyclictest.txt")
                                   if p.is_file()), None)
    return gcap, _cyclictest(out_file)


@app.command()
def irqs(capture: CaptureArg,
         out: Annotated[Path, typer.Option("--out", help="FILE.parquet, .csv or .json")],
         window: Window = None, no_cache: NoCache = False) -> None:
    """Write the per-interrupt table (columns: docs/stages.md)."""
    from kvmtrace.analysis.latency import analyze as run
    from kvmtrace.render.parquet import write_frame

    with user_errors():
        table = run(_open(capture, no_cache), window).table
        write_frame(table, out)
    err.print(f"wrote {table.height:,} interrupts to {out}")


@app.command()
def vcpus(capture: CaptureArg, out: Out = None, window: Annotated[str | None, typer.Option(
              "--window", help="phase name, 'all' or START:END seconds (default: all)")] = None,
          json_out: JsonFlag = False,
          no_cache: NoCache = False, fmt: Format = "table") -> None:
    """vCPU threads and the time each spent in guest, host_handling, blocked, preempted and waking."""
    from kvmtrace.analysis.vcpus import vcpus_report
    from kvmtrace.render.emit import emit
    from kvmtrace.render.tables import output_format

    with user_errors():
        fmt = output_format(fmt, json_out)
        cap = _open(capture, no_cache)
        emit(vcpus_report(cap, _window(cap, window, default_all=True)), fmt, out)


@app.command()
def exits(capture: CaptureArg,
          json_out: JsonFlag = False,
          out: Out = None,
          window: Annotated[str | None, typer.Option(
              "--window", help="phase name, 'all' or START:END seconds (default: all)")] = None,
          by_thread: Annotated[bool, flag("--by-thread", "also show each vCPU thread")] = False,
          no_cache: NoCache = False, fmt: Format = "table") -> None:
    """Exit profile per class, vCPU thread and phase: handling and guest-run intervals, what happened inside."""
    from kvmtrace.analysis.exits import exits_report
    from kvmtrace.render.emit import emit
    from kvmtrace.render.tables import output_format

    with user_errors():
        fmt = output_format(fmt, json_out)
        cap = _open(capture, no_cache)
        w = _window(cap, window, default_all=True)
        emit(exits_report(cap.tables, cap.phases, str(capture), (w.name, w.start_ns, w.end_ns)), fmt, out,
             by_thread=by_thread)


@app.command()
def faults(capture: CaptureArg,
           json_out: JsonFlag = False,
           out: Out = None,
           window: Annotated[str | None, typer.Option(
               "--window", help="phase name, 'all' or START:END seconds (default: all)")] = None,
           guest: Annotated[Path | None, typer.Option(
               "--guest", help="guest-side capture: count stage-1 faults")] = None,
           no_cache: NoCache = False, fmt: Format = "table") -> None:
    """Stage-2 faults: decoded ESR, RAM or MMIO, region, phase, handling cost, and when they happened."""
    from kvmtrace.analysis.faults import faults_report
    from kvmtrace.render.emit import emit
    from kvmtrace.render.tables import output_format

    with user_errors():
        fmt = output_format(fmt, json_out)
        cap = _open(capture, no_cache)
        gcap = _open(guest, no_cache) if guest is not None else None
        memory = cap.manifest.guest_memory if cap.manifest else None
        w = _window(cap, window) if window is not None else None
        emit(faults_report(cap.tables, cap.phases, str(capture), (w.name, w.start_ns, w.end_ns) if w else None,
                           memory, (gcap.tables, gcap.phases) if gcap is not None else None,
                           _guest_offset(cap, gcap) if gcap is not None else None), fmt, out)


@app.command()
def export(capture: CaptureArg,
           to: Annotated[str, typer.Option("--to", help="perfetto (native TrackEvent protobuf) or chrome-json")],
           out: Annotated[Path, typer.Option("-o", "--out", help="file to write (.pftrace, .json)")],
           window: Window = None,
           guest: Annotated[Path | None, typer.Option(
               "--guest", help="the guest's own capture: its CPUs and markers on the host clock")] = None,
           no_cache: NoCache = False) -> None:
    """A timeline for Perfetto or chrome://tracing: CPUs, vCPU states, interrupts and stages, exits, faults."""
    from kvmtrace.analysis.latency import analyze as run
    from kvmtrace.render.export import export as write

    with user_errors():
        analysis = run(_open(capture, no_cache), window)
        line = write(analysis, to, out, _open(guest, no_cache) if guest is not None else None)
    err.print(line, highlight=False, soft_wrap=True)


@app.command()
def report(captures: Annotated[list[Path], typer.Argument(help="one or more captures (several: side by side)")],
           out: Annotated[Path | None, typer.Option(
               "-o", "--out", help="HTML file to write (default report.html unless --png/--svg)")] = None,
           png: Annotated[Path | None, typer.Option("--png", help="also write every figure as PNG here")] = None,
           svg: Annotated[Path | None, typer.Option("--svg", help="also write every figure as SVG here")] = None,
           window: Window = None,
           worst: Annotated[int, typer.Option("--worst", help="how many worst interrupts to show")] = 5,
           no_cache: NoCache = False) -> None:
    """One self-contained HTML report (works offline): latency figures, stages, worst interrupts, blame, exits."""
    from kvmtrace.render.report import capture_report, write_figures
    from kvmtrace.render.report_html import comparison_figures, report_html

    with user_errors():
        reports = [capture_report(_open(c, no_cache), window, worst) for c in captures]
        if out is None and png is None and svg is None:
            out = Path("report.html")
        extra = comparison_figures(reports) if len(reports) > 1 else {}
        for fmt, directory in (("png", png), ("svg", svg)):
            if directory is not None:
                err.print(f"wrote {len(write_figures(reports, directory, fmt, extra))} figures to {directory}")
        if out is not None:
            out.write_text(report_html(reports))
            err.print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB)")


@app.command()
def compare(captures: Annotated[list[str], typer.Argument(help="CAPTURE[=LABEL] ..., the first is the baseline")],
            study: Annotated[bool, flag("--study", "add the 2014 study's host/guest figures")] = False,
            json_out: JsonFlag = False,
            fail_if: Annotated[list[str] | None, typer.Option(
                "--fail-if", help="exit 3 when it holds for the last run, e.g. 'p99>+20%' or 'max>500'")] = None,
            no_cache: NoCache = False) -> None:
    """The study's table for any set of runs: measures side by side, ratios, and why they differ."""
    from kvmtrace.analysis.study import check_fail_if, runs_from_args
    from kvmtrace.analysis.study import compare as run_compare
    from kvmtrace.render.compare import render_compare

    with user_errors():
        if len(captures) < 2:
            raise CaptureError(None, None, "compare needs at least two captures (CAPTURE[=LABEL] ...)")
        cmp = run_compare(runs_from_args(captures, lambda p: _open(p, no_cache)), study)
        failed = check_fail_if(cmp, fail_if or [])
    if json_out:
        sys.stdout.write(json.dumps(cmp.to_json(), indent=2, default=str) + "\n")
    else:
        render_compare(cmp, Console())
    if failed:
        raise typer.Exit(3)


def _guest_offset(cap: Any, gcap: Any) -> int | None:
    """The guest clock's offset on the host's, or None when the two captures cannot be aligned."""
    from kvmtrace.model.align import align
    from kvmtrace.model.vcpus import vcpu_threads

    try:
        return align(cap.tables, gcap.tables, vcpu_threads(cap.tables)["vcpu_tid"]).offset_ns
    except CaptureError:
        return None


@app.command()
def synth(scenario: Annotated[str, typer.Argument(help="preset: study-host, study-guest, hog, rt-vcpu, "
          "boot-faults, arm32, adversarial, adversarial-fit, busy-guest, rt-throttle, idle-wait, stalls")],
          out: Annotated[Path, typer.Option("-o", "--out", help="capture directory to write")],
          seed: Annotated[int, typer.Option("--seed", help="random seed (same seed, same bytes)")] = 1,
          events: Annotated[int | None, typer.Option("--events", help="scale the run to about N events")] = None,
          loops: Annotated[int | None, typer.Option("--loops", help="cyclictest loops")] = None,
          text: Annotated[bool, flag("--text", "also write trace.txt (trace-cmd report)")] = False,
          zstd: Annotated[bool, flag("--zstd", "trace.dat v7 with zstd")] = False,
          overrides: Annotated[list[str] | None, typer.Option("--set", help="override a parameter: key=value")]
          = None) -> None:
    """Simulate a KVM host running a guest; write trace.dat, capture.json and truth/ (docs/synth.md)."""
    from kvmtrace.synth.run import _loops_for_events, simulate
    from kvmtrace.synth.scenario import apply_override, preset

    with user_errors():
        try:
            params = preset(scenario)
            for item in overrides or []:
                apply_override(params, item)
        except (KeyError, ValueError, IndexError) as exc:
            raise CaptureError(None, None, str(exc).strip("'\"")) from None
        if loops is not None:
            params["cyclictest"]["loops"] = loops
        if events is not None:
            params["cyclictest"]["loops"] = _loops_for_events(params, seed, events)
        result = simulate(params, seed, out, zstd=zstd, text=text)
    rate = result.events / result.seconds if result.seconds else 0.0
    err.print(f"wrote {out}: {result.events} events ({result.loops} loops) in {result.seconds:.1f} s "
              f"({rate / 1e6:.2f} M events/s)")


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True,
                               "help_option_names": []}, add_help_option=False)
def record(ctx: typer.Context) -> None:
    """Record a capture on this machine (run as root): kvmtrace record -o DIR [--workload KIND] [-- ARGS].

    A thin wrapper: the recorder is kvmtrace.record (standard library only, also shipped as
    kvmtrace-record.pyz); `kvmtrace record --help` lists its options.
    """
    from kvmtrace.record.__main__ import main as record_main

    args = list(ctx.args)
    tail = sys.argv[sys.argv.index("record") + 1:] if "record" in sys.argv else []
    if "--" in tail and [a for a in tail if a != "--"] == [a for a in args if a != "--"]:
        args = tail  # click drops the "--" that separates the workload's own arguments
    raise typer.Exit(record_main(args))


@app.callback(invoke_without_command=True)
def _root(version: Annotated[bool, flag("--version", "print the version")] = False,
          phase_pattern: Annotated[str | None, typer.Option(
              "--phase-pattern", metavar="REGEX",
              help="your own phase markers: a regular expression with the groups (?P<name>...) and "
                   "(?P<edge>start|begin|end|stop), tried before the built-in conventions (docs/capture.md)")] = None,
          ) -> None:
    if version:
        print(f"kvmtrace {__version__}")
        raise typer.Exit(0)
    _options["phase_pattern"] = phase_pattern


def main() -> None:
    run: Callable[[], Any] = app
    run()
