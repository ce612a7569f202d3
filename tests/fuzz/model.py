"""A trace.dat as editable parts (texts, options, pages), made from a real capture and written back
with kvmtrace's own writer: the base of the structure-aware mutations."""

from __future__ import annotations

import copy
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from kvmtrace.fileformats.tracedat import header_page_text
from kvmtrace.fileformats.writer import CallableCompressor, TraceDatWriter
from kvmtrace.ingest.tracedat.reader import read_structure


@dataclass
class DatModel:
    """Everything the writer needs to write one trace.dat."""

    version: int
    compression: str | None  # None, "zstd", "zlib"
    page_size: int
    long_size: int
    header_page: str
    ftrace_formats: list[str]
    event_formats: list[tuple[str, str]]  # (system, format text)
    cmdlines: str
    trace_clock: str
    pages: dict[tuple[str, int], bytes]  # (buffer, cpu) -> whole raw pages
    options: list[tuple[int, bytes]] = field(default_factory=list)  # more options, raw
    uname: str | None = None
    cpustats: list[str] = field(default_factory=list)
    bomb: str | None = None  # "chunk" or "section": one compressed block inflates far past its size
    bomb_size: int = 1 << 30  # ... by this many zero bytes

    def copy(self) -> DatModel:
        return copy.deepcopy(self)

    def write(self, path: Path) -> None:
        compressor = (_bomb_compressor(self.compression, self.bomb, self.bomb_size) if self.bomb
                      else _compressor(self.compression))
        with TraceDatWriter(version=self.version, compression=compressor if self.version == 7 else None,
                            long_size=self.long_size, page_size=self.page_size, trace_clock=self.trace_clock) as w:
            w.header_page = self.header_page
            for text in self.ftrace_formats:
                w.add_ftrace_format(text)
            for system, text in self.event_formats:
                w.add_event_format(system, text)
            w.set_cmdlines(self.cmdlines)
            w.uname = self.uname
            if self.cpustats:
                w.set_cpustats(self.cpustats)
            for oid, data in self.options:
                w.add_option(oid, data)
            for (buffer, cpu), data in sorted(self.pages.items()):
                w.add_buffer(buffer)
                w.add_raw_pages(cpu, data, buffer)
            w.write(path)


def _compressor(name: str | None) -> CallableCompressor | None:
    if name is None:
        return None
    return CallableCompressor(name, "1.5.4" if name == "zstd" else "1", lambda data: _compress(name, data))


def _bomb_compressor(name: str | None, where: str, size: int) -> CallableCompressor:
    """A compressor whose first block of the kind ``where`` inflates to ``size`` bytes more than it says."""
    state = {"done": False}

    def compress(data: bytes) -> bytes:
        is_chunk = len(data) % 4096 == 0 and len(data) >= 4096
        if state["done"] or is_chunk != (where == "chunk"):
            return _compress(name, data)
        state["done"] = True
        return _compress_zeros(name, data, size)

    return CallableCompressor(name or "zlib", "1", compress)


def _compress(name: str | None, data: bytes) -> bytes:
    if name == "zstd":
        import zstandard

        return zstandard.ZstdCompressor().compress(data)
    return zlib.compress(data)


def _compress_zeros(name: str | None, head: bytes, zeros: int) -> bytes:
    """``head`` followed by ``zeros`` zero bytes, compressed without holding them in memory."""
    block = bytes(1 << 20)
    if name == "zstd":
        import zstandard

        cobj = zstandard.ZstdCompressor().compressobj()
        parts = [cobj.compress(head)] + [cobj.compress(block) for _ in range(zeros >> 20)]
        return b"".join([*parts, cobj.flush()])
    zobj = zlib.compressobj(9)
    parts = [zobj.compress(head)] + [zobj.compress(block) for _ in range(zeros >> 20)]
    return b"".join([*parts, zobj.flush()])


def from_capture(path: Path, pages_per_cpu: int = 6) -> DatModel:
    """The first pages of each CPU of a real capture, its formats, cmdlines and CPU stats."""
    f = read_structure(path)
    pages: dict[tuple[str, int], bytes] = {}
    for buf in f.buffers:
        for cpu in buf.cpus:
            data = f.cpu_pages(cpu)[: pages_per_cpu * buf.page_size].tobytes()
            if data:
                pages[(buf.name, cpu.cpu)] = data
    return DatModel(
        version=f.version, compression=None if f.compression == "none" else f.compression, page_size=f.page_size,
        long_size=f.commit_size, header_page=header_page_text(f.commit_size, f.page_size),
        ftrace_formats=[fmt.source for fmt in f.formats if fmt.system == "ftrace"],
        event_formats=[(fmt.system, fmt.source) for fmt in f.formats if fmt.system != "ftrace"],
        cmdlines="".join(f"{pid} {comm}\n" for pid, comm in sorted(f.cmdlines.items())),
        trace_clock=f.buffers[0].clock if f.buffers else "local", pages=pages, uname=f.options.get("UNAME"),
        cpustats=[s for s in f.options.get("CPUSTAT", []) if s.startswith("CPU:")],
    )
