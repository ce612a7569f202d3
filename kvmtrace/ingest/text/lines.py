"""Turn trace text (trace-cmd report or tracefs ``trace``) into a frame of parsed line prefixes.

Everything here is vectorised: the file is read once as bytes, split into a polars String
column, and the common prefix (buffer, comm, pid, cpu, latency flags, timestamp, event name)
is extracted with one regex per layout. Lines that are not events are classified (header,
lost-event notice, unparsed).
"""

from __future__ import annotations

import io
import mmap
import os
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from kvmtrace.errors import CaptureError
from kvmtrace.ingest.files import open_regular, os_error
from kvmtrace.ingest.inflate import InflateError, inflate_stream
from kvmtrace.ingest.limits import INFLATE, MAX_CPU_ID, MAX_PID, MAX_TS_SECONDS, LimitExceeded, inflate_limit
from kvmtrace.ingest.readreport import Loss

GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"

_BUFFER = r"(?:(?P<buffer>[^\s\[\]:]+): )?"
_TS_EVENT = r"(?P<sec>\d+)\.(?P<frac>\d+): (?P<event>\w+):\s*(?P<rest>.*)$"
# "comm-pid [CPU] [flags] ts: event: payload" (trace-cmd report, tracefs trace).
BRACKET_LINE = (
    "^" + _BUFFER + r"\s*(?P<comm>.*?)-(?P<pid>\d+)\s+\[(?P<cpu>\d+)\]\s+"
    r"(?:(?P<lat>[.a-zA-Z0-9]{4,5})\s+)?" + _TS_EVENT
)
# "comm-pid CPUflags ts: event: payload" (trace-cmd report -l).
LATENCY_LINE = (
    "^" + _BUFFER + r"\s*(?P<comm>.*?)-(?P<pid>\d+)\s+(?P<cpu>\d+)"
    r"(?P<lat>[.a-zA-Z][.a-zA-Z0-9]{3,4}|-0x[0-9a-fA-F]+)\s+" + _TS_EVENT
)
LINE_LAYOUTS = (BRACKET_LINE, LATENCY_LINE)
PREFIX_COLUMNS = ("buffer", "comm", "pid", "cpu", "lat", "sec", "frac", "event", "rest")

# "CPU:1 [LOST 12 EVENTS]" (kernel), "CPU:1 [12 EVENTS DROPPED]", "CPU:1 [EVENTS DROPPED]"
LOST_LINE = (
    "^"
    + _BUFFER
    + r"\s*CPU:?\s*(?P<cpu>\d+):?\s*\[?(?:LOST (?P<n1>\d+) EVENTS|(?P<n2>\d+) EVENTS DROPPED"
    r"|EVENTS DROPPED|.*LOST.*?(?P<n3>\d+))"
)
# header / informational lines that carry no event
NOISE_LINE = (
    r"^\s*(?:#.*|cpus=\d+|version\s*=\s*\d+|CPU\s*\d+ is empty|"
    r"[^\s:]+: \s*#.*|##### CPU \d+ buffer started ####|)\s*$"
)


@dataclass
class RawText:
    """The decompressed text and how it was stored."""

    data: bytes | mmap.mmap  # uncompressed files are mapped, not copied
    compression: str


@dataclass
class ClassifiedLines:
    """Event prefixes plus what the non-event lines were."""

    events: pl.DataFrame  # line (0-based), PREFIX_COLUMNS
    cpus: int | None
    losses: list[Loss] = field(default_factory=list)
    unparsed: pl.DataFrame = field(default_factory=pl.DataFrame)  # line, text, why (None: not an event line)
    total_lines: int = 0


def read_raw(path: Path) -> RawText:
    """Read the file and decompress gzip/zstd (detected by magic bytes), at most to the decompressed
    size limit (kvmtrace.ingest.limits)."""
    fd = open_regular(path)
    try:
        with os.fdopen(fd, "rb") as fh:
            head = fh.read(4)
            compressed = head.startswith(GZIP_MAGIC) or head.startswith(ZSTD_MAGIC)
            if head and not compressed:
                mapped = _map(fh)
                if mapped is not None:
                    return RawText(mapped, "none")
            fh.seek(0)
            if not compressed:
                return RawText(fh.read(), "none")
            codec = "gzip" if head.startswith(GZIP_MAGIC) else "zstd"
            size = os.fstat(fh.fileno()).st_size
            limit = inflate_limit(size)
            try:
                return RawText(inflate_stream(codec, fh, limit), codec)
            except InflateError as exc:
                if "inflates past" in str(exc):
                    raise LimitExceeded(path, None, f"the {codec} text", limit + 1, limit, INFLATE) from None
                raise CaptureError(path, None, str(exc)) from None
    except OSError as exc:
        raise os_error(path, exc, "read") from None


def _map(fh: io.BufferedReader) -> mmap.mmap | None:
    """The file mapped read-only (pages loaded up front), or None where that is not possible."""
    try:
        flags = mmap.MAP_PRIVATE | getattr(mmap, "MAP_POPULATE", 0)
        return mmap.mmap(fh.fileno(), 0, flags=flags, prot=mmap.PROT_READ)
    except (OSError, ValueError, AttributeError):
        return None


def split_lines(data: bytes) -> pl.Series:
    """One String value per line (empty lines as null), in file order."""
    if not data.strip():
        return pl.Series("text", [], dtype=pl.String)
    if b"\x1f" in data:
        text = data.decode("utf-8", errors="replace")
        return pl.Series("text", text.split("\n")).replace("", None)
    frame = pl.read_csv(
        data,
        has_header=False,
        separator="\x1f",
        quote_char=None,
        new_columns=["text"],
        schema={"text": pl.String},
        truncate_ragged_lines=True,
        comment_prefix=None,
        encoding="utf8-lossy",
    )
    return frame["text"]


def parse_prefixes(lines: pl.Series) -> pl.DataFrame:
    """Match every line against the event layouts; non-matching rows have a null ``event``."""
    frame = lines.to_frame().with_row_index("line")
    parsed = (
        frame.lazy()
        .select("line", "text", pl.col("text").str.extract_groups(BRACKET_LINE).alias("m"))
        .unnest("m")
        .collect()
    )
    missing = parsed.filter(pl.col("event").is_null() & pl.col("text").is_not_null())
    if missing.height and missing.height < parsed.height:
        # only a few lines: the second layout is only worth trying where the first failed
        retry = _match_layout(missing, LATENCY_LINE)
        parsed = parsed.update(retry, on="line", how="left")
    elif missing.height:
        parsed = _match_layout(parsed, LATENCY_LINE)
    return parsed


def _match_layout(frame: pl.DataFrame, layout: str) -> pl.DataFrame:
    matched = frame.lazy().select(
        "line", "text", pl.col("text").str.extract_groups(layout).alias("m")
    )
    return matched.unnest("m").select("line", "text", *PREFIX_COLUMNS).collect()


def classify(lines: pl.Series, path: Path, require_events: bool = True) -> ClassifiedLines:
    """Split the text into event prefixes, header lines, lost-event notices and unparsed lines."""
    parsed = parse_prefixes(lines)
    other = parsed.filter(pl.col("event").is_null() & pl.col("text").is_not_null()).select(
        "line", "text"
    )
    in_range = _in_range()
    out_of_range = parsed.filter(pl.col("event").is_not_null() & ~in_range).select(
        "line", "text", pl.lit(OUT_OF_RANGE).alias("why")
    )
    events = parsed.filter(pl.col("event").is_not_null() & in_range).drop("text")
    cpus = _cpus_line(other)
    noise = pl.col("text").str.contains(NOISE_LINE)
    lost_frame = (
        other.filter(~noise)
        .select("line", "text", pl.col("text").str.extract_groups(LOST_LINE).alias("m"))
        .unnest("m")
    )
    losses = _losses(lost_frame.filter(pl.col("cpu").is_not_null()))
    unparsed = pl.concat([
        lost_frame.filter(pl.col("cpu").is_null()).select("line", "text", pl.lit(None, pl.String).alias("why")),
        out_of_range,
    ]).sort("line")
    if events.height == 0 and require_events:
        raise_no_events(path, lines, unparsed)
    return ClassifiedLines(
        events=events,
        cpus=cpus,
        losses=losses,
        unparsed=unparsed,
        total_lines=lines.len(),
    )


OUT_OF_RANGE = "CPU, pid or timestamp out of range"


def _in_range() -> pl.Expr:
    """An event line's CPU, pid and seconds fit the tables (limits): the others are counted, not read."""
    def number(name: str, digits: int, top: int) -> pl.Expr:
        text = pl.col(name)
        return (text.str.len_bytes() <= digits) & (text.cast(pl.Int64, strict=False) <= top).fill_null(False)

    return (number("cpu", 5, MAX_CPU_ID) & number("pid", 10, MAX_PID)
            & number("sec", 10, MAX_TS_SECONDS - 1))


def _cpus_line(other: pl.DataFrame) -> int | None:
    found = other.select(pl.col("text").str.extract(r"^\s*cpus=(\d+)\s*$", 1).drop_nulls().first())
    value = found.item() if found.height else None
    return int(value) if value is not None else None


def _losses(frame: pl.DataFrame) -> list[Loss]:
    """One Loss per LOST EVENTS / EVENTS DROPPED line (untimed: the line carries no time)."""
    return [Loss(row["buffer"] or "", int(row["cpu"]), None,
                 next((int(n) for n in (row["n1"], row["n2"], row["n3"]) if n), None))
            for row in frame.iter_rows(named=True)]


def raise_no_events(path: Path, lines: pl.Series, unparsed: pl.DataFrame) -> None:
    if unparsed.height:
        lineno, text = unparsed.select("line", "text").row(0)
        why = unparsed["why"][0] if "why" in unparsed.columns else None
        got = f"an event line with its {why}" if why else "a line"
        raise CaptureError(
            path,
            f"line {lineno + 1}",
            f"expected a trace-cmd report or tracefs trace line, got {got}: {_excerpt(text)!r}",
        )
    raise CaptureError(
        path,
        None if lines.len() == 0 else "line 1",
        "expected a trace-cmd report or tracefs trace line, got no event lines"
        + (" (empty file)" if lines.len() == 0 else ""),
    )


def _excerpt(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def looks_binary(data: bytes | mmap.mmap) -> bool:
    """True for data that is not text at all (NUL bytes or mostly non-printable in the first KB)."""
    head = data[:1024]
    if b"\x00" in head:
        return True
    printable = sum(1 for b in head if b in (9, 10, 13) or 32 <= b < 127 or b >= 128)
    return bool(head) and printable < 0.9 * len(head)
