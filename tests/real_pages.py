"""Small trace.dat files cut from a real capture's pages (formats and cmdlines kept), for tests
that damage or reorder pages."""

from __future__ import annotations

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
