"""One way out for every report (analysis/report.py): ``--out FILE`` writes its rows and says so,
``--format json`` prints its document, ``csv``/``md`` every table of it (render/sections.py), ``table``
its terminal view."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from rich.console import Console

from kvmtrace.analysis.analyze import AnalyzeReport
from kvmtrace.analysis.exits import ExitsReport
from kvmtrace.analysis.faults import FaultsReport
from kvmtrace.analysis.report import Report
from kvmtrace.analysis.vcpus import VcpusReport
from kvmtrace.render.analyze import render_analyze_report
from kvmtrace.render.exits import render_exits
from kvmtrace.render.faults import render_faults
from kvmtrace.render.parquet import write_frame
from kvmtrace.render.sections import analyze_sections, exits_sections, faults_sections, vcpus_sections
from kvmtrace.render.tables import Sections, sections_text, table_console
from kvmtrace.render.vcpus import render_vcpus


def emit(report: Report, fmt: str, out: Path | None = None, **terminal_options: Any) -> None:
    """Write or print ``report`` as asked (``fmt`` is checked already: render/tables.output_format)."""
    if out is not None:
        rows = report.rows()
        write_frame(rows, out)
        if str(out) != "-":  # on stderr, so that --out - stays clean
            Console(stderr=True).print(f"wrote {rows.height:,} rows to {out}", soft_wrap=True, highlight=False)
    elif fmt == "json":
        sys.stdout.write(json.dumps(report.to_json(), indent=2, default=str) + "\n")
    elif fmt == "table":
        terminal(report, table_console(), **terminal_options)
    else:
        sys.stdout.write(sections_text(sections(report), fmt))


def terminal(report: Report, console: Console, **options: Any) -> None:
    """The report's rich terminal view."""
    if isinstance(report, AnalyzeReport):
        render_analyze_report(report.document, console)
    elif isinstance(report, ExitsReport):
        render_exits(report, console, bool(options.get("by_thread")))
    elif isinstance(report, FaultsReport):
        render_faults(report, console)
    elif isinstance(report, VcpusReport):
        render_vcpus(report, console)
    else:
        raise TypeError(f"no terminal view for a {report.kind!r} report")
    read = report.document.get("read") if isinstance(report, AnalyzeReport) else getattr(report, "read", None)
    for problem in (read or {}).get("problems", []):
        console.print(f"[bold yellow]warning:[/bold yellow] {problem}", highlight=False)


def sections(report: Report) -> Sections:
    """The report's tables as (title, frame), raw values (``--format csv|md``)."""
    if isinstance(report, AnalyzeReport):
        return analyze_sections(report.document)
    if isinstance(report, ExitsReport):
        return exits_sections(report)
    if isinstance(report, FaultsReport):
        return faults_sections(report)
    if isinstance(report, VcpusReport):
        return vcpus_sections(report)
    raise TypeError(f"no tables for a {report.kind!r} report")
