"""Small trace.dat files cut from a real capture's pages (formats and cmdlines kept), for tests
that damage or reorder pages."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from kvmtrace.fileformats.writer import TraceDatWriter
from kvmtrace.ingest.tracedat.reader import read_structure
from tests.report_oracle import CAPTURES

REAL = CAPTURES / "arm64-vhe-cyclictest" / "trace.dat"


def write_real_pages(path: Path, pages_per_cpu: int, reorder: dict[int, list[int]] | None = None,
                     source: Path = REAL) -> Path:
    """A v6 uncompressed file holding the first pages of each CPU of ``source``, in the order
    ``reorder[cpu]`` gives (default: as recorded)."""
    f = read_structure(source)
    with TraceDatWriter(version=6, compression=None) as w:
        for fmt in f.formats:
            if fmt.system == "ftrace":
                w.add_ftrace_format(fmt.source)
            else:
                w.add_event_format(fmt.system, fmt.source)
        w.set_cmdlines(f.cmdlines)
        for cpu in f.buffers[0].cpus:
            data = f.cpu_pages(cpu)
            order = (reorder or {}).get(cpu.cpu, list(range(pages_per_cpu)))
            w.add_raw_pages(cpu.cpu, b"".join(data[p * f.page_size:(p + 1) * f.page_size].tobytes() for p in order))
        w.write(path)
    return path


MISSED_EVENTS = 1 << 31
MISSED_STORED = 1 << 30
COMMIT_MASK = (1 << 27) - 1


def mark_lost(capture: Path, out: Path, at_ns: list[int], count: int) -> list[tuple[int, int, int | None]]:
    """A copy of the capture folder ``capture`` whose trace.dat (rewritten v6 uncompressed by ``trace-cmd
    convert``) says events were lost just before CPU 0's first page starting at or after each time of
    ``at_ns``, as the kernel writes it: the page's commit word gets MISSED_EVENTS, and MISSED_STORED with
    ``count`` after the data when the page has room for it. Returns (page, page start ns, count or None)."""
    shutil.copytree(capture, out, ignore=shutil.ignore_patterns("trace.dat", ".kvmtrace-cache"))
    trace = out / "trace.dat"
    subprocess.run(["trace-cmd", "convert", "--file-version", "6", "--compression", "none",
                    "-i", str(capture / "trace.dat"), "-o", str(trace)], check=True, capture_output=True)
    f = read_structure(trace)
    cpu = f.buffers[0].cpus[0]
    data = bytearray(trace.read_bytes())
    starts = [int.from_bytes(data[cpu.file_offset + p * f.page_size:][:8], "little")
              for p in range(cpu.length // f.page_size)]
    marked = []
    for when in at_ns:
        page = next(p for p, t in enumerate(starts) if t >= when)
        at = cpu.file_offset + page * f.page_size
        commit = int.from_bytes(data[at + 8:at + 16], "little")
        room = (commit & COMMIT_MASK) + 8 <= f.page_size - 16
        commit |= MISSED_EVENTS | (MISSED_STORED if room else 0)
        data[at + 8:at + 16] = commit.to_bytes(8, "little")
        if room:
            end = at + 16 + (commit & COMMIT_MASK)
            data[end:end + 8] = count.to_bytes(8, "little")
        marked.append((page, starts[page], count if room else None))
    trace.write_bytes(bytes(data))
    return marked
