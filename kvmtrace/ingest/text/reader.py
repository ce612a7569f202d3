"""Read trace text (``trace-cmd report`` in any form, or tracefs ``trace``) into EventTables.

Line prefixes are parsed in two tiers: the lines in the file's column layouts by modal (numpy over
the bytes, no per-line Python; or C), the rest by the exact regexes of lines. ``-R`` payloads are
read from 8-byte words (raw, typed; or C), other payload forms by fields. The fast tiers take a
line only where they give what the exact reader gives (tests/test_text_reader.py checks both ways);
scripts/bench_text_tiers.py measures what each tier earns (docs/benchmarks.md). This module puts
the parts together into the common table (time ordered) and one typed table per event, and reports
everything it skipped.

With the native engine (kernels.library(), KVMTRACE_ENGINE) the hot loops run in C (text/kernels.c via
text/native.py: line bounds, the dominant-layout prefixes straight into their columns, the exact reader's
few rows merged in place, grouping by event, packing and splitting the -R payloads, their integers and
short strings) and the typed tables are made on two threads; the tables are the same as numpy's
(tests/test_text_native.py).
"""

from __future__ import annotations

import contextlib
import re
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from kvmtrace.errors import CaptureError
from kvmtrace.fileformats.formats import EventFormat
from kvmtrace.ingest.limits import LINE, LimitExceeded, line_limit
from kvmtrace.ingest.memory import without_hugepage_advice
from kvmtrace.ingest.readreport import ReadReport, SkippedRegion
from kvmtrace.ingest.tables import (
    COMMON_SCHEMA,
    TYPED_KEY_COLUMNS,
    CaptureMeta,
    EventTables,
    typed_key_names,
)
from kvmtrace.ingest.text.bytetext import (
    ByteText,
    FastPrefixes,
    Interned,
    drop_blank_lines,
    joined_lines,
    line_bounds,
)
from kvmtrace.ingest.text.fields import FormatCatalog, PayloadResult, bundled_catalog, parse_payload
from kvmtrace.ingest.text.lines import (
    ClassifiedLines,
    classify,
    looks_binary,
    raise_no_events,
    read_raw,
    split_lines,
)
from kvmtrace.ingest.text.modal import modal_prefixes
from kvmtrace.ingest.text.native import group_rows, open_gaps, pack_codes, pack_groups, text_library
from kvmtrace.ingest.text.native import line_bounds as native_line_bounds
from kvmtrace.ingest.text.typed import Compact, compact_groups, fast_payload, native_payload

SKIPPED_LIMIT = 100
KERNEL_MARKER = "tracing_mark_write"  # tracefs prints the print event by its ip symbol
FAST_MIN_BYTES = 4096  # below this the exact (regex) path is fast enough
TYPE_THREADS = 2  # threads making the typed tables with the native kernels


def read_text(path: str | Path, progress: bool = False) -> EventTables:
    """Read a trace-cmd report / tracefs trace text file (plain, gzip or zstd) into event tables."""
    with without_hugepage_advice():
        return _read_text(Path(path), progress)


def _read_text(path: Path, progress: bool) -> EventTables:
    """Lines framed (blank ones dropped), prefixes read by the fastest tier that takes them
    (modal, then the exact reader for the rest), ordered, then the typed
    tables."""
    clock = _Progress(progress)
    raw = read_raw(path)
    if looks_binary(raw.data):
        raise CaptureError(
            path,
            "line 1",
            "expected a trace-cmd report or tracefs trace line, "
            "got binary data (is this a trace.dat? use the trace.dat reader)",
        )
    text = ByteText(raw.data)
    warming = _warm_catalog()
    lib = text_library()
    starts, ends = line_bounds(text.buf) if lib is None else native_line_bounds(lib, text.buf)
    frame = Framing(*drop_blank_lines(text, starts, ends))
    del starts, ends
    _check_line_lengths(path, frame)
    clock.step(f"found {frame.starts.size} lines")
    fast: FastPrefixes | None = None
    # small texts, and text with \x1f (split_lines reads it differently), stay on the exact path
    if len(raw.data) >= FAST_MIN_BYTES and raw.data.find(b"\x1f") < 0:
        fast = _prefixes(text, frame.starts, frame.ends)
    if fast is None:
        lines = split_lines(joined_lines(text, frame.starts, frame.ends, np.arange(frame.starts.size)))
        clock.step(f"split {lines.len()} lines")
        classified = classify(lines, path, require_events=False)
        _require_events(path, classified, frame)
        events = _sorted(_common_columns(_rename_kernel_markers(classified.events)))
    else:
        fast = _demote_unusual(fast)
        classified = _classify_rest(text, frame, fast, path)
        frame.release()  # keep the peak memory down
        clock.step(f"parsed {fast.rows.size} event prefixes, {classified.total_lines} other lines")
        slow = _common_columns(_rename_kernel_markers(classified.events))
        merged = _merged_in_place(fast, slow)
        if merged is not None:
            events = merged
        else:
            fast_frame = _fast_frame(fast)
            del fast  # the frame has them now: keep the peak memory down
            events = _merged(fast_frame, slow)
            del fast_frame
    clock.step(f"ordered {events.height} events")
    report = _report(classified, frame)
    if warming is not None:
        warming.join()
    by_event, formats = _typed_tables(events, report, text)
    clock.step(f"typed {len(by_event)} event tables")
    common = events.select(*COMMON_SCHEMA)
    meta = _meta(path, raw.compression, classified, events, formats, by_event, text)
    meta.options["payload_forms"] = {name: how for name, how in _forms(by_event, formats).items()}
    return EventTables(
        events=common,
        by_event=by_event,
        formats=formats,
        meta=meta,
        report=report,
        cmdlines=_cmdlines(events),
    )


@dataclass
class Framing:
    """The text's non-blank lines: their bounds, and their numbers in the file (0-based; None when no
    line was dropped, then the row is the number). Lines are known by their row here; numbers are
    only used in what the user reads."""

    starts: np.ndarray
    ends: np.ndarray
    numbers: np.ndarray | None

    def number(self, row: int) -> int:
        """The 1-based line number of a row, for messages."""
        return int(row if self.numbers is None else self.numbers[row]) + 1

    def release(self) -> None:
        """Drop the bounds once the lines are parsed (the numbers stay, for messages)."""
        self.starts = self.ends = np.zeros(0, np.int64)


def _check_line_lengths(path: Path, frame: Framing) -> None:
    """The line length limit (limits.line_limit): one line naming the first line past it."""
    if frame.starts.size == 0:
        return
    lengths = frame.ends - frame.starts
    limit = line_limit()
    if int(lengths.max()) > limit:
        row = int(np.argmax(lengths > limit))
        raise LimitExceeded(path, f"line {frame.number(row)}", "a text line", int(lengths[row]), limit, LINE)


def _require_events(path: Path, classified: ClassifiedLines, frame: Framing) -> None:
    """No event line at all: the error names the first line that is not one (its number in the file)."""
    if classified.events.height:
        return
    unparsed = classified.unparsed
    if unparsed.height:
        row, line, why = unparsed.select("line", "text", "why").row(0)
        unparsed = pl.DataFrame({"line": [frame.number(row) - 1], "text": [line], "why": [why]})
    raise_no_events(path, pl.Series("text", [None] * int(frame.starts.size), dtype=pl.String), unparsed)


def _warm_catalog() -> threading.Thread | None:
    """With the native kernels (they release the GIL), load the bundled formats (and numpy.ma) on a
    thread while the lines are parsed; None otherwise. Errors are left to the later bundled_catalog() call."""
    if text_library() is None:
        return None

    def load() -> None:
        with contextlib.suppress(Exception):  # raised again where the catalog is used
            bundled_catalog()
        with contextlib.suppress(Exception):
            import numpy.ma  # noqa: F401  (polars imports it at the first Series made from numpy)

    thread = threading.Thread(target=load, name="kvmtrace-formats", daemon=True)
    thread.start()
    return thread


def _prefixes(text: ByteText, starts: np.ndarray, ends: np.ndarray) -> FastPrefixes | None:
    """The lines in the file's column layouts (modal); the lines it leaves go to the exact reader."""
    return modal_prefixes(text, starts, ends)[0]


def _demote_unusual(fast: FastPrefixes) -> FastPrefixes:
    """Lines whose comm/event/buffer text the exact reader may read differently go to it."""
    bad_comm = [not _plain(v) for v in fast.comm.values]
    bad_event = [not (v.isascii() and v.replace(b"_", b"a").isalnum()) or v == KERNEL_MARKER.encode()
                 for v in fast.event.values]
    bad_buffer = [not _plain(v) for v in fast.buffer.values]
    if not any(bad_comm) and not any(bad_event) and not any(bad_buffer):
        return fast
    keep = ~(
        np.array(bad_comm, dtype=bool)[fast.comm.codes]
        | np.array(bad_event, dtype=bool)[fast.event.codes]
        | np.array(bad_buffer, dtype=bool)[fast.buffer.codes]
    )
    return fast.subset(keep) if not bool(keep.all()) else fast


def _plain(value: bytes) -> bool:
    return value.isascii() and all(32 <= b < 127 for b in value)


def _classify_rest(text: ByteText, frame: Framing, fast: FastPrefixes, path: Path) -> ClassifiedLines:
    """The exact reader on the lines the fast path did not take; lines known by their rows."""
    rest = np.ones(frame.starts.size, dtype=bool)
    rest[fast.rows] = False
    rows = np.flatnonzero(rest)
    lines = split_lines(joined_lines(text, frame.starts, frame.ends, rows))
    if lines.len() != rows.size:  # cannot happen with one line per row; be safe
        lines = pl.Series("text", [text.piece(int(frame.starts[i]), int(frame.ends[i])).decode("utf-8", "replace")
                                   or None for i in rows], dtype=pl.String)
    if rows.size == 0:
        lines = pl.Series("text", [], dtype=pl.String)
    classified = classify(lines, path, require_events=False)
    line_map = rows.astype(np.uint32)

    def renumber(frame_: pl.DataFrame) -> pl.DataFrame:
        if "line" not in frame_.columns:
            return frame_
        return frame_.with_columns(pl.Series("line", line_map[frame_["line"].to_numpy()]))

    classified.events = renumber(classified.events)
    classified.unparsed = renumber(classified.unparsed)
    classified.total_lines = int(frame.starts.size)
    if fast.rows.size == 0:
        _require_events(path, classified, frame)
    return classified


def _fast_frame(fast: FastPrefixes) -> pl.DataFrame:
    def categorical(values: list[bytes], codes: np.ndarray) -> pl.Series:
        names = pl.Series([v.decode() for v in values], dtype=pl.String).cast(pl.Categorical)
        return names.gather(pl.Series(codes.astype(np.int32, copy=False).view(np.uint32)))

    n = fast.rows.size
    return pl.DataFrame(
        [
            pl.Series("line", fast.rows.astype(np.uint32)),
            pl.Series("ts", fast.ts),
            pl.Series("cpu", fast.cpu.astype(np.int32, copy=False)),
            pl.Series("pid", fast.pid.astype(np.int32, copy=False)),
            categorical(fast.comm.values, fast.comm.codes).alias("comm"),
            categorical(fast.event.values, fast.event.codes).alias("event"),
            categorical(fast.buffer.values, fast.buffer.codes).alias("buffer"),
            pl.Series("flags", [], dtype=pl.UInt8).clear(n),  # n nulls, nothing written
            pl.Series("preempt", [], dtype=pl.UInt8).clear(n),
            pl.Series("rest", [], dtype=pl.String).clear(n),
            pl.Series("ts_digits", fast.frac_digits.astype(np.uint32, copy=False)),
            pl.Series("ps", fast.payload_start),
            pl.Series("pe", fast.payload_end),
        ]
    )


def _merged_in_place(fast: FastPrefixes, slow: pl.DataFrame) -> pl.DataFrame | None:
    """_merged for the native columns (modal: views with room behind them): a few exact rows
    opened in place between the fast ones (text_native.open_gaps), then one frame; the same frame as
    _merged(_fast_frame(fast), slow) without copying every column again. None where that is not so."""
    lib = text_library()
    m = slow.height
    if lib is None or m == 0 or m > MERGE_LIMIT or not _in_order(fast.ts, fast.rows):
        return None
    if any(slow.select(pl.col("line", "ts", "cpu", "pid", "comm", "event", "buffer").null_count()).row(0)):
        return None
    slow = _sorted(slow).drop("idx")
    ts, line = fast.ts, fast.rows
    at_list = []
    at = 0
    for t, ln in zip(slow["ts"].to_list(), slow["line"].to_list(), strict=True):  # as _merged
        pos = max(int(np.searchsorted(ts, t, side="left")), at)
        while pos < ts.size and ts[pos] == t and line[pos] < ln:
            pos += 1
        at_list.append(pos)
        at = pos
    final = np.array(at_list, np.int64) + np.arange(m)
    interned = (fast.comm, fast.event, fast.buffer)
    grown = open_gaps(lib, [fast.rows, fast.ts, fast.frac_digits, fast.cpu, fast.pid, *(i.codes for i in interned),
                            fast.payload_start, fast.payload_end], final)
    if grown is None:
        return None
    rows, ts_all, digits, cpu, pid, comm, event, buffer, ps, pe = grown
    rows[final] = slow["line"].to_numpy()
    ts_all[final] = slow["ts"].to_numpy()
    digits[final] = slow["ts_digits"].to_numpy()
    cpu[final] = slow["cpu"].to_numpy()
    pid[final] = slow["pid"].to_numpy()
    ps[final] = -1
    pe[final] = -1
    values = []
    for name, codes, old in zip(("comm", "event", "buffer"), (comm, event, buffer), interned, strict=True):
        known = {v: k for k, v in enumerate(old.values)}
        more = list(old.values)
        codes[final] = [known.setdefault(v.encode(), len(known)) for v in slow[name].cast(pl.String).to_list()]
        more.extend(list(known)[len(old.values):])
        values.append(Interned(codes, more))
    merged = FastPrefixes(rows=rows, ts=ts_all, frac_digits=digits, cpu=cpu, pid=pid, comm=values[0],
                          event=values[1], buffer=values[2], payload_start=ps, payload_end=pe)
    frame = _fast_frame(merged)
    spots = pl.Series(final)
    frame = frame.with_columns(frame[name].scatter(spots, slow[name]) for name in ("flags", "preempt", "rest")
                               if slow[name].null_count() < m)
    return frame.with_columns(pl.int_range(pl.len(), dtype=pl.UInt32).alias("idx"))


def _sorted(frame: pl.DataFrame) -> pl.DataFrame:
    """Stable time order (ts, then line), idx = row number."""
    ts = frame["ts"].to_numpy()
    line = frame["line"].to_numpy()
    if not _in_order(ts, line):
        by_line = np.argsort(line, kind="stable")  # runs already in order: cheap
        order = by_line[np.argsort(ts[by_line], kind="stable")]
        frame = frame[order]
    return frame.with_columns(pl.int_range(pl.len(), dtype=pl.UInt32).alias("idx"))


MERGE_LIMIT = 1000  # slow rows merged into the (time ordered) fast rows by slicing, not sorting


def _merged(fast: pl.DataFrame, slow: pl.DataFrame) -> pl.DataFrame:
    """The fast and the exact rows in time order: a few exact rows go in between slices of the fast
    ones (zero-copy), otherwise everything is sorted."""
    ts = fast["ts"].to_numpy()
    line = fast["line"].to_numpy()
    if slow.height == 0 and _in_order(ts, line):
        return fast.with_columns(pl.int_range(pl.len(), dtype=pl.UInt32).alias("idx"))
    if slow.height > MERGE_LIMIT or not _in_order(ts, line):
        return _sorted(pl.concat([fast, slow], how="vertical"))
    slow = _sorted(slow).drop("idx")
    slow_ts = slow["ts"].to_list()
    slow_line = slow["line"].to_list()
    pieces = []
    at = 0
    for k, (t, ln) in enumerate(zip(slow_ts, slow_line, strict=True)):
        pos = max(int(np.searchsorted(ts, t, side="left")), at)
        while pos < ts.size and ts[pos] == t and line[pos] < ln:
            pos += 1
        pieces.append(fast.slice(at, pos - at))
        pieces.append(slow.slice(k, 1))
        at = pos
    pieces.append(fast.slice(at, ts.size - at))
    frame = pl.concat([p for p in pieces if p.height], how="vertical", rechunk=True)
    return frame.with_columns(pl.int_range(pl.len(), dtype=pl.UInt32).alias("idx"))


def _in_order(ts: np.ndarray, line: np.ndarray) -> bool:
    return ts.size < 2 or bool(
        ((ts[1:] > ts[:-1]) | ((ts[1:] == ts[:-1]) & (line[1:] > line[:-1]))).all()
    )


class _Progress:
    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.start = time.perf_counter()

    def step(self, what: str) -> None:
        if self.enabled:
            print(f"[{time.perf_counter() - self.start:6.2f}s] {what}", file=sys.stderr)


def _common_columns(prefixes: pl.DataFrame) -> pl.DataFrame:
    """ts in ns and typed common columns, in line order (see _sorted)."""
    frac = pl.col("frac")
    ts = pl.col("sec").cast(pl.Int64) * 1_000_000_000 + frac.str.slice(0, 9).str.pad_end(
        9, "0"
    ).cast(pl.Int64)
    flags, preempt = _latency_columns(pl.col("lat"))
    return prefixes.select(
        pl.col("line").cast(pl.UInt32),
        ts.alias("ts"),
        pl.col("cpu").cast(pl.Int32),
        pl.col("pid").cast(pl.Int32),
        pl.col("comm").cast(pl.Categorical),
        pl.col("event").cast(pl.Categorical),
        pl.col("buffer").fill_null("").cast(pl.Categorical),
        flags.alias("flags"),
        preempt.alias("preempt"),
        pl.col("rest").cast(pl.String),
        pl.col("frac").str.len_bytes().alias("ts_digits"),
        pl.lit(-1, dtype=pl.Int64).alias("ps"),
        pl.lit(-1, dtype=pl.Int64).alias("pe"),
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
    text: ByteText,
) -> tuple[dict[str, pl.DataFrame], dict[str, EventFormat]]:
    """One table per event: each event's payloads read by the fastest tier that takes them (the
    kernels' packed -R values, the numpy compact tier, else the exact polars parser), keyed by
    the common table's idx/ts/cpu/pid."""
    catalog: FormatCatalog = bundled_catalog()
    keys_frame = events.select("idx", "ts", "cpu", "pid")
    plain_keys = not any(keys_frame.null_count().row(0))
    key_arrays = {k: keys_frame[k].to_numpy() for k in ("ts", "cpu", "pid")} if plain_keys else {}
    ps_all = events["ps"].to_numpy()
    pe_all = events["pe"].to_numpy()
    lib = text_library()
    groups = _event_groups(lib, text, events["event"].to_physical().to_numpy(), ps_all, pe_all)
    names = [str(events["event"][int(rows[0])]) for rows in groups.rows]

    def payload(k: int) -> PayloadResult:
        rows = groups.rows[k]
        if lib is not None and k in groups.packed:
            result = native_payload(lib, names[k], *groups.packed[k], catalog)
            if result is not None:
                return result
        ps, pe = ps_all[rows], pe_all[rows]
        if k in groups.compact:
            c = groups.compact[k]
            result = fast_payload(names[k], c.text, c.equals, c.first, c.ps, c.pe, catalog)
            if result is not None:
                return result
        return parse_payload(names[k], _rest_texts(events, rows, ps, pe, text), catalog)

    def table(k: int) -> tuple[PayloadResult, pl.DataFrame]:
        rows, result = groups.rows[k], payload(k)
        keys = typed_key_names(result.columns.columns)
        if plain_keys:  # idx is the row number
            key_columns = pl.DataFrame(
                [pl.Series(keys["idx"], rows.astype(np.uint32))]
                + [pl.Series(keys[k], key_arrays[k][rows]) for k in ("ts", "cpu", "pid")]
            )
        else:
            key_columns = keys_frame[rows].select(*(pl.col(k).alias(keys[k]) for k in TYPED_KEY_COLUMNS))
        return result, pl.concat([key_columns, result.columns], how="horizontal")

    done = _per_event(table, groups.rows, threaded=lib is not None)
    by_event: dict[str, pl.DataFrame] = {}
    formats: dict[str, EventFormat] = {}
    for name, (result, frame) in zip(names, done, strict=True):
        by_event[name] = frame
        if result.fmt is not None:
            formats[name] = result.fmt
        _note_payload(report, name, result)
    return by_event, formats


@dataclass
class _Groups:
    """The rows of each event (in order of first appearance) and their payloads made ready: packed
    by the kernels, or compacted by numpy, for the events whose every row has a payload span."""

    rows: list[np.ndarray]
    packed: dict[int, tuple[ByteText, np.ndarray, np.ndarray]] = field(default_factory=dict)  # text, ps, pe
    compact: dict[int, Compact] = field(default_factory=dict)


def _event_groups(lib: Any, text: ByteText, codes: np.ndarray, ps_all: np.ndarray, pe_all: np.ndarray) -> _Groups:
    grouped = None if lib is None else group_rows(lib, codes, ps_all, pe_all)
    if grouped is not None:  # the kernels: a counting sort, then the payloads packed per code
        perm = sorted(range(len(grouped.rows)), key=lambda k: int(grouped.rows[k][0]))  # first appearance
        grouped.reorder(perm)
        fast_kinds = [k for k, fast in enumerate(grouped.fast) if fast]
        packed = pack_codes(lib, text, ps_all, pe_all, codes, grouped, fast_kinds)
        return _Groups(list(grouped.rows), packed=dict(zip(fast_kinds, packed, strict=True)))
    if codes.size and int(codes.max()) < 65536:  # radix sort
        codes = codes.astype(np.uint8 if int(codes.max()) < 256 else np.uint16)
    order = np.argsort(codes, kind="stable")
    bounds = np.flatnonzero(np.diff(codes[order])) + 1
    rows = np.split(order, bounds) if order.size else []
    rows.sort(key=lambda r: int(r[0]))  # first appearance, as group_by(maintain_order=True)
    fast_kinds = [k for k, r in enumerate(rows) if bool((ps_all[r] >= 0).all())]
    fast_rows = [rows[k] for k in fast_kinds]
    if lib is not None:
        return _Groups(rows, packed=dict(zip(fast_kinds, pack_groups(lib, text, ps_all, pe_all, fast_rows),
                                            strict=True)))
    return _Groups(rows, compact=dict(zip(fast_kinds, compact_groups(text, ps_all, pe_all, fast_rows),
                                          strict=True)))


def _per_event(table: Callable[[int], Any], rows: list[np.ndarray], threaded: bool) -> list[Any]:
    """``table(k)`` for every event k, in order; with the native kernels (they release the GIL) on
    two threads, biggest events first so that the threads end together (numpy alone gained nothing)."""
    if not threaded or len(rows) <= 1:
        return [table(k) for k in range(len(rows))]
    biggest_first = sorted(range(len(rows)), key=lambda k: -rows[k].size)
    with ThreadPoolExecutor(max_workers=TYPE_THREADS) as pool:
        futures = {k: pool.submit(table, k) for k in biggest_first}
        return [futures[k].result() for k in range(len(rows))]


def _rest_texts(
    events: pl.DataFrame, rows: np.ndarray, ps: np.ndarray, pe: np.ndarray, text: ByteText
) -> pl.Series:
    """The payload texts of some rows: decoded from the bytes where the fast path read the line."""
    rest = events["rest"].gather(pl.Series(rows))
    fast = np.flatnonzero(ps >= 0)
    if fast.size == 0:
        return rest
    data = text.data
    decoded = pl.Series(
        "rest",
        [data[int(ps[i]) : int(pe[i])].decode("utf-8", errors="replace") for i in fast],
        dtype=pl.String,
    )
    return rest.scatter(pl.Series(fast), decoded)


def _note_payload(report: ReadReport, name: str, result: PayloadResult) -> None:
    """Unknown events counted; values the text printed but that could not be read (null among values
    that were read) said per field. A field null on every row is one its printed form does not show."""
    if result.fmt is None and result.how in ("none",):
        report.unknown_events[name] = report.unknown_events.get(name, 0) + result.unmatched
    height = result.columns.height
    unread: dict[int, list[str]] = {}  # null count -> the fields with it
    for column, nulls in zip(result.columns.columns, result.columns.null_count().row(0), strict=True):
        if 0 < nulls < height:
            unread.setdefault(nulls, []).append(column)
    for nulls, columns in unread.items():
        report.skipped.append(SkippedRegion(f"event {name}", f"{nulls:,} of {height:,} rows: field"
                                            f"{'s' if len(columns) > 1 else ''} {', '.join(columns)} could not be "
                                            "read from the text (null)", 0))


def _forms(by_event: dict[str, pl.DataFrame], formats: dict[str, EventFormat]) -> dict[str, str]:
    return {
        name: ("format " + formats[name].system if name in formats else "inferred")
        for name in by_event
    }


def _report(classified: ClassifiedLines, frame: Framing) -> ReadReport:
    report = ReadReport().with_losses(classified.losses)
    report.unparsed_lines = classified.unparsed.height
    why = classified.unparsed["why"] if "why" in classified.unparsed.columns else None
    for k, (row, text) in enumerate(classified.unparsed.select("line", "text").head(SKIPPED_LIMIT).iter_rows()):
        reason = why[k] if why is not None and why[k] else "not an event line"
        report.skipped.append(SkippedRegion(f"line {frame.number(row)}", f"{reason}: {text[:120]!r}", None))
    return report


def _meta(
    path: Path,
    compression: str,
    classified: ClassifiedLines,
    events: pl.DataFrame,
    formats: dict[str, EventFormat],
    by_event: dict[str, pl.DataFrame],
    text: ByteText,
) -> CaptureMeta:
    buffers = sorted(str(b) for b in events["buffer"].unique().to_list())
    return CaptureMeta(
        path=str(path),
        kind="text",
        version=_flavour(classified, events, by_event, text),
        compression=compression,
        cpus=classified.cpus,
        buffers=buffers,
    )


def _flavour(
    classified: ClassifiedLines, events: pl.DataFrame, by_event: dict[str, pl.DataFrame], text: ByteText
) -> str:
    """Name the text form: kernel trace, or trace-cmd report with the options it was run with."""
    digits = events["ts_digits"].max()
    has_lat = events["flags"].is_not_null().any()
    if classified.cpus is None:
        return "tracefs trace" if has_lat else "text trace"
    opts = []
    raw = _looks_raw(events, text)
    if not raw and not _looks_plugin(events, text):
        opts.append("-N")  # with -R, plugins make no difference and cannot be told apart
    if isinstance(digits, int) and digits >= 9:
        opts.append("-t")
    if raw:
        opts.append("-R")
    if has_lat:
        opts.append("-l")
    return " ".join(["trace-cmd report", *opts])


def _first_rest(events: pl.DataFrame, name: str, text: ByteText) -> str | None:
    """The payload text of the first ``name`` event, or None."""
    hits = (events["event"] == name).fill_null(False)
    if not hits.any():
        return None
    row = hits.arg_max()
    assert row is not None
    ps, pe = int(events["ps"][row]), int(events["pe"][row])
    if ps >= 0:
        return text.data[ps:pe].decode("utf-8", errors="replace")
    rest = events["rest"][row]
    return str(rest) if rest is not None else None


def _looks_raw(events: pl.DataFrame, text: ByteText) -> bool:
    switch = _first_rest(events, "sched_switch", text)
    if switch is not None:
        return "==>" not in switch
    irq_exit = _first_rest(events, "softirq_entry", text)
    return irq_exit is not None and re.search(r"\[action=", irq_exit) is None


def _looks_plugin(events: pl.DataFrame, text: ByteText) -> bool:
    switch = _first_rest(events, "sched_switch", text)
    return switch is not None and re.search(r"\] \S+ ==> ", switch) is not None


def _cmdlines(events: pl.DataFrame) -> dict[int, str]:
    """pid -> the comm of its last event."""
    pid_column = events["pid"]
    if events.height and not pid_column.null_count():
        pid = pid_column.to_numpy()
        low, high = int(pid.min()), int(pid.max())
        if low >= 0 and high < 1 << 24:
            last = np.full(high + 1, -1, dtype=np.int64)
            np.maximum.at(last, pid, np.arange(pid.size, dtype=np.int64))
            pids = np.flatnonzero(last >= 0)
            comms = events["comm"].gather(pl.Series(last[pids])).cast(pl.String).to_list()
            return {int(p): str(c) for p, c in zip(pids.tolist(), comms, strict=True)}
    pairs = events.select(pl.col("pid"), pl.col("comm").cast(pl.String)).unique("pid", keep="last")
    return {int(pid): str(comm) for pid, comm in pairs.iter_rows() if pid is not None}
