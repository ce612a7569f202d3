"""Turn a raw capture directory (see :mod:`kvmtrace.record.rawdir`) into a version 6 ``trace.dat``.

The per-CPU pages are copied verbatim; the metadata files become the header, format, kallsyms,
printk and cmdline sections and the UNAME, TRACECLOCK and CPUSTAT options. The file is written
under a temporary name and renamed, so a failure (a full disk) never leaves a half file behind.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
from collections.abc import Iterator
from typing import IO

from kvmtrace.fileformats.writer import TraceDatWriter
from kvmtrace.record.rawdir import page_geometry
from kvmtrace.record.tracefs import RecordError, os_message

_CPU_RAW = re.compile(r"^cpu(\d+)\.raw$")
_CPU_STAT = re.compile(r"^cpu(\d+)$")


def _read(path: str, default: str | None = None) -> str:
    try:
        with open(path, errors="replace") as fh:
            return fh.read()
    except OSError as exc:
        if default is not None:
            return default
        raise RecordError(f"{path}: cannot read: {os_message(exc)}") from None


def read_info(raw: str) -> dict[str, str]:
    """``raw/info`` key=value lines (written by scripts/record.sh)."""
    out = {}
    for line in _read(os.path.join(raw, "info"), "").splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip():
            out[key.strip()] = value.strip()
    return out


def cpu_files(raw: str) -> dict[int, str]:
    return {int(m.group(1)): os.path.join(raw, n) for n in os.listdir(raw) if (m := _CPU_RAW.match(n))}


def cpu_stats(raw: str) -> dict[int, str]:
    d = os.path.join(raw, "stats")
    names = os.listdir(d) if os.path.isdir(d) else []
    return {int(m.group(1)): _read(os.path.join(d, n)) for n in names if (m := _CPU_STAT.match(n))}


def lost_from_stats(stats: dict[int, str]) -> dict[str, int]:
    """cpu -> events the kernel overwrote or dropped (overrun + commit overrun + dropped events)."""
    out = {}
    for cpu, text in sorted(stats.items()):
        total = 0
        for key in ("overrun", "commit overrun", "dropped events"):
            m = re.search(rf"^{key}:\s*(\d+)", text, re.MULTILINE)
            total += int(m.group(1)) if m else 0
        out[str(cpu)] = total
    return out


def _add_formats(w: TraceDatWriter, raw: str) -> None:
    events = os.path.join(raw, "events")
    for system in sorted(os.listdir(events)) if os.path.isdir(events) else []:
        for event in sorted(os.listdir(os.path.join(events, system))):
            text = _read(os.path.join(events, system, event, "format"), "")
            if not text:
                continue
            if system == "ftrace":
                w.add_ftrace_format(text)
            else:
                w.add_event_format(system, text)


def whole_pages(path: str, page_size: int) -> int:
    """Bytes of whole pages in a raw file (a write cut short by a full disk leaves a tail)."""
    size = os.path.getsize(path)
    return size - size % page_size


def build_writer(raw: str, tmpdir: str) -> TraceDatWriter:
    """A :class:`TraceDatWriter` holding everything in ``raw``."""
    header_page = _read(os.path.join(raw, "header_page"))
    page_size, long_size = page_geometry(header_page)
    info = read_info(raw)
    clock = _read(os.path.join(raw, "trace_clock"), "local").strip() or "local"
    big = info.get("endian", sys.byteorder) == "big"
    w = TraceDatWriter(version=6, big_endian=big, long_size=long_size, page_size=page_size,
                       trace_clock=clock, tmpdir=tmpdir)
    w.header_page = header_page
    w.header_event = _read(os.path.join(raw, "header_event"))
    _add_formats(w, raw)
    w.kallsyms = _read(os.path.join(raw, "kallsyms"), "")
    w.printk_formats = _read(os.path.join(raw, "printk_formats"), "")
    w.set_cmdlines(_read(os.path.join(raw, "saved_cmdlines"), ""))
    w.uname = _read(os.path.join(raw, "uname"), "").strip() or None
    w.tracecmd_version = "kvmtrace-record"
    files = cpu_files(raw)
    stats = cpu_stats(raw)
    ncpus = max([*files, *stats, -1]) + 1
    w.add_buffer("", ncpus=ncpus, clock=clock)
    for cpu, path in sorted(files.items()):
        size = whole_pages(path, page_size)
        if size:
            with open(path, "rb") as fh:
                w.add_raw_pages(cpu, _limited(fh, size))
    if stats:
        w.set_cpustats([stats.get(cpu, "") for cpu in range(ncpus)])
    return w


def _limited(fh: IO[bytes], size: int) -> Iterator[bytes]:
    """The first ``size`` bytes of ``fh`` in 1 MB blocks (never the whole file in memory)."""
    left = size
    while left > 0:
        block = fh.read(min(left, 1 << 20))
        if not block:
            return
        left -= len(block)
        yield block


def assemble(raw: str, out_path: str) -> None:
    """Write ``out_path`` (trace.dat) from the raw directory; atomic, RecordError on failure."""
    tmp = out_path + ".part"
    try:
        with build_writer(raw, os.path.dirname(os.path.abspath(out_path))) as w:
            w.write(tmp)
        os.replace(tmp, out_path)
    except OSError as exc:
        _unlink(tmp)
        raise RecordError(f"{out_path}: cannot write: {os_message(exc)}") from None
    except BaseException:
        _unlink(tmp)
        raise


def _unlink(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)
