"""The limits on what a capture can make kvmtrace allocate or read, in one place (docs/reliability.md).

Each limit is derived from the input's own size where that is possible (a table can never need
more than the file's bytes allow; compressed data is allowed a ratio of its compressed size),
capped by a memory budget (half the machine's memory, or of the address-space limit when one is
set), and can be raised with an environment variable. Exceeding one is a ``LimitExceeded``: one
line naming the file, the place, what would be needed, the limit and how to raise it (exit 2).
"""

from __future__ import annotations

import os
import resource
from dataclasses import dataclass
from pathlib import Path

from kvmtrace.errors import CaptureError
from kvmtrace.fileformats.manifest_schema import MAX_MANIFEST_BYTES, MAX_MANIFEST_DEPTH

MAX_CPU_ID = (1 << 16) - 1  # CPU ids in a capture (Linux NR_CPUS is at most 8192)
MAX_PID = (1 << 31) - 1
MAX_LINE_BYTES = 1 << 20  # a text line longer than this is not a trace line
INFLATE_RATIO = 128  # compressed data may inflate to this many times its size (trace data: 5-30x)
INFLATE_FLOOR = 64 << 20  # ... and always to this much
TABLE_FACTOR = 16  # the typed tables of a read may take this many times the (uncompressed) data
TABLE_FLOOR = 256 << 20
MAX_TS_NS = (1 << 63) - 1  # timestamps are int64 nanoseconds: about 292 years
MAX_TS_SECONDS = MAX_TS_NS // 1_000_000_000


@dataclass(frozen=True)
class Limit:
    """One user-visible limit: its name, the environment variable that overrides it, its docs."""

    name: str
    env: str


INFLATE = Limit("decompressed size", "KVMTRACE_MAX_INFLATE")
TABLES = Limit("table memory", "KVMTRACE_MAX_TABLE_BYTES")
LINE = Limit("line length", "KVMTRACE_MAX_LINE")


class LimitExceeded(CaptureError):
    """Reading would need more than a limit allows."""

    def __init__(self, path: str | Path | None, where: str | None, what: str, needed: int, limit: int,
                 which: Limit) -> None:
        super().__init__(path, where, f"{what} needs {_size(needed)}, more than the {which.name} limit of "
                                      f"{_size(limit)} (set {which.env}=BYTES to raise it; docs/reliability.md)")


def _size(n: int) -> str:
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift:
            return f"{n / (1 << shift):.1f} {unit}"
    return f"{n} bytes"


def _override(limit: Limit) -> int | None:
    text = os.environ.get(limit.env, "").strip()
    return int(text) if text.isdigit() and int(text) > 0 else None


def memory_budget() -> int:
    """Half the machine's memory, or of the address-space limit when that is lower."""
    try:
        physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        physical = 8 << 30
    soft, _hard = resource.getrlimit(resource.RLIMIT_AS)
    if soft != resource.RLIM_INFINITY and 0 < soft < physical:
        physical = soft
    return max(physical // 2, 64 << 20)


def inflate_limit(compressed: int) -> int:
    """How large data of ``compressed`` bytes may inflate to."""
    return _override(INFLATE) or min(memory_budget(), max(INFLATE_FLOOR, INFLATE_RATIO * compressed))


def table_limit(data_bytes: int) -> int:
    """How much memory the typed tables of ``data_bytes`` of records may take."""
    return _override(TABLES) or min(memory_budget(), max(TABLE_FLOOR, TABLE_FACTOR * data_bytes))


def line_limit() -> int:
    return _override(LINE) or MAX_LINE_BYTES


def check_inflate(path: str | Path, where: str | None, what: str, needed: int, compressed: int) -> None:
    limit = inflate_limit(compressed)
    if needed > limit:
        raise LimitExceeded(path, where, what, needed, limit, INFLATE)


def check_tables(path: str | Path, what: str, needed: int, data_bytes: int) -> None:
    limit = table_limit(data_bytes)
    if needed > limit:
        raise LimitExceeded(path, None, what, needed, limit, TABLES)


def describe() -> dict[str, str]:
    """The limits in force (for docs and tests)."""
    return {
        "cpu ids": f"0..{MAX_CPU_ID}",
        "text line": f"{line_limit()} bytes ({LINE.env})",
        "decompressed size": f"{INFLATE_RATIO}x the compressed size, at least {_size(INFLATE_FLOOR)}, at most "
                             f"{_size(memory_budget())} ({INFLATE.env})",
        "table memory": f"{TABLE_FACTOR}x the record data, at least {_size(TABLE_FLOOR)}, at most "
                        f"{_size(memory_budget())} ({TABLES.env})",
        "capture.json": f"{_size(MAX_MANIFEST_BYTES)}, {MAX_MANIFEST_DEPTH} levels",
        "timestamps": f"0..{MAX_TS_SECONDS} s (int64 ns)",
    }
