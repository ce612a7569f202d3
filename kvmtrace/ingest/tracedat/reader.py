"""Parse the trace.dat container (versions 6 and 7): headers, sections, options, buffers, CPU data.

This module knows the file layout only; the ring-buffer pages themselves are walked by
``pages`` and decoded into tables by ``decode``. Everything is read from a memory map, and
compressed CPU data (v7 zstd or zlib chunks) is inflated once into one array for all CPUs.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import struct
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kvmtrace.errors import CaptureError
from kvmtrace.fileformats.formats import EventFormat, FieldFormat, parse_event_format, parse_header_page

# The file format's constants live in one place: fileformats/tracedat.py (standard library only).
from kvmtrace.fileformats.tracedat import (
    MAGIC,
    OPT_BUFFER,
    OPT_BUFFER_TEXT,
    OPT_CMDLINES,
    OPT_CPUCOUNT,
    OPT_CPUSTAT,
    OPT_DATE,
    OPT_DONE,
    OPT_EVENT_FORMATS,
    OPT_FTRACE_EVENTS,
    OPT_GUEST,
    OPT_HEADER_INFO,
    OPT_HOOK,
    OPT_KALLSYMS,
    OPT_OFFSET,
    OPT_PRINTK,
    OPT_PROCMAPS,
    OPT_TIME_SHIFT,
    OPT_TRACECLOCK,
    OPT_TRACEID,
    OPT_TSC2NSEC,
    OPT_UNAME,
    OPT_VERSION,
)
from kvmtrace.fileformats.tracedat import SEC_FL_COMPRESS as SECTION_FLAG_COMPRESSED
from kvmtrace.ingest.files import open_regular
from kvmtrace.ingest.inflate import InflateError, inflate_exact
from kvmtrace.ingest.limits import MAX_CPU_ID, MAX_TS_NS, check_inflate
from kvmtrace.ingest.memory import without_hugepage_advice
from kvmtrace.ingest.tables import EventTables

OPTION_NAMES = {
    OPT_DATE: "DATE", OPT_CPUSTAT: "CPUSTAT", OPT_BUFFER: "BUFFER", OPT_TRACECLOCK: "TRACECLOCK",
    OPT_UNAME: "UNAME", OPT_HOOK: "HOOK", OPT_OFFSET: "OFFSET", OPT_CPUCOUNT: "CPUCOUNT",
    OPT_VERSION: "VERSION", OPT_PROCMAPS: "PROCMAPS", OPT_TRACEID: "TRACEID",
    OPT_TIME_SHIFT: "TIME_SHIFT", OPT_GUEST: "GUEST", OPT_TSC2NSEC: "TSC2NSEC",
    OPT_HEADER_INFO: "HEADER_INFO", OPT_FTRACE_EVENTS: "FTRACE_EVENTS",
    OPT_EVENT_FORMATS: "EVENT_FORMATS", OPT_KALLSYMS: "KALLSYMS", OPT_PRINTK: "PRINTK",
    OPT_CMDLINES: "CMDLINES", OPT_BUFFER_TEXT: "BUFFER_TEXT",
}


@dataclass
class CpuData:
    """One CPU's ring-buffer pages of one buffer: whole pages at ``start`` in the file's blob."""

    cpu: int
    file_offset: int  # where the data starts in the file (compressed files: the chunk table)
    file_size: int
    compressed: bool = False
    start: int = 0  # offset of the first page in TraceDatFile.blob
    length: int = 0  # bytes of whole pages
    trailing_bytes: int = 0  # bytes after the last whole page (truncated data)


@dataclass
class BufferData:
    """One ftrace buffer (instance) in the file."""

    name: str
    clock: str
    page_size: int
    cpus: list[CpuData] = field(default_factory=list)
    latency_text: str | None = None


@dataclass
class TimeShift:
    """TIME_SHIFT option: per-CPU guest->host timestamp corrections."""

    peer_trace_id: int
    flags: int
    samples: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]  # per cpu: time, offset, scaling, fraction


@dataclass
class TimestampCorrection:
    """How raw ring-buffer timestamps become reported nanoseconds (as trace-cmd report does it)."""

    offset_ns: int = 0  # OFFSET plus DATE (us -> ns)
    tsc2nsec: tuple[int, int, int] | None = None  # mult, shift, offset
    time_shift: TimeShift | None = None

    def describe(self) -> list[str]:
        out = []
        if self.offset_ns:
            out.append(f"offset {self.offset_ns} ns")
        if self.tsc2nsec:
            out.append("tsc2nsec mult={} shift={}".format(*self.tsc2nsec[:2]))
        if self.time_shift:
            out.append("time_shift (guest->host)")
        return out


@dataclass
class TraceDatFile:
    """Everything in a trace.dat except the decoded events."""

    path: str
    version: int
    big_endian: bool
    long_size: int  # user-space long size recorded by trace-cmd
    page_size: int
    compression: str
    compression_version: str
    header_page: dict[str, FieldFormat]
    header_event_text: str
    formats: list[EventFormat]
    cmdlines: dict[int, str]
    buffers: list[BufferData]
    correction: TimestampCorrection
    options: dict[str, Any]
    cpu_count: int | None
    kallsyms_size: int = 0
    printk_size: int = 0
    blob: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint8))  # all CPU data (uint8)
    mapping: mmap.mmap | None = None  # the file's map when ``blob`` is the file itself (not inflated)

    def drop_pages(self, start: int, end: int) -> None:
        """Let go of the blob's bytes [start, end) read so far: a file map's pages leave the process
        (they stay in the page cache), so looking at every page header does not map the whole file in."""
        if self.mapping is None or end <= start:
            return
        first = start - start % mmap.PAGESIZE
        with contextlib.suppress(OSError, ValueError, AttributeError):  # only memory is at stake
            self.mapping.madvise(mmap.MADV_DONTNEED, first, min(end, len(self.mapping)) - first)

    def cpu_pages(self, cpu: CpuData) -> np.ndarray:
        """The whole pages of one CPU as a uint8 view into ``blob``."""
        return self.blob[cpu.start:cpu.start + cpu.length]

    @property
    def endian_char(self) -> str:
        return ">" if self.big_endian else "<"

    @property
    def commit_size(self) -> int:
        """Size of the page header's commit word: the kernel's long (4 on 32-bit ARM)."""
        return self.header_page["commit"].size

    @property
    def page_data_offset(self) -> int:
        return self.header_page["data"].offset


class _Cursor:
    """Bounds-checked reads from a byte buffer, raising CaptureError with the file offset."""

    def __init__(self, buf: memoryview | bytes, path: str, endian: str = "<", base: int = 0,
                 what: str = "") -> None:
        self.buf = buf
        self.pos = 0
        self.path = path
        self.endian = endian
        self.base = base  # file offset of buf[0]; -1 when buf is inflated section data
        self.what = what

    def where(self, pos: int | None = None) -> str:
        p = self.pos if pos is None else pos
        if self.base < 0:
            return f"{self.what} byte {p}"
        return f"offset {self.base + p:#x}"

    def need(self, n: int, expected: str) -> None:
        if n < 0 or self.pos + n > len(self.buf):
            raise CaptureError(self.path, self.where(),
                               f"file ends early: expected {expected} ({n} bytes), "
                               f"only {max(0, len(self.buf) - self.pos)} left")

    def bytes(self, n: int, expected: str) -> bytes:
        self.need(n, expected)
        out = bytes(self.buf[self.pos:self.pos + n])
        self.pos += n
        return out

    def uint(self, size: int, expected: str) -> int:
        self.need(size, expected)
        fmt = {2: "H", 4: "I", 8: "Q"}[size]
        (value,) = struct.unpack_from(self.endian + fmt, self.buf, self.pos)
        self.pos += size
        return int(value)

    def cstring(self, expected: str, limit: int = 1 << 20) -> str:
        end = bytes(self.buf[self.pos:self.pos + limit]).find(b"\0")
        if end < 0:
            raise CaptureError(self.path, self.where(), f"expected a NUL-terminated {expected}")
        text = bytes(self.buf[self.pos:self.pos + end]).decode("utf-8", "replace")
        self.pos += end + 1
        return text

    def sized_text(self, size_bytes: int, expected: str) -> str:
        size = self.uint(size_bytes, f"size of {expected}")
        return self.bytes(size, expected).decode("utf-8", "replace")


def read_structure(path: str | Path, populate: bool = True) -> TraceDatFile:
    """Open a trace.dat file and parse everything but the events (CPU data is inflated). ``populate``:
    map the whole file in at once (a windowed read leaves the pages it skips on disk)."""
    p = str(path)
    fd = open_regular(p)
    try:
        size = os.fstat(fd).st_size
        if size == 0:
            raise CaptureError(p, "offset 0x0", "empty file: expected a trace.dat (magic 17 08 44 'tracing')")
        # MAP_POPULATE: the kernel maps the whole file at once instead of page fault by page fault
        flags = mmap.MAP_SHARED | (getattr(mmap, "MAP_POPULATE", 0) if populate else 0)
        mm = mmap.mmap(fd, 0, flags=flags, prot=mmap.PROT_READ)
    except OSError as exc:
        raise CaptureError(p, None, f"cannot open: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
    view = memoryview(mm)
    return _parse(view, p)


def _parse(view: memoryview, path: str) -> TraceDatFile:
    cur = _Cursor(view, path)
    magic = cur.bytes(min(10, len(view)), "magic")
    if magic != MAGIC:
        raise CaptureError(path, "offset 0x0",
                           f"not a trace.dat file: expected magic 17 08 44 'tracing', got {magic[:10]!r}")
    version_txt = cur.cstring("version string", 16)
    if version_txt not in ("6", "7"):
        raise CaptureError(path, cur.where(cur.pos - len(version_txt) - 1),
                           f"unsupported trace.dat version {version_txt!r}: expected 6 or 7")
    endian_flag = cur.bytes(1, "endianness byte")[0]
    if endian_flag not in (0, 1):
        raise CaptureError(path, cur.where(cur.pos - 1), f"bad endianness byte {endian_flag}: expected 0 or 1")
    cur.endian = ">" if endian_flag else "<"
    long_size = cur.bytes(1, "long size")[0]
    if long_size not in (4, 8):
        raise CaptureError(path, cur.where(cur.pos - 1), f"bad long size {long_size}: expected 4 or 8")
    page_size = cur.uint(4, "page size")
    if page_size < 64 or page_size & (page_size - 1):
        raise CaptureError(path, cur.where(cur.pos - 4), f"bad page size {page_size}: expected a power of two")
    builder = _Builder(view, path, cur.endian, int(version_txt), bool(endian_flag), long_size, page_size)
    if version_txt == "7":
        builder.parse_v7(cur)
    else:
        builder.parse_v6(cur)
    return builder.result()


class _Builder:
    """Collects the pieces of a trace.dat while its parts are parsed."""

    def __init__(self, view: memoryview, path: str, endian: str, version: int, big_endian: bool,
                 long_size: int, page_size: int) -> None:
        self.view = view
        self.path = path
        self.endian = endian
        self.version = version
        self.big_endian = big_endian
        self.long_size = long_size
        self.page_size = page_size
        self.compression = "none"
        self.compression_version = ""
        self.header_page: dict[str, FieldFormat] | None = None
        self.header_event_text = ""
        self.formats: list[EventFormat] = []
        self.cmdlines: dict[int, str] = {}
        self.buffers: list[BufferData] = []
        self.correction = TimestampCorrection()
        self.options: dict[str, Any] = {}
        self.cpu_count: int | None = None
        self.trace_clock: str | None = None
        self.kallsyms_size = 0
        self.printk_size = 0
        self.cpustats: list[str] = []
        self.strings: dict[int, str] = {}
        self._v6_buffers: list[tuple[str, int]] = []

    # ---- shared metadata parts -------------------------------------------------------------
    def read_header_info(self, cur: _Cursor) -> None:
        tag = cur.bytes(12, "'header_page' tag")
        if tag != b"header_page\0":
            raise CaptureError(self.path, cur.where(cur.pos - 12), f"expected 'header_page', got {tag!r}")
        where = cur.where()
        text = cur.sized_text(8, "header_page format")
        self.header_page = parse_header_page(text, self.path)
        _check_header_page(self.header_page, self.path, where)
        tag = cur.bytes(13, "'header_event' tag")
        if tag != b"header_event\0":
            raise CaptureError(self.path, cur.where(cur.pos - 13), f"expected 'header_event', got {tag!r}")
        self.header_event_text = cur.sized_text(8, "header_event format")

    def read_ftrace_formats(self, cur: _Cursor) -> None:
        count = cur.uint(4, "ftrace format count")
        for _ in range(count):
            text = cur.sized_text(8, "ftrace event format")
            self.formats.append(parse_event_format(text, "ftrace", self.path))

    def read_event_formats(self, cur: _Cursor) -> None:
        systems = cur.uint(4, "event system count")
        for _ in range(systems):
            system = cur.cstring("event system name")
            count = cur.uint(4, f"event count of system {system}")
            for _ in range(count):
                text = cur.sized_text(8, f"event format in system {system}")
                self.formats.append(parse_event_format(text, system, self.path))

    def read_kallsyms(self, cur: _Cursor) -> None:
        size = cur.uint(4, "kallsyms size")
        cur.need(size, "kallsyms")
        cur.pos += size
        self.kallsyms_size = size

    def read_printk(self, cur: _Cursor) -> None:
        size = cur.uint(4, "printk formats size")
        cur.need(size, "printk formats")
        cur.pos += size
        self.printk_size = size

    def read_cmdlines(self, cur: _Cursor) -> None:
        text = cur.sized_text(8, "saved cmdlines")
        for line in text.splitlines():
            pid_txt, _, comm = line.strip().partition(" ")
            if pid_txt.isascii() and pid_txt.isdigit() and len(pid_txt) <= 10:
                self.cmdlines[int(pid_txt)] = comm

    # ---- options --------------------------------------------------------------------------
    def handle_option(self, opt_id: int, data: bytes, where: str) -> int | None:
        """Apply one option; returns the next options-section offset for DONE (v7)."""
        if opt_id == OPT_DONE:
            return struct.unpack_from(self.endian + "Q", data)[0] if len(data) >= 8 else 0
        handler = self._handlers().get(opt_id)
        if handler is None:
            self.options.setdefault("unknown_options", []).append(OPTION_NAMES.get(opt_id, f"unknown({opt_id})"))
        else:
            handler(opt_id, data, f"option {OPTION_NAMES.get(opt_id, opt_id)} at {where}")
        return None

    def _handlers(self) -> dict[int, Any]:
        sections = dict.fromkeys((OPT_HEADER_INFO, OPT_FTRACE_EVENTS, OPT_EVENT_FORMATS, OPT_KALLSYMS, OPT_PRINTK,
                                  OPT_CMDLINES), self._section_option)
        texts = dict.fromkeys((OPT_UNAME, OPT_VERSION, OPT_HOOK, OPT_PROCMAPS), self._text_option)
        return {OPT_BUFFER: self._buffer_option, OPT_BUFFER_TEXT: self._buffer_option, OPT_DATE: self._date_option,
                OPT_OFFSET: self._date_option, OPT_TSC2NSEC: self._tsc2nsec_option,
                OPT_TIME_SHIFT: self._time_shift_option, OPT_CPUSTAT: self._cpustat_option,
                OPT_TRACECLOCK: self._clock_option, OPT_CPUCOUNT: self._cpucount_option,
                OPT_TRACEID: self._traceid_option, **sections, **texts}

    def _cursor(self, data: bytes, where: str) -> _Cursor:
        return _Cursor(data, self.path, self.endian, -1, f"{where},")

    def _date_option(self, opt_id: int, data: bytes, where: str) -> None:
        """DATE (microseconds) and OFFSET (nanoseconds): integers added to every timestamp."""
        name = OPTION_NAMES[opt_id]
        text = _c_string(data)
        value = _int64_text(text)
        if value is None:
            unit = "µs" if opt_id == OPT_DATE else "ns"
            raise CaptureError(self.path, where, f"expected a 64-bit integer ({unit}), got {text[:40]!r}")
        self.options[name] = text
        total = self.correction.offset_ns + value * (1000 if opt_id == OPT_DATE else 1)
        if not -MAX_TS_NS <= total <= MAX_TS_NS:
            raise CaptureError(self.path, where, f"timestamp offset {total} ns does not fit 64 bits")
        self.correction.offset_ns = total

    def _tsc2nsec_option(self, _opt_id: int, data: bytes, where: str) -> None:
        if len(data) < 16:  # trace-cmd ignores it too
            return
        cur = self._cursor(data, where)
        mult, shift, off = cur.uint(4, "mult"), cur.uint(4, "shift"), cur.uint(8, "offset")
        if shift > 32:
            raise CaptureError(self.path, where, f"TSC shift {shift}: expected 0 to 32")
        self.correction.tsc2nsec = (mult, shift, off)
        self.options["TSC2NSEC"] = {"mult": mult, "shift": shift, "offset": off}

    def _time_shift_option(self, _opt_id: int, data: bytes, where: str) -> None:
        if len(data) < 16:  # trace-cmd ignores it too
            return
        self.correction.time_shift = _parse_time_shift(self._cursor(data, where))
        self.options["TIME_SHIFT"] = {"cpus": len(self.correction.time_shift.samples)}

    def _cpustat_option(self, _opt_id: int, data: bytes, _where: str) -> None:
        self.cpustats.append(_c_string(data))

    def _clock_option(self, _opt_id: int, data: bytes, _where: str) -> None:
        self.trace_clock = _selected_clock(_c_string(data))
        self.options["TRACECLOCK"] = self.trace_clock

    def _cpucount_option(self, _opt_id: int, data: bytes, where: str) -> None:
        count = self._cursor(data, where).uint(4, "cpu count")
        if count > MAX_CPU_ID + 1:
            raise CaptureError(self.path, where, f"cpu count {count}: expected at most {MAX_CPU_ID + 1}")
        self.cpu_count = count

    def _traceid_option(self, _opt_id: int, data: bytes, _where: str) -> None:
        if len(data) >= 8:
            self.options["TRACEID"] = struct.unpack_from(self.endian + "Q", data)[0]

    def _section_option(self, opt_id: int, data: bytes, where: str) -> None:
        self.options.setdefault("_sections", {})[opt_id] = self._cursor(data, where).uint(8, "section offset")

    def _text_option(self, opt_id: int, data: bytes, _where: str) -> None:
        self.options[OPTION_NAMES[opt_id]] = _c_string(data)

    def _buffer_option(self, opt_id: int, data: bytes, where: str) -> None:
        cur = self._cursor(data, where)
        offset = cur.uint(8, "buffer offset")
        name = cur.cstring("buffer name")
        if self.version < 7:
            self._v6_buffers.append((name, offset))
            return
        clock = cur.cstring("buffer clock")
        if opt_id == OPT_BUFFER_TEXT:
            self._add_buffer(BufferData(name, clock, self.page_size, latency_text=self._latency_text(offset)))
            return
        page_size = cur.uint(4, "buffer page size")
        if name == "":  # like trace-cmd: the top buffer's pages have the file's page size
            page_size = self.page_size
        elif page_size != self.page_size:  # trace-cmd 3.1 and kvmtrace's pages are the file's page size
            raise CaptureError(self.path, where, f"buffer {name!r} page size {page_size}: expected the file's page "
                               f"size {self.page_size} (other sub-buffer sizes are not supported)")
        ncpus = cur.uint(4, "buffer cpu count")
        entries = [(cur.uint(4, "cpu id"), cur.uint(8, "cpu data offset"), cur.uint(8, "cpu data size"))
                   for _ in range(min(ncpus, len(data) // 20 + 1))]
        buf = BufferData(name, clock, page_size)
        compressed = bool(self._section_flags(offset) & SECTION_FLAG_COMPRESSED) if entries else False
        for cpu, off, size in entries:
            if cpu > MAX_CPU_ID or any(c.cpu == cpu for c in buf.cpus):
                raise CaptureError(self.path, where, f"buffer {name!r} cpu id {cpu}: expected each CPU once, "
                                   f"at most {MAX_CPU_ID}")
            buf.cpus.append(self._cpu_data(cpu, off, size, page_size, compressed))
        self._add_buffer(buf)

    def _add_buffer(self, buf: BufferData) -> None:
        """As trace-cmd: another description of the top buffer replaces the first, instances add up."""
        if buf.name == "":
            self.buffers = [b for b in self.buffers if b.name != ""]
            self.buffers.insert(0, buf)
        else:
            self.buffers.append(buf)

    # ---- sections (v7) --------------------------------------------------------------------
    def _section_header(self, offset: int) -> tuple[int, int, int, _Cursor]:
        cur = _Cursor(self.view, self.path, self.endian)
        cur.pos = offset
        sec_id = cur.uint(2, "section id")
        flags = cur.uint(2, "section flags")
        cur.uint(4, "section description id")
        size = cur.uint(8, "section size")
        return sec_id, flags, size, cur

    def _section_flags(self, offset: int) -> int:
        return self._section_header(offset)[1]

    def section_cursor(self, offset: int, expect_id: int) -> _Cursor:
        sec_id, flags, size, cur = self._section_header(offset)
        if sec_id != expect_id:
            raise CaptureError(self.path, f"offset {offset:#x}",
                               f"expected section {OPTION_NAMES.get(expect_id, expect_id)} "
                               f"(id {expect_id}), found id {sec_id}")
        if not flags & SECTION_FLAG_COMPRESSED:
            cur.need(size, f"section {OPTION_NAMES.get(expect_id, expect_id)} of {size} bytes")
            return _Cursor(self.view[cur.pos:cur.pos + size], self.path, self.endian, cur.pos)
        zsize = cur.uint(4, "compressed size")
        usize = cur.uint(4, "uncompressed size")
        cur.need(zsize, "compressed section data")
        check_inflate(self.path, f"offset {offset:#x}", f"section {OPTION_NAMES.get(expect_id, expect_id)}", usize,
                      len(self.view))
        data = self._inflate(self.view[cur.pos:cur.pos + zsize], usize, f"offset {offset:#x}")
        return _Cursor(data, self.path, self.endian, -1,
                       f"section {OPTION_NAMES.get(expect_id, expect_id)} at {offset:#x},")

    def _inflate(self, raw: bytes | memoryview, usize: int, where: str, decompressor: Any = None) -> bytes:
        """One compressed section or chunk, which must inflate to ``usize`` bytes (``decompressor``: a
        zstd one to reuse, else a new one)."""
        try:
            return inflate_exact(self.compression, raw, usize, decompressor)
        except InflateError as exc:
            raise CaptureError(self.path, where, str(exc)) from None

    def parse_v7(self, cur: _Cursor) -> None:
        self.compression = cur.cstring("compression name", 64)
        self.compression_version = cur.cstring("compression version", 64)
        if self.compression not in ("none", "zstd", "zlib"):
            raise CaptureError(self.path, cur.where(), f"unsupported compression {self.compression!r}: "
                               "expected none, zstd or zlib")
        next_options = cur.uint(8, "offset of the first options section")
        seen: set[int] = set()
        while next_options:
            if next_options in seen or next_options >= len(self.view):
                raise CaptureError(self.path, f"offset {next_options:#x}",
                                   "options section offset points outside the file or loops")
            seen.add(next_options)
            next_options = self._options_section(next_options)
        sections = self.options.pop("_sections", {})
        if OPT_HEADER_INFO not in sections:
            raise CaptureError(self.path, None, "no HEADER_INFO section: cannot read ring-buffer pages")
        self.read_header_info(self.section_cursor(sections[OPT_HEADER_INFO], OPT_HEADER_INFO))
        readers = {OPT_FTRACE_EVENTS: self.read_ftrace_formats, OPT_EVENT_FORMATS: self.read_event_formats,
                   OPT_KALLSYMS: self.read_kallsyms, OPT_PRINTK: self.read_printk,
                   OPT_CMDLINES: self.read_cmdlines}
        for sec_id, reader in readers.items():
            if sec_id in sections:
                reader(self.section_cursor(sections[sec_id], sec_id))

    def _options_section(self, offset: int) -> int:
        cur = self.section_cursor(offset, OPT_DONE)
        while True:
            where = cur.where()
            opt_id = cur.uint(2, "option id")
            size = cur.uint(4, "option size")
            data = cur.bytes(size, f"option {OPTION_NAMES.get(opt_id, opt_id)} data")
            nxt = self.handle_option(opt_id, data, where)
            if opt_id == OPT_DONE:
                return int(nxt or 0)

    # ---- v6 -------------------------------------------------------------------------------
    def parse_v6(self, cur: _Cursor) -> None:
        self.read_header_info(cur)
        self.read_ftrace_formats(cur)
        self.read_event_formats(cur)
        self.read_kallsyms(cur)
        self.read_printk(cur)
        self.read_cmdlines(cur)
        ncpus = cur.uint(4, "cpu count")
        if ncpus > MAX_CPU_ID + 1:
            raise CaptureError(self.path, cur.where(cur.pos - 4),
                               f"cpu count {ncpus}: expected at most {MAX_CPU_ID + 1}")
        kind = self._v6_options(cur)
        if kind == "latency":
            self.buffers.append(BufferData("", self.trace_clock or "local", self.page_size,
                                           latency_text=bytes(self.view[cur.pos:]).decode("utf-8", "replace")))
            return
        top = self._v6_flyrecord(cur, "", ncpus)
        if "TRACECLOCK" in self.options:
            clock_text = cur.sized_text(8, "trace clock")
            self.trace_clock = _selected_clock(clock_text)
        top.clock = self.trace_clock or "local"
        self.buffers.insert(0, top)
        for name, offset in self._v6_buffers:
            sub = _Cursor(self.view, self.path, self.endian)
            sub.pos = offset
            self._v6_options(sub)
            buf = self._v6_flyrecord(sub, name, ncpus)
            buf.clock = top.clock
            self.buffers.append(buf)

    def _v6_options(self, cur: _Cursor) -> str:
        tag = cur.bytes(10, "'options', 'flyrecord' or 'latency' tag")
        if tag.startswith(b"options"):
            while True:
                where = cur.where()
                opt_id = cur.uint(2, "option id")
                if opt_id == OPT_DONE:
                    break
                size = cur.uint(4, "option size")
                data = cur.bytes(size, f"option {OPTION_NAMES.get(opt_id, opt_id)} data")
                self.handle_option(opt_id, data, where)
            tag = cur.bytes(10, "'flyrecord' or 'latency' tag")
        if tag.startswith(b"flyrecord"):
            return "flyrecord"
        if tag.startswith(b"latency"):
            return "latency"
        raise CaptureError(self.path, cur.where(cur.pos - 10), f"expected 'flyrecord' or 'latency', got {tag!r}")

    def _v6_flyrecord(self, cur: _Cursor, name: str, ncpus: int) -> BufferData:
        buf = BufferData(name, "local", self.page_size)
        for cpu in range(ncpus):
            off = cur.uint(8, f"cpu {cpu} data offset")
            size = cur.uint(8, f"cpu {cpu} data size")
            buf.cpus.append(self._cpu_data(cpu, off, size, self.page_size, False))
        return buf

    # ---- CPU data -------------------------------------------------------------------------
    def _cpu_data(self, cpu: int, offset: int, size: int, page_size: int, compressed: bool) -> CpuData:
        if size and not compressed:
            avail = max(0, min(size, len(self.view) - offset))
            if avail < size:
                raise CaptureError(self.path, f"offset {offset:#x}",
                                   f"file truncated: cpu {cpu} data needs {size} bytes, only {avail} present")
        return CpuData(cpu, offset, size, compressed)

    def _chunk_table(self, cpu: CpuData) -> list[tuple[int, int, int]]:
        """(file position, compressed size, inflated size) of each chunk of one CPU."""
        cur = _Cursor(self.view, self.path, self.endian)
        cur.pos = cpu.file_offset
        count = cur.uint(4, f"cpu {cpu.cpu} chunk count")
        chunks = []
        for _ in range(count):
            zsize = cur.uint(4, f"cpu {cpu.cpu} chunk compressed size")
            usize = cur.uint(4, f"cpu {cpu.cpu} chunk size")
            cur.need(zsize, f"cpu {cpu.cpu} compressed chunk")
            chunks.append((cur.pos, zsize, usize))
            cur.pos += zsize
        return chunks

    def materialise(self) -> np.ndarray:
        """Place every CPU's pages in one uint8 blob: the file map itself, or inflated data."""
        cpus = [c for b in self.buffers for c in b.cpus if c.file_size]
        if not any(c.compressed for c in cpus):
            for c in cpus:
                c.start, c.length, c.trailing_bytes = _whole(c.file_offset, c.file_size, self.page_size)
            return np.frombuffer(self.view, dtype=np.uint8)
        tables = {id(c): self._chunk_table(c) if c.compressed else [] for c in cpus}
        sizes = {id(c): sum(t[2] for t in tables[id(c)]) if c.compressed else c.file_size for c in cpus}
        total = sum(_round_up(s, self.page_size) for s in sizes.values())
        check_inflate(self.path, None, "the CPU data", total, len(self.view))
        blob = np.empty(total, np.uint8)
        pos = 0
        jobs = []
        for c in cpus:
            jobs.append((pos, c, tables[id(c)]))
            c.start, c.length, c.trailing_bytes = _whole(pos, sizes[id(c)], self.page_size)
            pos += _round_up(sizes[id(c)], self.page_size)
        with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:  # zstd/zlib release the GIL
            list(pool.map(lambda job: self._fill(blob, *job), jobs))
        return blob

    def _fill(self, blob: np.ndarray, pos: int, cpu: CpuData, chunks: list[tuple[int, int, int]]) -> None:
        if not cpu.compressed:
            blob[pos:pos + cpu.file_size] = np.frombuffer(self.view, np.uint8, cpu.file_size, cpu.file_offset)
            return
        decompressor = None
        if self.compression == "zstd":
            import zstandard

            decompressor = zstandard.ZstdDecompressor()
        for start, zsize, usize in chunks:
            chunk = self._inflate(self.view[start:start + zsize], usize, f"offset {start:#x} (cpu {cpu.cpu} chunk)",
                                  decompressor)
            blob[pos:pos + usize] = np.frombuffer(chunk, dtype=np.uint8)
            pos += usize

    def _latency_text(self, offset: int) -> str:
        _sec_id, _flags, size, cur = self._section_header(offset)
        return bytes(self.view[cur.pos:cur.pos + size]).decode("utf-8", "replace")

    def result(self) -> TraceDatFile:
        if self.header_page is None:
            raise CaptureError(self.path, None, "no header_page format: cannot read ring-buffer pages")
        for b in self.buffers:
            if b.name == "" and self.version >= 7 and self.trace_clock is None:
                self.trace_clock = b.clock
        if self.cpustats:
            self.options["CPUSTAT"] = self.cpustats
        blob = self.materialise()
        return TraceDatFile(
            path=self.path, version=self.version, big_endian=self.big_endian, long_size=self.long_size,
            page_size=self.page_size, compression=self.compression,
            compression_version=self.compression_version, header_page=self.header_page,
            header_event_text=self.header_event_text, formats=self.formats, cmdlines=self.cmdlines,
            buffers=self.buffers, correction=self.correction, options=self.options,
            cpu_count=self.cpu_count, kallsyms_size=self.kallsyms_size, printk_size=self.printk_size,
            blob=blob, mapping=self.view.obj if blob.base is not None and isinstance(self.view.obj, mmap.mmap)
            and not any(c.compressed for b in self.buffers for c in b.cpus) else None,
        )


def _whole(start: int, size: int, page_size: int) -> tuple[int, int, int]:
    whole = (size // page_size) * page_size
    return start, whole, size - whole


def _round_up(n: int, page_size: int) -> int:
    return (n + page_size - 1) // page_size * page_size


def _c_string(data: bytes) -> str:
    return data.split(b"\0", 1)[0].decode("utf-8", "replace")


def _selected_clock(text: str) -> str:
    """'[local] global counter' -> 'local'; a bare name is returned as is."""
    text = text.strip()
    if "[" in text and "]" in text:
        return text[text.index("[") + 1:text.index("]")]
    return text.split()[0] if text else "local"


def _parse_time_shift(cur: _Cursor) -> TimeShift:
    """TIME_SHIFT: peer id, flags, CPU count, then per CPU a count and its times, offsets and scalings;
    then per CPU the scaling fraction bits (optional). Every count is checked against the data."""
    peer, flags, ncpus = cur.uint(8, "peer trace id"), cur.uint(4, "flags"), cur.uint(4, "cpu count")
    if ncpus > MAX_CPU_ID + 1:
        raise CaptureError(cur.path, cur.where(cur.pos - 4), f"TIME_SHIFT cpu count {ncpus}: expected at most "
                           f"{MAX_CPU_ID + 1}")
    dt = np.dtype(cur.endian + "u8")
    per_cpu = []
    for cpu in range(ncpus):
        count = cur.uint(4, f"sample count of cpu {cpu}")
        arrays = [np.frombuffer(cur.bytes(8 * count, f"{count} samples of cpu {cpu}"), dt).astype(np.int64)
                  for _ in range(3)]
        per_cpu.append(arrays)
    samples = []
    for t, o, s in per_cpu:
        left = len(cur.buf) - cur.pos
        frac = np.frombuffer(cur.bytes(8 * len(t), "fractions"), dt).astype(np.int64) if left >= 8 * len(t) \
            else np.zeros(len(t), np.int64)
        order = np.argsort(t, kind="stable")
        t, o, s, frac = t[order], o[order], s[order], frac[order]
        keep = np.concatenate(([True], t[1:] != t[:-1])) if len(t) else np.zeros(0, bool)
        samples.append((t[keep], o[keep], s[keep], np.clip(frac[keep], 0, 63)))
    return TimeShift(peer, flags, samples)


def _int64_text(text: str) -> int | None:
    """An integer option (decimal, 0x hex, or 0 octal, as strtoll reads them) that fits 64 bits, or None."""
    text = text.strip()
    if not text or len(text) > 24:
        return None
    try:
        value = int(text, 0)
    except ValueError:
        try:
            value = int(text, 10)  # "0123": strtoll base 0 reads octal, int() refuses leading zeros
        except ValueError:
            return None
    return value if -MAX_TS_NS - 1 <= value <= MAX_TS_NS else None


def _check_header_page(fields: dict[str, FieldFormat], path: str, where: str) -> None:
    """The page header trace-cmd and kvmtrace read: u64 timestamp at 0, the commit word (the kernel's
    long, 4 or 8 bytes) at 8, the data right after it."""
    ts, commit, data = fields["timestamp"], fields["commit"], fields["data"]
    problem = None
    if (ts.offset, ts.size) != (0, 8):
        problem = f"timestamp at offset {ts.offset}, size {ts.size}: expected offset 0, size 8"
    elif commit.offset != 8 or commit.size not in (4, 8):
        problem = f"commit at offset {commit.offset}, size {commit.size}: expected offset 8, size 4 or 8"
    elif data.offset != 8 + commit.size:
        problem = f"data at offset {data.offset}: expected {8 + commit.size}, after the commit word"
    if problem:
        raise CaptureError(path, where, f"header_page: {problem}")


def read_tracedat(path: str | Path, progress: Any = None,
                  window: tuple[int | None, int | None] | None = None) -> EventTables:
    """Read a trace.dat file into EventTables (see ``kvmtrace.ingest.tables``); with ``window``
    (start_ns, end_ns; None: open), only the events in it, cut at the page level before decoding."""
    from kvmtrace.ingest.tracedat.decode import decode_tracedat

    with without_hugepage_advice():
        return decode_tracedat(read_structure(path, populate=window is None), progress, window)


def time_chunks(path: str | Path, chunk_bytes: int) -> list[int]:
    """Inner edges (ns) that cut a trace.dat's data into time chunks of about ``chunk_bytes`` each, by
    the pages' own timestamps (no record is decoded): [] when it fits in one chunk."""
    from kvmtrace.ingest.tracedat.decode import page_times

    with without_hugepage_advice():
        f = read_structure(path, populate=False)
        data_bytes = sum(c.length for b in f.buffers for c in b.cpus)
        times = page_times(f)
    n = -(-data_bytes // max(1, chunk_bytes))
    if n <= 1 or len(times) < 2 * n:
        return []
    edges = sorted({int(times[len(times) * k // n]) for k in range(1, n)})
    return [e for e in edges if e > int(times[0])]
