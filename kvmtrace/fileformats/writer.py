"""Write trace-cmd ``trace.dat`` files (versions 6 and 7) from Python, standard library only.

The writer runs on small ARM boards inside the recorder and inside the synthesiser. It covers:

* the file header, header_page/header_event texts (generated for a 4- or 8-byte kernel long),
  ftrace and event formats grouped by system, kallsyms, printk formats and saved cmdlines;
* the options trace-cmd reads (UNAME, TRACECLOCK, CPUSTAT, OFFSET, DATE, TSC2NSEC, TIME_SHIFT,
  VERSION, CPUCOUNT) and several buffers (the top buffer ``""`` plus named instances);
* version 7 sections, uncompressed or compressed with zlib or any pluggable compressor
  (flyrecord data compressed in chunks of whole pages, as trace-cmd.dat.v7(5) describes);
* :class:`PageEncoder`, which packs a time-ordered stream of ``(timestamp_ns, payload)``
  records into kernel ring-buffer pages (event headers, TIME_EXTEND, TIME_STAMP, long
  payloads, tail padding, missed-event flags), and a fast path for raw page bytes;
* :class:`EventEncoder`, which builds an event payload from its format text and field values.

Per-CPU page data is spooled to temporary files, so millions of events never live in memory.
The module must stay Python 3.8 compatible and import nothing outside the standard library.
"""

from __future__ import annotations

import os
import shutil
import struct
import tempfile
import zlib
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Any, Protocol

from kvmtrace.fileformats.formats import EventFormat, FieldFormat, parse_format

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping, Sequence

from kvmtrace.fileformats.tracedat import (
    HEADER_EVENT_TEXT,
    MAGIC,
    MAX_SMALL_DATA,
    OPT_BUFFER,
    OPT_CMDLINES,
    OPT_CPUCOUNT,
    OPT_CPUSTAT,
    OPT_DATE,
    OPT_DONE,
    OPT_EVENT_FORMATS,
    OPT_FTRACE_EVENTS,
    OPT_HEADER_INFO,
    OPT_KALLSYMS,
    OPT_OFFSET,
    OPT_PRINTK,
    OPT_STRINGS,
    OPT_TIME_SHIFT,
    OPT_TRACECLOCK,
    OPT_TRACEID,
    OPT_TSC2NSEC,
    OPT_UNAME,
    OPT_VERSION,
    RB_MISSED_EVENTS,
    RB_MISSED_STORED,
    SEC_FL_COMPRESS,
    TS_BITS,
    TS_MASK,
    TYPE_PADDING,
    TYPE_TIME_EXTEND,
    TYPE_TIME_STAMP,
    _check_long_size,
    header_page_text,
)

# --------------------------------------------------------------------------- compression


class Compressor(Protocol):
    """What the v7 writer needs from a compression algorithm."""

    name: str
    version: str

    def compress(self, data: bytes) -> bytes: ...


class ZlibCompressor:
    """zlib (``compress2`` format), which trace-cmd reads as compression ``zlib``."""

    name = "zlib"

    def __init__(self, level: int = 6) -> None:
        self.level = level
        self.version = zlib.ZLIB_RUNTIME_VERSION

    def compress(self, data: bytes) -> bytes:
        return zlib.compress(data, self.level)


class CallableCompressor:
    """Adapts a plain ``compress(bytes) -> bytes`` callable, e.g. a zstd one."""

    def __init__(self, name: str, version: str, func: Callable[[bytes], bytes]) -> None:
        self.name = name
        self.version = version
        self._func = func

    def compress(self, data: bytes) -> bytes:
        return self._func(data)


def _resolve_compressor(compression: str | Compressor | None) -> Compressor | None:
    if compression is None or compression == "none":
        return None
    if compression == "zlib":
        return ZlibCompressor()
    if isinstance(compression, str):
        raise ValueError(f"unknown compression {compression!r}: pass a Compressor object")
    return compression


# --------------------------------------------------------------------------- event formats: fileformats/formats.py


_INT_CODES = {1: "b", 2: "h", 4: "i", 8: "q"}


def _pack_int(endian: str, size: int, value: int) -> bytes:
    code = _INT_CODES.get(size)
    if code is None:
        raise ValueError(f"cannot pack an integer of {size} bytes")
    return struct.pack(endian + code.upper(), int(value) & ((1 << (8 * size)) - 1))


def _as_bytes(value: Any, terminate: bool) -> bytes:
    if isinstance(value, str):
        raw = value.encode("utf-8")
        return raw + b"\0" if terminate else raw
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    raise TypeError(f"expected str or bytes, got {type(value).__name__}")


class EventEncoder:
    """Builds event payloads (the bytes after the ring-buffer event header) for one format."""

    def __init__(self, fmt: EventFormat | str, big_endian: bool = False, system: str = "") -> None:
        self.format = parse_format(fmt, system) if isinstance(fmt, str) else fmt
        self._endian = ">" if big_endian else "<"

    def encode(self, values: Mapping[str, Any] | None = None) -> bytes:
        """Encode ``values`` (field name -> int, str, bytes or list of ints); missing fields are 0.

        ``common_type`` defaults to the format's ID. Strings get a NUL terminator in
        ``__data_loc`` fields and trailing ``name[]`` arrays; fixed char arrays are NUL padded.
        """
        vals = dict(values or {})
        vals.setdefault("common_type", self.format.id)
        record = bytearray(self.format.fixed_size)
        dynamic: list[tuple[FieldFormat, bytes]] = []
        for fld in self.format.fields:
            value = vals.get(fld.name)
            if fld.kind in ("data_loc", "rel_loc"):
                dynamic.append((fld, self._dynamic_bytes(fld, value)))
            elif fld.kind == "tail":
                record[fld.offset:] = self._dynamic_bytes(fld, value)
            elif value is not None:
                record[fld.offset:fld.offset + fld.size] = self._fixed_bytes(fld, value)
        for fld, data in dynamic:
            start = len(record)
            base = start if fld.kind == "data_loc" else fld.offset + fld.size
            word = (len(data) << 16) | (start - (0 if fld.kind == "data_loc" else base))
            record[fld.offset:fld.offset + 4] = _pack_int(self._endian, 4, word)
            record += data
        return bytes(record)

    def _fixed_bytes(self, fld: FieldFormat, value: Any) -> bytes:
        if fld.kind == "array":
            if isinstance(value, (list, tuple)):
                size = fld.element_size
                data = b"".join(_pack_int(self._endian, size, v) for v in value)
            else:
                data = _as_bytes(value, terminate=False)
            if len(data) > fld.size:
                raise ValueError(f"{fld.name}: {len(data)} bytes do not fit in {fld.size}")
            return data.ljust(fld.size, b"\0")
        return _pack_int(self._endian, fld.size, int(value))

    def _dynamic_bytes(self, fld: FieldFormat, value: Any) -> bytes:
        if value is None:
            return b""
        if isinstance(value, (list, tuple)):
            size = fld.element_size
            return b"".join(_pack_int(self._endian, size, v) for v in value)
        return _as_bytes(value, terminate=True)


def encode_payload(fmt: EventFormat | str, values: Mapping[str, Any] | None = None,
                   big_endian: bool = False) -> bytes:
    """One-shot :meth:`EventEncoder.encode`."""
    return EventEncoder(fmt, big_endian).encode(values)


# --------------------------------------------------------------------------- ring-buffer pages


class PageEncoder:
    """Packs one CPU's time-ordered ``(timestamp_ns, payload)`` records into ring-buffer pages.

    Pages are written to ``sink`` as soon as they are full, so memory use stays at one page.
    Layout per page, as the kernel hands it to ``trace_pipe_raw``: u64 timestamp of the first
    event, a ``long_size`` commit word (data length in bits 0-26, RB_MISSED_EVENTS in bit 31,
    RB_MISSED_STORED in bit 30), then events; the unused tail holds a padding event, or the
    missed-event count right after the data when it is stored.
    """

    def __init__(self, sink: IO[bytes], page_size: int = 4096, long_size: int = 8,
                 big_endian: bool = False, absolute_timestamps: bool = False) -> None:
        _check_long_size(long_size)
        self._sink = sink
        self.page_size = page_size
        self.long_size = long_size
        self.big_endian = big_endian
        self.absolute_timestamps = absolute_timestamps
        self._e = ">" if big_endian else "<"
        self._long = self._e + ("Q" if long_size == 8 else "I")
        self._u32 = struct.Struct(self._e + "I")
        self._capacity = page_size - 8 - long_size
        self._data = bytearray()
        self._page_ts: int | None = None
        self._last_ts = 0
        self._missed: int | None = None
        self._missed_pending = False
        self._page_missed: tuple[bool, int | None] = (False, None)
        self.pages = 0
        self.events = 0

    # -- public API
    def add(self, timestamp: int, payload: bytes) -> None:
        """Append one event; starts a new page when the current one is full."""
        type_len, body = self._event_body(payload)
        if self.events and timestamp < self._last_ts:
            raise ValueError(f"timestamps go backwards: {timestamp} < {self._last_ts}")
        if self._page_ts is not None:
            delta = timestamp - self._last_ts
            prefix = self._time_prefix(timestamp, delta)
            if len(self._data) + len(prefix) + 4 + len(body) <= self._room():
                self._append(prefix, type_len, 0 if prefix else delta, body, timestamp)
                return
            self.flush()
        reserve = self.long_size if self._missed_pending and self._missed is not None else 0
        if 4 + len(body) > self._capacity - reserve:
            raise ValueError(f"payload of {len(payload)} bytes does not fit in a page")
        self._start_page(timestamp)
        self._append(b"", type_len, 0, body, timestamp)

    def add_many(self, records: Iterable[tuple[int, bytes]]) -> None:
        for timestamp, payload in records:
            self.add(timestamp, payload)

    def mark_missed(self, count: int | None = None) -> None:
        """Events were lost here: close the page; the next page carries RB_MISSED_EVENTS.

        With a ``count`` it is stored after that page's data (RB_MISSED_STORED).
        """
        self.flush()
        if not self._missed_pending:
            self._missed = count
        elif self._missed is not None and count is not None:
            self._missed += count
        else:
            self._missed = None  # one of the losses has an unknown size
        self._missed_pending = True

    def flush(self) -> None:
        """Write the current page (if it holds events)."""
        if self._page_ts is None:
            return
        self._sink.write(self._page_bytes())
        self.pages += 1
        self._page_ts = None
        self._data = bytearray()

    # -- internals
    def _room(self) -> int:
        flagged, count = self._page_missed
        return self._capacity - (self.long_size if flagged and count is not None else 0)

    def _start_page(self, timestamp: int) -> None:
        self._page_ts = timestamp
        self._last_ts = timestamp
        self._page_missed = (self._missed_pending, self._missed)
        self._missed_pending = False
        self._missed = None

    def _append(self, prefix: bytes, type_len: int, delta: int, body: bytes,
                timestamp: int) -> None:
        self._data += prefix
        self._data += self._word(type_len, delta)
        self._data += body
        self._last_ts = timestamp
        self.events += 1

    def _word(self, type_len: int, delta: int) -> bytes:
        if self.big_endian:
            return self._u32.pack((type_len << TS_BITS) | (delta & TS_MASK))
        return self._u32.pack(((delta & TS_MASK) << 5) | type_len)

    def _time_prefix(self, timestamp: int, delta: int) -> bytes:
        if self.absolute_timestamps:
            return self._word(TYPE_TIME_STAMP, timestamp) + self._u32.pack(
                (timestamp >> TS_BITS) & 0xFFFFFFFF)
        if delta > TS_MASK:
            return self._word(TYPE_TIME_EXTEND, delta) + self._u32.pack(
                (delta >> TS_BITS) & 0xFFFFFFFF)
        return b""

    def _event_body(self, payload: bytes) -> tuple[int, bytes]:
        """The event's type_len and what follows its header word (length word if any, data)."""
        size = len(payload) or 1
        rounded = (size + 3) & ~3
        data = bytes(payload).ljust(rounded, b"\0")
        if rounded <= MAX_SMALL_DATA:
            return rounded // 4, data
        return 0, self._u32.pack(rounded + 4) + data

    def _page_bytes(self) -> bytes:
        used = len(self._data)
        flagged, count = self._page_missed
        commit = used
        tail = b""
        if flagged:
            commit |= RB_MISSED_EVENTS
            if count is not None:
                commit |= RB_MISSED_STORED
                tail = struct.pack(self._long, count)
        if not tail:
            tail = self._padding(self._capacity - used)
        header = struct.pack(self._e + "Q", self._page_ts or 0) + struct.pack(self._long, commit)
        page = header + bytes(self._data) + tail
        return page.ljust(self.page_size, b"\0")

    def _padding(self, space: int) -> bytes:
        if space < 4:
            return b""
        if space < 8:
            return self._word(TYPE_PADDING, 0)
        return self._word(TYPE_PADDING, 1) + self._u32.pack(space - 4)


# --------------------------------------------------------------------------- file writer


@dataclass
class TimeShiftSample:
    """One host/guest clock correction of the TIME_SHIFT option."""

    time: int
    offset: int
    scaling: int = 1
    fraction: int = 0


@dataclass
class _CpuData:
    spool: IO[bytes]
    encoder: PageEncoder

    def finish(self) -> int:
        """Flush the partial page; return the spooled size in bytes."""
        self.encoder.flush()
        return self.spool.seek(0, os.SEEK_END)


@dataclass
class _Buffer:
    name: str
    cpus: dict[int, _CpuData] = field(default_factory=dict)
    ncpus: int = 0
    cpustats: list[str] = field(default_factory=list)
    clock: str = ""


class TraceDatWriter:
    """Collects metadata and per-CPU ring-buffer pages, then writes a v6 or v7 ``trace.dat``.

    Event data is spooled per buffer and CPU into anonymous temporary files as it arrives
    (:meth:`cpu`, :meth:`add_events`, :meth:`add_raw_pages`); :meth:`write` assembles the file.
    Use as a context manager (or call :meth:`close`) to drop the spools.
    """

    def __init__(self, *, version: int = 7, big_endian: bool = False, long_size: int = 8,
                 page_size: int = 4096, trace_clock: str = "local",
                 compression: str | Compressor | None = None, chunk_pages: int = 10,
                 absolute_timestamps: bool = False, tmpdir: str | None = None) -> None:
        if version not in (6, 7):
            raise ValueError(f"trace.dat version must be 6 or 7, got {version}")
        _check_long_size(long_size)
        if page_size <= 0 or page_size & (page_size - 1):
            raise ValueError(f"page size must be a power of two, got {page_size}")
        self.version = version
        self.big_endian = big_endian
        self.long_size = long_size
        self.page_size = page_size
        self.trace_clock = trace_clock
        self.compressor = _resolve_compressor(compression)
        if self.compressor is not None and version < 7:
            raise ValueError("compression needs trace.dat version 7")
        self.chunk_pages = max(1, chunk_pages)
        self.absolute_timestamps = absolute_timestamps
        self.tmpdir = tmpdir
        self._e = ">" if big_endian else "<"
        self.header_page = header_page_text(long_size, page_size)
        self.header_event = HEADER_EVENT_TEXT
        self.ftrace_formats: list[str] = []
        self.event_formats: dict[str, list[str]] = {}
        self.kallsyms = ""
        self.printk_formats = ""
        self.cmdlines = ""
        self.uname: str | None = None
        self.tracecmd_version: str | None = None
        self.date: str | None = None
        self.offset: int | None = None
        self.tsc2nsec: tuple[int, int, int] | None = None
        self.time_shift: tuple[int, int, list[list[TimeShiftSample]]] | None = None
        self.cpucount: int | None = None
        self.trace_id: int | None = None
        self.extra_options: list[tuple[int, bytes]] = []
        self._buffers: dict[str, _Buffer] = {"": _Buffer("")}

    # -- metadata
    def add_ftrace_format(self, text: str) -> None:
        """Add an ``events/ftrace/<event>/format`` text (e.g. ``print``)."""
        self.ftrace_formats.append(text)

    def add_event_format(self, system: str, text: str) -> None:
        """Add an ``events/<system>/<event>/format`` text."""
        self.event_formats.setdefault(system, []).append(text)

    def set_cmdlines(self, cmdlines: Mapping[int, str] | str) -> None:
        """Saved cmdlines, as ``{pid: comm}`` or the ``"pid comm\\n"`` text itself."""
        if isinstance(cmdlines, str):
            self.cmdlines = cmdlines
        else:
            self.cmdlines = "".join(f"{pid} {comm}\n" for pid, comm in sorted(cmdlines.items()))

    def set_tsc2nsec(self, mult: int, shift: int, offset: int = 0) -> None:
        """TSC2NSEC option: readers show ``(ts * mult) >> shift`` nanoseconds."""
        self.tsc2nsec = (mult, shift, offset)

    def set_time_shift(self, peer_trace_id: int, flags: int,
                       per_cpu: Sequence[Sequence[TimeShiftSample]]) -> None:
        """TIME_SHIFT option: per-CPU host/guest clock corrections."""
        self.time_shift = (peer_trace_id, flags, [list(samples) for samples in per_cpu])

    def add_option(self, option_id: int, data: bytes) -> None:
        """Any other option, already encoded in the file's endianness."""
        self.extra_options.append((option_id, data))

    # -- buffers and data
    def add_buffer(self, name: str, ncpus: int = 0, clock: str = "") -> None:
        """Declare a buffer (instance); ``""`` is the top buffer. ``ncpus`` pads empty CPUs."""
        buf = self._buffers.setdefault(name, _Buffer(name))
        buf.ncpus = max(buf.ncpus, ncpus)
        if clock:
            buf.clock = clock

    def set_cpustats(self, stats: Sequence[str], buffer: str = "") -> None:
        """Per-CPU ``per_cpu/cpuN/stats`` texts (``"CPU: N"`` lines are prefixed like trace-cmd)."""
        self.add_buffer(buffer)
        self._buffers[buffer].cpustats = list(stats)

    def cpu(self, cpu: int, buffer: str = "") -> PageEncoder:
        """The streaming :class:`PageEncoder` of one CPU of one buffer."""
        return self._cpu_data(cpu, buffer).encoder

    def add_events(self, cpu: int, events: Iterable[tuple[int, bytes]], buffer: str = "") -> None:
        """Encode a time-ordered stream of ``(timestamp_ns, payload)`` for one CPU."""
        self.cpu(cpu, buffer).add_many(events)

    def mark_missed(self, cpu: int, count: int | None = None, buffer: str = "") -> None:
        """Events were lost on this CPU at this point (see :meth:`PageEncoder.mark_missed`)."""
        self.cpu(cpu, buffer).mark_missed(count)

    def add_raw_pages(self, cpu: int, pages: bytes | Iterable[bytes] | IO[bytes] | str,
                      buffer: str = "") -> None:
        """Append already-encoded pages verbatim (bytes, iterable of bytes, file or path)."""
        data = self._cpu_data(cpu, buffer)
        data.encoder.flush()
        before = data.spool.seek(0, os.SEEK_END)
        if isinstance(pages, str):
            with open(pages, "rb") as src:
                shutil.copyfileobj(src, data.spool, 1 << 20)
        elif isinstance(pages, (bytes, bytearray, memoryview)):
            data.spool.write(pages)
        elif hasattr(pages, "read"):
            _copy_stream(pages, data.spool)  # type: ignore[arg-type]
        else:
            for page in pages:
                data.spool.write(page)
        added = data.spool.tell() - before
        if added % self.page_size:
            raise ValueError(f"raw data of {added} bytes is not a whole number of pages")

    def _cpu_data(self, cpu: int, buffer: str) -> _CpuData:
        self.add_buffer(buffer)
        buf = self._buffers[buffer]
        if cpu not in buf.cpus:
            spool = tempfile.TemporaryFile(dir=self.tmpdir)  # noqa: SIM115 - closed in close()
            enc = PageEncoder(spool, self.page_size, self.long_size, self.big_endian,
                              self.absolute_timestamps)
            buf.cpus[cpu] = _CpuData(spool, enc)
        return buf.cpus[cpu]

    def close(self) -> None:
        """Drop the temporary spools."""
        for buf in self._buffers.values():
            for data in buf.cpus.values():
                data.spool.close()
            buf.cpus.clear()

    def __enter__(self) -> TraceDatWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- output
    def write(self, path: str | os.PathLike[str]) -> None:
        """Write the complete file to ``path``."""
        with open(path, "wb+") as out:
            self.write_to(out)

    def write_to(self, out: IO[bytes]) -> None:
        """Write the complete file to a seekable binary file object."""
        if self.version == 6:
            _V6Assembler(self, out).write()
        else:
            _V7Assembler(self, out).write()

    def ncpus(self) -> int:
        """Number of CPUs the file declares (largest over buffers)."""
        counts = [max(b.ncpus, max(b.cpus, default=-1) + 1) for b in self._buffers.values()]
        return max([self.cpucount or 0, *counts])

    def buffers(self) -> list[_Buffer]:
        """Top buffer first, then named buffers in the order they were declared."""
        return list(self._buffers.values())


class _Assembler:
    """Shared encoding helpers for both file versions."""

    def __init__(self, writer: TraceDatWriter, out: IO[bytes]) -> None:
        self.w = writer
        self.out = out
        self.e = writer._e

    def u16(self, v: int) -> bytes:
        return struct.pack(self.e + "H", v)

    def u32(self, v: int) -> bytes:
        return struct.pack(self.e + "I", v & 0xFFFFFFFF)

    def u64(self, v: int) -> bytes:
        return struct.pack(self.e + "Q", v & 0xFFFFFFFFFFFFFFFF)

    def file_header(self) -> bytes:
        w = self.w
        head = MAGIC + f"{w.version}".encode() + b"\0"
        head += bytes((1 if w.big_endian else 0, w.long_size))
        return head + self.u32(w.page_size)

    def header_info(self) -> bytes:
        page = self.w.header_page.encode()
        event = self.w.header_event.encode()
        return (b"header_page\0" + self.u64(len(page)) + page
                + b"header_event\0" + self.u64(len(event)) + event)

    def ftrace_events(self) -> bytes:
        parts = [self.u32(len(self.w.ftrace_formats))]
        for text in self.w.ftrace_formats:
            raw = text.encode()
            parts.append(self.u64(len(raw)) + raw)
        return b"".join(parts)

    def event_formats(self) -> bytes:
        parts = [self.u32(len(self.w.event_formats))]
        for system, texts in self.w.event_formats.items():
            parts.append(system.encode() + b"\0" + self.u32(len(texts)))
            for text in texts:
                raw = text.encode()
                parts.append(self.u64(len(raw)) + raw)
        return b"".join(parts)

    def sized4(self, text: str) -> bytes:
        raw = text.encode()
        return self.u32(len(raw)) + raw

    def cmdlines(self) -> bytes:
        raw = self.w.cmdlines.encode()
        return self.u64(len(raw)) + raw

    def clock_of(self, buf: _Buffer) -> str:
        return buf.clock or self.w.trace_clock

    def common_options(self) -> list[tuple[int, bytes]]:
        """Options both versions carry, before the buffer descriptions."""
        w = self.w
        opts: list[tuple[int, bytes]] = []
        if w.date is not None:
            opts.append((OPT_DATE, _cstr(w.date)))
        if w.offset is not None:
            opts.append((OPT_OFFSET, _cstr(str(w.offset))))
        opts.append((OPT_TRACECLOCK, _cstr(f"[{w.trace_clock}]")))
        if w.uname is not None:
            opts.append((OPT_UNAME, _cstr(w.uname)))
        if w.tracecmd_version is not None:
            opts.append((OPT_VERSION, _cstr(w.tracecmd_version)))
        if w.trace_id is not None:
            opts.append((OPT_TRACEID, self.u64(w.trace_id)))
        if w.tsc2nsec is not None:
            mult, shift, offset = w.tsc2nsec
            opts.append((OPT_TSC2NSEC, self.u32(mult) + self.u32(shift) + self.u64(offset)))
        if w.time_shift is not None:
            opts.append((OPT_TIME_SHIFT, self.time_shift_data()))
        opts.extend(self.cpustat_options())
        opts.extend(w.extra_options)
        return opts

    def time_shift_data(self) -> bytes:
        assert self.w.time_shift is not None
        peer, flags, per_cpu = self.w.time_shift
        parts = [self.u64(peer), self.u32(flags), self.u32(len(per_cpu))]
        for samples in per_cpu:
            parts.append(self.u32(len(samples)))
            parts.extend(self.u64(s.time) for s in samples)
            parts.extend(self.u64(s.offset) for s in samples)
            parts.extend(self.u64(s.scaling) for s in samples)
        for samples in per_cpu:
            parts.extend(self.u64(s.fraction) for s in samples)
        return b"".join(parts)

    def cpustat_options(self) -> list[tuple[int, bytes]]:
        opts: list[tuple[int, bytes]] = []
        for buf in self.w.buffers():
            if not buf.cpustats:
                continue
            if buf.name:
                opts.append((OPT_CPUSTAT, _cstr(f"\nBuffer: {buf.name}\n\n")))
            for cpu, text in enumerate(buf.cpustats):
                prefix = "" if text.startswith("CPU:") else f"CPU: {cpu}\n"
                opts.append((OPT_CPUSTAT, _cstr(prefix + text)))
        return opts

    def option_bytes(self, options: Iterable[tuple[int, bytes]]) -> bytes:
        return b"".join(self.u16(oid) + self.u32(len(data)) + data for oid, data in options)

    def pad_to_page(self) -> int:
        pos = self.out.tell()
        aligned = (pos + self.w.page_size - 1) & ~(self.w.page_size - 1)
        self.out.write(b"\0" * (aligned - pos))
        return aligned

    def copy_spool(self, data: _CpuData) -> int:
        data.spool.seek(0)
        shutil.copyfileobj(data.spool, self.out, 1 << 20)
        return data.spool.tell()

    def cpu_list(self, buf: _Buffer) -> list[_CpuData | None]:
        n = max(self.w.ncpus(), 1) if self.w.version == 6 else self.buffer_ncpus(buf)
        return [buf.cpus.get(i) for i in range(n)]

    def buffer_ncpus(self, buf: _Buffer) -> int:
        return max(buf.ncpus, max(buf.cpus, default=-1) + 1)


def _copy_stream(src: IO[bytes], dst: IO[bytes]) -> None:
    while True:
        block = src.read(1 << 20)
        if not block:
            return
        dst.write(block)


def _cstr(text: str) -> bytes:
    return text.encode() + b"\0"


class _V6Assembler(_Assembler):
    """Version 6: fixed header order, options, then one ``flyrecord`` block per buffer."""

    def write(self) -> None:
        w, out = self.w, self.out
        out.write(self.file_header())
        out.write(self.header_info())
        out.write(self.ftrace_events())
        out.write(self.event_formats())
        out.write(self.sized4(w.kallsyms))
        out.write(self.sized4(w.printk_formats))
        out.write(self.cmdlines())
        out.write(self.u32(max(w.ncpus(), 1)))
        named = [b for b in w.buffers() if b.name]
        out.write(b"options  \0")
        opts = self.common_options()
        out.write(self.option_bytes(opts))
        patch_at: list[int] = []
        for buf in named:
            out.write(self.u16(OPT_BUFFER) + self.u32(8 + len(buf.name) + 1))
            patch_at.append(out.tell())
            out.write(self.u64(0) + _cstr(buf.name))
        out.write(self.u16(OPT_DONE))
        self.flyrecord(w.buffers()[0])
        for buf, where in zip(named, patch_at):  # noqa: B905 - same length by construction
            start = out.tell()
            out.seek(where)
            out.write(self.u64(start))
            out.seek(start)
            self.flyrecord(buf)

    def flyrecord(self, buf: _Buffer) -> None:
        out = self.out
        cpus = self.cpu_list(buf)
        out.write(b"flyrecord\0")
        table = out.tell()
        out.write(b"\0" * (16 * len(cpus)))
        clock = f"[{self.clock_of(buf)}]".encode()
        out.write(self.u64(len(clock)) + clock)
        entries = []
        for data in cpus:
            start = self.pad_to_page()
            size = self.copy_spool(data) if data is not None and data.finish() else 0
            entries.append(self.u64(start) + self.u64(size))
        end = out.tell()
        out.seek(table)
        out.write(b"".join(entries))
        out.seek(end)


class _V7Assembler(_Assembler):
    """Version 7: sections, an options section pointing at them, then the strings section."""

    def __init__(self, writer: TraceDatWriter, out: IO[bytes]) -> None:
        super().__init__(writer, out)
        self.strings = bytearray()
        self.comp = writer.compressor

    def add_string(self, text: str) -> int:
        pos = len(self.strings)
        self.strings += _cstr(text)
        return pos

    def write(self) -> None:
        w, out = self.w, self.out
        out.write(self.file_header())
        if self.comp is None:
            out.write(b"none\0\0")
        else:
            out.write(_cstr(self.comp.name) + _cstr(self.comp.version))
        options_ptr = out.tell()
        out.write(self.u64(0))
        opts: list[tuple[int, bytes]] = [(OPT_CPUCOUNT, self.u32(max(w.ncpus(), 1)))]
        opts += self.common_options()
        metadata = [
            (OPT_HEADER_INFO, "headers", self.header_info()),
            (OPT_FTRACE_EVENTS, "ftrace events", self.ftrace_events()),
            (OPT_EVENT_FORMATS, "events format", self.event_formats()),
            (OPT_KALLSYMS, "kallsyms", self.sized4(w.kallsyms)),
            (OPT_PRINTK, "printk", self.sized4(w.printk_formats)),
            (OPT_CMDLINES, "command lines", self.cmdlines()),
        ]
        for sec_id, desc, payload in metadata:
            opts.append((sec_id, self.u64(out.tell())))
            self.section(sec_id, desc, payload)
        for buf in w.buffers():
            opts.append((OPT_BUFFER, self.buffer_section(buf)))
        options_at = out.tell()
        body = self.option_bytes(opts) + self.u16(OPT_DONE) + self.u32(8) + self.u64(0)
        self.section(OPT_DONE, "options", body, compressible=False)
        self.section(OPT_STRINGS, "strings", b"")
        out.seek(options_ptr)
        out.write(self.u64(options_at))
        out.seek(0, os.SEEK_END)

    def section(self, sec_id: int, desc: str, payload: bytes, compressible: bool = True) -> None:
        """Write one non-data section (compressed as a single block when a compressor is set)."""
        desc_id = self.add_string(desc)
        if sec_id == OPT_STRINGS:
            payload = bytes(self.strings)
        compress = compressible and self.comp is not None
        if compress:
            assert self.comp is not None
            packed = self.comp.compress(payload)
            payload = self.u32(len(packed)) + self.u32(len(payload)) + packed
        flags = SEC_FL_COMPRESS if compress else 0
        self.out.write(self.u16(sec_id) + self.u16(flags) + self.u32(desc_id)
                       + self.u64(len(payload)) + payload)

    def buffer_section(self, buf: _Buffer) -> bytes:
        """Write one BUFFER flyrecord section; return the BUFFER option describing it."""
        out = self.out
        start = out.tell()
        flags = SEC_FL_COMPRESS if self.comp is not None else 0
        desc = self.add_string(f"buffer flyrecord {buf.name}")
        out.write(self.u16(OPT_BUFFER) + self.u16(flags) + self.u32(desc))
        size_at = out.tell()
        out.write(self.u64(0))
        entries = []
        for cpu, data in enumerate(self.cpu_list(buf)):
            if data is None or data.finish() == 0:
                continue
            offset = self.pad_to_page()
            size = self.copy_spool(data) if self.comp is None else self.copy_compressed(data)
            entries.append(self.u32(cpu) + self.u64(offset) + self.u64(size))
        end = out.tell()
        out.seek(size_at)
        out.write(self.u64(end - size_at - 8))
        out.seek(end)
        clock = self.clock_of(buf)
        return (self.u64(start) + _cstr(buf.name) + _cstr(clock) + self.u32(self.w.page_size)
                + self.u32(len(entries)) + b"".join(entries))

    def copy_compressed(self, data: _CpuData) -> int:
        """Compress a CPU's pages in chunks of ``chunk_pages`` whole pages; return bytes written."""
        assert self.comp is not None
        chunk = self.w.chunk_pages * self.w.page_size
        total = data.finish()
        count = (total + chunk - 1) // chunk
        start = self.out.tell()
        self.out.write(self.u32(count))
        data.spool.seek(0)
        while True:
            raw = data.spool.read(chunk)
            if not raw:
                break
            packed = self.comp.compress(raw)
            self.out.write(self.u32(len(packed)) + self.u32(len(raw)) + packed)
        return self.out.tell() - start
