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


Out = Annotated[Path | None, typer.Option(
    "--out", help="write the command's table instead of printing the report: FILE.parquet, .csv, .json, or - "
                  "(JSON records on standard output)")]


def _written(df: Any, out: Path) -> None:
    """Write ``df`` to ``--out`` and say so (on stderr, so that ``--out -`` stays clean)."""
    from kvmtrace.render.parquet import write_frame

    write_frame(df, out)
    if str(out) != "-":
        err.print(f"wrote {df.height:,} rows to {out}", soft_wrap=True, highlight=False)


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
            json_out: Annotated[bool, typer.Option("--json", help="print the JSON document")] = False,
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
            out: Out = None,
            no_cache: NoCache = False, fmt: Format = "table") -> None:
    """Every guest interrupt (and every wakeup of a real-time thread on the host) as a timeline of stages,
    percentiles, blame, and who is to blame for the worst."""
    from kvmtrace.analysis.latency import analyze as run
    from kvmtrace.analysis.latency import choose_window
    from kvmtrace.analysis.native import native_analysis, native_document
    from kvmtrace.ingest.cyclictest import read_cyclictest
    from kvmtrace.render.analyze import render_analyze
    from kvmtrace.render.native import render_native
    from kvmtrace.render.parquet import write_frame
    from kvmtrace.render.sections import analyze_sections
    from kvmtrace.render.tables import output_format, sections_text, table_console

    with user_errors():
        fmt = output_format(fmt, json_out)
        _positive("--worst", worst)
        cap = _open(capture, no_cache)
        output = read_cyclictest(cyclictest) if cyclictest is not None else None
        if not cap.tables.has("kvm_entry"):  # a host without guests: its own real-time threads
            w = choose_window(cap, window)
            native_analysis(cap, w.start_ns, w.end_ns, worst)  # one clear line when events are missing
            doc = {"kvmtrace_analyze": 2, "capture": str(cap.path), "window": w.to_dict(),
                   "native": native_document(cap, w.start_ns, w.end_ns, worst, output),
                   "cyclictest": cap.cyclictest.to_dicts()}
            if doc["native"] is None:
                raise CaptureError(cap.path, None, "no guest (no kvm:kvm_entry) and no real-time thread woken by "
                                                   "its own timer at least 50 times: nothing to explain")
            if fmt == "json":
                sys.stdout.write(json.dumps(doc, indent=2, default=str) + "\n")
            else:
                render_native(doc, table_console())
            return
        analysis = run(cap, window, worst)
        if out is not None:  # the per-interrupt table instead of the report
            if analysis.table.height == 0:
                raise CaptureError(cap.path, None, f"no guest interrupt in the window {analysis.window.name!r}")
            _written(analysis.table, out)
            return
        doc = analysis.document()
        doc["native"] = native_document(cap, analysis.window.start_ns, analysis.window.end_ns, worst, output,
                                        exclude=tuple(analysis.vcpus["vcpu_tid"].to_list()))
        doc["guest"] = _guest_side(analysis, capture, guest, cyclictest, worst, loops_out, no_cache)
        if blame_out is not None:
            import polars as pl

            overall = analysis.blame.with_columns(pl.lit(None, pl.Int32).alias("vcpu_tid"))
            write_frame(pl.concat([overall, analysis.blame_by_vcpu], how="diagonal_relaxed"), blame_out)
            err.print(f"wrote the blame table to {blame_out}")
    if fmt == "json":
        sys.stdout.write(json.dumps(doc, indent=2, default=str) + "\n")
    elif fmt == "table":
        render_analyze(doc, table_console())
        if doc["native"] is not None:
            render_native(doc, table_console())
        if doc["guest"] is not None:
            from kvmtrace.render.guest import render_guest

            render_guest(doc, table_console())
    else:
        sys.stdout.write(sections_text(analyze_sections(doc), fmt))


def _guest_side(analysis: Any, capture: Path, guest: Path | None, cyclictest: Path | None, worst: int,
                loops_out: Path | None, no_cache: bool) -> dict[str, Any] | None:
    """The guest capture's loop table and verdicts (analysis/loops.py), or None without a guest capture."""
    from kvmtrace.analysis.loops import loop_table, loop_verdicts
    from kvmtrace.ingest.cyclictest import read_cyclictest
    from kvmtrace.render.parquet import write_frame

    path = guest if guest is not None else (capture / "guest" if (capture / "guest").is_dir() else None)
    if path is None:
        return None
    gcap = _open(path, no_cache)
    out_file = cyclictest or next((p for p in (path / "cyclictest.txt", capture / "cyclictest.txt")
                                   if p.is_file()), None)
    if out_file is None:
        raise CaptureError(path, None, "a guest capture needs cyclictest's -v output to compare loop by loop: "
                                       "give --cyclictest FILE (or put cyclictest.txt beside the guest's trace)")
    lp = loop_table(analysis, gcap, read_cyclictest(out_file))
    if loops_out is not None:
        write_frame(lp.table, loops_out)
        err.print(f"wrote {lp.table.height:,} loops to {loops_out}")
    return {"capture": str(path), "alignment": lp.alignment.to_dict(), "summary": lp.summary(),
            "worst_loops": loop_verdicts(lp, analysis, gcap, worst)}


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
          json_out: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
          no_cache: NoCache = False, fmt: Format = "table") -> None:
    """vCPU threads and the time each spent in guest, host_handling, blocked, preempted and waking."""
    import polars as pl

    from kvmtrace.model.blame import waiting_holders
    from kvmtrace.model.blockers import cpu_segments
    from kvmtrace.model.stalls import stalls
    from kvmtrace.model.throttling import rt_throttling
    from kvmtrace.model.vcpus import state_summary, state_timeline, vcpu_threads
    from kvmtrace.render.sections import vcpus_sections
    from kvmtrace.render.tables import frame_table, output_format, sections_text, table_console

    with user_errors():
        fmt = output_format(fmt, json_out)
        cap = _open(capture, no_cache)
        tables = cap.tables
        threads = vcpu_threads(tables)
        w = _window(cap, window, default_all=True)
        timeline = state_timeline(tables, threads["vcpu_tid"])
        timeline = timeline.filter(pl.col("end_ns") >= w.start_ns, pl.col("start_ns") <= w.end_ns).with_columns(
            pl.col("start_ns").clip(lower_bound=w.start_ns), pl.col("end_ns").clip(upper_bound=w.end_ns))
        if out is not None:
            _written(timeline, out)
            return
        throttling = rt_throttling(tables, cap.manifest.host if cap.manifest else None)
        holders = waiting_holders(timeline, cpu_segments(tables, stalls(tables)), throttling)
    sections = vcpus_sections(threads, state_summary(timeline), holders)
    if fmt == "json":
        doc = {"kvmtrace_vcpus": 1, "vcpus": threads.to_dicts(), "time_per_state": sections[1][1].to_dicts(),
               "waiting_holders": holders.to_dicts(), "rt_throttling": throttling.to_dict()}
        sys.stdout.write(json.dumps(doc, indent=2, default=str) + "\n")
        return
    if fmt != "table":
        sys.stdout.write(sections_text(sections, fmt))
        return
    console = table_console()
    console.print(frame_table(threads, "vCPU threads"))
    console.print(frame_table(state_summary(timeline), "Time per state"))
    console.print(frame_table(holders.group_by("vcpu_tid", maintain_order=True).head(8),
                              "Who held the CPU while the vCPU was runnable (waking, preempted)"))
    if throttling.intervals.height:
        console.print(throttling.describe())


@app.command()
def exits(capture: CaptureArg,
          json_out: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
          out: Out = None,
          window: Annotated[str | None, typer.Option(
              "--window", help="phase name, 'all' or START:END seconds (default: all)")] = None,
          by_thread: Annotated[bool, typer.Option("--by-thread", help="also show each vCPU thread")] = False,
          no_cache: NoCache = False, fmt: Format = "table") -> None:
    """Exit profile per class, vCPU thread and phase: handling and guest-run intervals, what happened inside."""
    from kvmtrace.model.exits import exits_report
    from kvmtrace.render.exits import render_exits
    from kvmtrace.render.sections import exits_sections
    from kvmtrace.render.tables import output_format, sections_text, table_console

    with user_errors():
        fmt = output_format(fmt, json_out)
        cap = _open(capture, no_cache)
        w = _window(cap, window, default_all=True)
        rep = exits_report(cap.tables, cap.phases, str(capture), (w.name, w.start_ns, w.end_ns))
        if out is not None:
            _written(rep.exits, out)
            return
    if fmt == "json":
        sys.stdout.write(json.dumps(rep.to_json(), indent=2, default=str) + "\n")
    elif fmt == "table":
        render_exits(rep, table_console(), by_thread)
    else:
        sys.stdout.write(sections_text(exits_sections(rep), fmt))


@app.command()
def faults(capture: CaptureArg,
           json_out: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
           out: Out = None,
           window: Annotated[str | None, typer.Option(
               "--window", help="phase name, 'all' or START:END seconds (default: all)")] = None,
           guest: Annotated[Path | None, typer.Option(
               "--guest", help="guest-side capture: count stage-1 faults")] = None,
           no_cache: NoCache = False, fmt: Format = "table") -> None:
    """Stage-2 faults: decoded ESR, RAM or MMIO, region, phase, handling cost, and when they happened."""
    from kvmtrace.model.faults import faults_report
    from kvmtrace.render.faults import render_faults
    from kvmtrace.render.sections import faults_sections
    from kvmtrace.render.tables import output_format, sections_text, table_console

    with user_errors():
        fmt = output_format(fmt, json_out)
        cap = _open(capture, no_cache)
        gcap = _open(guest, no_cache) if guest is not None else None
        memory = cap.manifest.guest_memory if cap.manifest else None
        w = _window(cap, window) if window is not None else None
        rep = faults_report(cap.tables, cap.phases, str(capture), (w.name, w.start_ns, w.end_ns) if w else None,
                            memory, (gcap.tables, gcap.phases) if gcap is not None else None,
                            _guest_offset(cap, gcap) if gcap is not None else None)
        if out is not None:
            _written(rep.faults, out)
            return
    if fmt == "json":
        sys.stdout.write(json.dumps(rep.to_json(), indent=2, default=str) + "\n")
    elif fmt == "table":
        render_faults(rep, table_console())
    else:
        sys.stdout.write(sections_text(faults_sections(rep), fmt))


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
            study: Annotated[bool, typer.Option("--study", help="add the 2014 study's host/guest figures")] = False,
            json_out: Annotated[bool, typer.Option("--json", help="print the JSON document")] = False,
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
          text: Annotated[bool, typer.Option("--text", help="also write trace.txt (trace-cmd report)")] = False,
          zstd: Annotated[bool, typer.Option("--zstd", help="trace.dat v7 with zstd")] = False,
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
def _version(version: Annotated[bool, typer.Option("--version", help="print the version")] = False) -> None:
    if version:
        print(f"kvmtrace {__version__}")
        raise typer.Exit(0)


def main() -> None:
    run: Callable[[], Any] = app
    run()
