"""Read trace text (``trace-cmd report`` in any form, or tracefs ``trace``) into EventTables.

Line prefixes are parsed in text_lines, payloads in text_fields; this module puts them together into
the common table (time ordered) and one typed table per event, and reports everything it skipped.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import polars as pl

from kvmtrace.errors import CaptureError
from kvmtrace.ingest.formats import EventFormat
from kvmtrace.ingest.tables import (
    COMMON_SCHEMA,
    TYPED_KEY_COLUMNS,
    CaptureMeta,
    EventTables,
    ReadReport,
    SkippedRegion,
    typed_key_names,
)
from kvmtrace.ingest.text_fields import FormatCatalog, PayloadResult, bundled_catalog, parse_payload
from kvmtrace.ingest.text_lines import (
    ClassifiedLines,
    classify,
    looks_binary,
    read_raw,
    split_lines,
)

SKIPPED_LIMIT = 100
KERNEL_MARKER = "tracing_mark_write"  # tracefs prints the print event by its ip symbol


def read_text(path: str | Path, progress: bool = False) -> EventTables:
    """Read a trace-cmd report / tracefs trace text file (plain, gzip or zstd) into event tables."""
    path = Path(path)
    clock = _Progress(progress)
    raw = read_raw(path)
    if looks_binary(raw.data):
        raise CaptureError(
            path,
            "line 1",
            "expected a trace-cmd report or tracefs trace line, "
            "got binary data (is this a trace.dat? use the trace.dat reader)",
        )
    lines = split_lines(raw.data)
    clock.step(f"split {lines.len()} lines")
    classified = classify(lines, path)
    clock.step(f"parsed {classified.events.height} event prefixes")
    events = _common_columns(_rename_kernel_markers(classified.events))
    report = _report(classified)
    by_event, formats = _typed_tables(events, report)
    clock.step(f"typed {len(by_event)} event tables")
    common = events.select(*COMMON_SCHEMA)
    meta = _meta(path, raw.compression, classified, events, formats, by_event)
    meta.options["payload_forms"] = {name: how for name, how in _forms(by_event, formats).items()}
    return EventTables(
        events=common,
        by_event=by_event,
        formats=formats,
        meta=meta,
        report=report,
        cmdlines=_cmdlines(events),
    )


class _Progress:
    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.start = time.perf_counter()

    def step(self, what: str) -> None:
        if self.enabled:
            print(f"[{time.perf_counter() - self.start:6.2f}s] {what}", file=sys.stderr)


def _common_columns(prefixes: pl.DataFrame) -> pl.DataFrame:
    """ts in ns, typed common columns, stable time order, idx = row number."""
    frac = pl.col("frac")
    ts = pl.col("sec").cast(pl.Int64) * 1_000_000_000 + frac.str.slice(0, 9).str.pad_end(
        9, "0"
    ).cast(pl.Int64)
    flags, preempt = _latency_columns(pl.col("lat"))
    frame = prefixes.select(
        pl.col("line"),
        ts.alias("ts"),
        pl.col("cpu").cast(pl.Int32),
        pl.col("pid").cast(pl.Int32),
        pl.col("comm"),
        pl.col("event"),
        pl.col("buffer").fill_null(""),
        flags.alias("flags"),
        preempt.alias("preempt"),
        pl.col("rest"),
        pl.col("frac").str.len_bytes().alias("ts_digits"),
    )
    frame = frame.sort("ts", "line", maintain_order=True)
    return frame.with_columns(
        pl.int_range(pl.len(), dtype=pl.UInt32).alias("idx"),
        pl.col("comm").cast(pl.Categorical),
        pl.col("event").cast(pl.Categorical),
        pl.col("buffer").cast(pl.Categorical),
    )


# kernel trace_print_lat_fmt(): irqs-off, need-resched, hardirq/softirq, preempt, migrate
_IRQS = {"d": 0x01, "D": 0x81, "b": 0x80, "X": 0x02, ".": 0x00}
_RESCHED = {"B": 0x26, "N": 0x24, "L": 0x06, "n": 0x04, "p": 0x20, "l": 0x02, ".": 0x00}
_CONTEXT = {"Z": 0x48, "z": 0x40, "H": 0x18, "h": 0x08, "s": 0x10, ".": 0x00}


def _latency_columns(lat: pl.Expr) -> tuple[pl.Expr, pl.Expr]:
    """common_flags and common_preempt_count from ``d..2.`` style flags (or ``-0x9`` raw flags)."""
    raw_hex = lat.str.strip_prefix("-0x").str.to_integer(base=16, strict=False)
    chars = [lat.str.slice(i, 1) for i in range(5)]
    flags = (
        _char_value(chars[0], _IRQS)
        | _char_value(chars[1], _RESCHED)
        | _char_value(chars[2], _CONTEXT)
    )
    depth = chars[3].replace(".", "0").str.to_integer(base=16, strict=False)
    migrate = chars[4].replace(".", "0").str.to_integer(base=16, strict=False)
    preempt = depth + pl.when(migrate.is_null()).then(0).otherwise(migrate) * 16
    is_raw = lat.str.starts_with("-0x")
    flags_out = pl.when(is_raw).then(raw_hex).otherwise(flags).cast(pl.UInt8, strict=False)
    preempt_out = pl.when(is_raw).then(None).otherwise(preempt).cast(pl.UInt8, strict=False)
    return flags_out, preempt_out


def _char_value(char: pl.Expr, table: dict[str, int]) -> pl.Expr:
    return char.replace_strict(
        list(table), list(table.values()), default=None, return_dtype=pl.Int64
    )


def _rename_kernel_markers(prefixes: pl.DataFrame) -> pl.DataFrame:
    """tracefs prints the print event as ``tracing_mark_write: text``: call it ``print``."""
    is_marker = pl.col("event") == KERNEL_MARKER
    return prefixes.with_columns(
        pl.when(is_marker).then(pl.lit("print")).otherwise(pl.col("event")).alias("event"),
        pl.when(is_marker)
        .then(KERNEL_MARKER + ": " + pl.col("rest"))
        .otherwise(pl.col("rest"))
        .alias("rest"),
    )


def _typed_tables(
    events: pl.DataFrame,
    report: ReadReport,
) -> tuple[dict[str, pl.DataFrame], dict[str, EventFormat]]:
    catalog: FormatCatalog = bundled_catalog()
    by_event: dict[str, pl.DataFrame] = {}
    formats: dict[str, EventFormat] = {}
    keyed = events.select("idx", "ts", "cpu", "pid", "event", "rest")
    for (name,), group in keyed.group_by("event", maintain_order=True):
        name = str(name)
        result = parse_payload(name, group["rest"], catalog)
        keys = typed_key_names(result.columns.columns)
        key_columns = group.select(*(pl.col(k).alias(keys[k]) for k in TYPED_KEY_COLUMNS))
        by_event[name] = pl.concat([key_columns, result.columns], how="horizontal")
        if result.fmt is not None:
            formats[name] = result.fmt
        _note_payload(report, name, result)
    return by_event, formats


def _note_payload(report: ReadReport, name: str, result: PayloadResult) -> None:
    if result.fmt is None and result.how in ("none",):
        report.unknown_events[name] = report.unknown_events.get(name, 0) + result.unmatched


def _forms(by_event: dict[str, pl.DataFrame], formats: dict[str, EventFormat]) -> dict[str, str]:
    return {
        name: ("format " + formats[name].system if name in formats else "inferred")
        for name in by_event
    }


def _report(classified: ClassifiedLines) -> ReadReport:
    report = ReadReport(lost_events=classified.lost, lost_unknown_pages=classified.lost_unknown)
    report.unparsed_lines = classified.unparsed.height
    for lineno, text in classified.unparsed.head(SKIPPED_LIMIT).iter_rows():
        report.skipped.append(
            SkippedRegion(f"line {lineno + 1}", f"not an event line: {text[:120]!r}", None)
        )
    return report


def _meta(
    path: Path,
    compression: str,
    classified: ClassifiedLines,
    events: pl.DataFrame,
    formats: dict[str, EventFormat],
    by_event: dict[str, pl.DataFrame],
) -> CaptureMeta:
    buffers = sorted(str(b) for b in events["buffer"].unique().to_list())
    return CaptureMeta(
        path=str(path),
        kind="text",
        version=_flavour(classified, events, by_event),
        compression=compression,
        cpus=classified.cpus,
        buffers=buffers,
    )


def _flavour(
    classified: ClassifiedLines, events: pl.DataFrame, by_event: dict[str, pl.DataFrame]
) -> str:
    """Name the text form: kernel trace, or trace-cmd report with the options it was run with."""
    digits = events["ts_digits"].max()
    has_lat = events["flags"].is_not_null().any()
    if classified.cpus is None:
        return "tracefs trace" if has_lat else "text trace"
    opts = []
    raw = _looks_raw(events)
    if not raw and not _looks_plugin(events):
        opts.append("-N")  # with -R, plugins make no difference and cannot be told apart
    if isinstance(digits, int) and digits >= 9:
        opts.append("-t")
    if raw:
        opts.append("-R")
    if has_lat:
        opts.append("-l")
    return " ".join(["trace-cmd report", *opts])


def _looks_raw(events: pl.DataFrame) -> bool:
    switch = events.filter(pl.col("event") == "sched_switch").head(1)
    if switch.height:
        return not bool(switch["rest"].str.contains("==>").item())
    irq_exit = events.filter(pl.col("event") == "softirq_entry").head(1)
    return bool(irq_exit.height) and not bool(irq_exit["rest"].str.contains(r"\[action=").item())


def _looks_plugin(events: pl.DataFrame) -> bool:
    switch = events.filter(pl.col("event") == "sched_switch").head(1)
    return bool(switch.height) and bool(switch["rest"].str.contains(r"\] \S+ ==> ").item())


def _cmdlines(events: pl.DataFrame) -> dict[int, str]:
    pairs = events.select(pl.col("pid"), pl.col("comm").cast(pl.String)).unique("pid", keep="last")
    return {int(pid): str(comm) for pid, comm in pairs.iter_rows() if pid is not None}
