"""Build a big uncompressed trace.dat (version 6) by replicating a real capture's ring-buffer pages.

The input (by default the bundled arm64 VHE cyclictest capture) is first converted with
``trace-cmd convert --file-version 6 --compression none`` so that each CPU's data is one
contiguous array of pages whose offset and size sit in the ``flyrecord`` table. Any v6/v7
capture of flyrecord buffers works, named buffers (instances) too. The output keeps everything
before the top buffer's ``flyrecord`` block verbatim (formats, cmdlines, options; a named
buffer's BUFFER option gets its block's new offset), then writes each buffer's block: its
offset table, clock, and per CPU the original pages N times. Replica k has every page's
u64 timestamp (the first 8 bytes of the page) shifted by k * span, where span covers the whole
capture plus a small gap, so time stays monotonic per CPU and across CPUs. Records carrying an
absolute timestamp (type_len 31, which the kernel writes now and then) get the same shift.

Usage::

    make_big_capture.py -o /tmp/big.dat --events 20000000
    make_big_capture.py -o /tmp/big.dat --copies 3 [--compress zstd]

With ``--compress zstd`` the v6 result is converted again by trace-cmd into a v7 zstd file.
"""

from __future__ import annotations

import argparse
import math
import mmap
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np

from kvmtrace.ingest.tracedat.reader import CpuData, TraceDatFile, read_structure

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_INPUT = ROOT / "captures" / "arm64-vhe-cyclictest" / "trace.dat"
FLYRECORD_TAG = b"flyrecord\0"
GAP_NS = 1_000  # gap between the end of one replica and the start of the next
COMMIT_MASK = (1 << 27) - 1
TYPE_PADDING = 29
TYPE_TIME_EXTEND = 30
TYPE_TIME_STAMP = 31


def convert(src: Path, dst: Path, version: int, compression: str) -> None:
    """Rewrite ``src`` with trace-cmd convert (file version and compression as given)."""
    cmd = ["trace-cmd", "convert", "--file-version", str(version), "--compression", compression,
           "-i", str(src), "-o", str(dst)]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def check_layout(f: TraceDatFile) -> None:
    """Accept only what this tool can replicate: v6, uncompressed, flyrecord buffers, little endian."""
    if f.version != 6 or f.compression != "none":
        raise SystemExit(f"expected a v6 uncompressed file, got v{f.version} {f.compression}")
    if any(b.latency_text is not None for b in f.buffers):
        raise SystemExit("only flyrecord captures are supported (not latency ones)")
    if f.big_endian:
        raise SystemExit("only little-endian captures are supported")


@dataclass
class Section:
    """One buffer's ``flyrecord`` block in the input: its tag's offset, its CPUs and clock bytes."""

    name: str
    tag_at: int
    cpus: list[CpuData]
    clock: bytes  # what follows the offset table: u64 size + the trace clock text (or nothing)


def find_sections(raw: mmap.mmap, f: TraceDatFile) -> list[Section]:
    """Each buffer's flyrecord block (top buffer first), located by its tag and offset table."""
    sections, pos = [], 0
    for buf in f.buffers:
        values = [v for c in buf.cpus for v in (c.file_offset, c.file_size)]
        expected = FLYRECORD_TAG + struct.pack(f"<{len(values)}Q", *values)
        at = raw.find(expected, pos)
        if at < 0:
            raise SystemExit(f"cannot locate the flyrecord offset table of buffer {buf.name!r}")
        pos = at + len(expected)
        sections.append(Section(buf.name, at, buf.cpus, _clock_bytes(raw, pos)))
    return sections


def _clock_bytes(raw: mmap.mmap, at: int) -> bytes:
    """The sized clock text after an offset table (``u64 size`` + ``[local] global ...``), if any."""
    if at + 8 > len(raw):
        return b""
    (size,) = struct.unpack_from("<Q", raw, at)
    text = raw[at + 8:at + 8 + size] if 0 < size < 4096 else b""
    return raw[at:at + 8 + size] if text.startswith(b"[") or b" [" in text else b""


def _align(n: int, page_size: int) -> int:
    return (n + page_size - 1) // page_size * page_size


def _patch_buffer_option(header: bytearray, sec: Section, new_at: int) -> None:
    """Point the BUFFER option of a named buffer at its new flyrecord block."""
    old = struct.pack("<Q", sec.tag_at) + sec.name.encode() + b"\0"
    at = header.find(old)
    if at < 0 or header.find(old, at + 1) >= 0:
        raise SystemExit(f"cannot locate the BUFFER option of buffer {sec.name!r}")
    struct.pack_into("<Q", header, at, new_at)


def write_replicas(f: TraceDatFile, raw: mmap.mmap, scans: list[CpuScan], out: Path, copies: int,
                   span: int) -> None:
    """Write the v6 output: the verbatim header (BUFFER options patched), then per buffer its
    flyrecord block with a new offset table and N copies of each CPU's pages."""
    sections = find_sections(raw, f)
    header = bytearray(raw[:sections[0].tag_at])
    scan_of = iter(scans)
    with open(out, "wb") as fh:
        fh.write(header)
        for sec in sections:
            if sec.name:
                _patch_buffer_option(header, sec, fh.tell())
            _write_section(fh, f, sec, scan_of, copies, span)
        fh.seek(0)
        fh.write(header)


def _write_section(fh: BinaryIO, f: TraceDatFile, sec: Section, scan_of: Iterator[CpuScan], copies: int,
                   span: int) -> None:
    """One buffer's flyrecord block: tag, offset table, clock, then every CPU's replicas."""
    fh.write(FLYRECORD_TAG)
    table_at = fh.tell()
    fh.write(b"\0" * (16 * len(sec.cpus)))
    fh.write(sec.clock)
    table = []
    for c in sec.cpus:
        scan = next(scan_of)
        if not c.file_size:
            table += [0, 0]
            continue
        fh.write(b"\0" * (_align(fh.tell(), f.page_size) - fh.tell()))
        table += [fh.tell(), c.length * copies]
        _write_cpu(fh, f.cpu_pages(c), f.page_size, np.asarray(scan.stamps, np.int64), copies, span)
    end = fh.tell()
    fh.seek(table_at)
    fh.write(struct.pack(f"<{len(table)}Q", *table))
    fh.seek(end)


@dataclass
class CpuScan:
    """What one CPU's pages hold: data records, their raw time range, absolute-stamp records."""

    records: int = 0
    first_ts: int | None = None
    last_ts: int | None = None
    stamps: list[int] = field(default_factory=list)  # byte offsets of type_len 31 records

    def see(self, ts: int) -> None:
        self.records += 1
        self.first_ts = ts if self.first_ts is None else min(self.first_ts, ts)
        self.last_ts = ts if self.last_ts is None else max(self.last_ts, ts)


def scan_cpu(pages: bytes, page_size: int, data_offset: int) -> CpuScan:
    """Walk every record of one CPU's pages (plain Python: done once, on the small input)."""
    scan = CpuScan()
    for page in range(0, len(pages), page_size):
        ts, commit = struct.unpack_from("<QQ", pages, page)
        _scan_page(pages, page + data_offset, commit & COMMIT_MASK, ts, scan)
    return scan


def _scan_page(pages: bytes, base: int, size: int, ts: int, scan: CpuScan) -> None:
    pos = 0
    while pos < size:
        (header,) = struct.unpack_from("<I", pages, base + pos)
        type_len, delta = header & 31, header >> 5
        if type_len == TYPE_PADDING and delta == 0:
            break
        if type_len >= TYPE_TIME_EXTEND:
            (upper,) = struct.unpack_from("<I", pages, base + pos + 4)
            value = (upper << 27) | delta
            ts = (ts & ~((1 << 59) - 1)) | value if type_len == TYPE_TIME_STAMP else ts + value
            if type_len == TYPE_TIME_STAMP:
                scan.stamps.append(base + pos)
        elif type_len != TYPE_PADDING:
            ts += delta
            scan.see(ts)
        pos += _record_length(pages, base + pos, type_len)


def _record_length(pages: bytes, at: int, type_len: int) -> int:
    if 1 <= type_len <= 28:
        return 4 + 4 * type_len
    if type_len >= TYPE_TIME_EXTEND:
        return 8
    (word,) = struct.unpack_from("<I", pages, at + 4)
    return 4 + (word + 3) // 4 * 4 if type_len == 0 else 4 + word


def _write_cpu(fh: BinaryIO, pages: np.ndarray, page_size: int, stamps: np.ndarray, copies: int,
               span: int) -> None:
    """Write ``copies`` replicas of one CPU's pages, page and absolute timestamps shifted."""
    work = pages.view("<u8").reshape(-1, page_size // 8).copy()
    page_ts = work[:, 0].copy()
    u32 = work.reshape(-1).view("<u4")
    at = stamps // 4
    low, high = u32[at].astype(np.uint64), u32[at + 1].astype(np.uint64)
    type_bits = low & np.uint64(31)
    stamp = (high << np.uint64(27)) | (low >> np.uint64(5))
    for k in range(copies):
        shift = np.uint64(k * span)
        work[:, 0] = page_ts + shift
        moved = stamp + shift
        u32[at] = (type_bits | ((moved & np.uint64(COMMIT_MASK)) << np.uint64(5))).astype(np.uint32)
        u32[at + 1] = (moved >> np.uint64(27)).astype(np.uint32)
        fh.write(work.tobytes())


def build(src: Path, out: Path, events: int | None, copies: int | None, compress: str) -> int:
    """Build the replica; returns the number of events it holds."""
    with tempfile.TemporaryDirectory(prefix="kvmtrace-big-") as tmp:
        v6 = Path(tmp) / "base-v6.dat"
        convert(src, v6, 6, "none")
        f = read_structure(v6)
        check_layout(f)
        scans = [scan_cpu(f.cpu_pages(c).tobytes(), f.page_size, f.page_data_offset)
                 for b in f.buffers for c in b.cpus]
        per_copy = sum(s.records for s in scans)
        lo = min(s.first_ts for s in scans if s.first_ts is not None)
        hi = max(s.last_ts for s in scans if s.last_ts is not None)
        n = copies if copies else max(1, math.ceil((events or per_copy) / per_copy))
        target = out if compress == "none" else Path(tmp) / "big-v6.dat"
        with open(v6, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as raw:
            write_replicas(f, raw, scans, target, n, hi - lo + GAP_NS)
        del f
        if compress != "none":
            convert(target, out, 7, compress)
    print(f"{out}: {n} copies x {per_copy} events = {n * per_copy} events, "
          f"{out.stat().st_size / 1e6:.1f} MB ({compress})")
    return n * per_copy


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("input", nargs="?", type=Path, default=DEFAULT_INPUT,
                    help="capture to replicate")
    ap.add_argument("-o", "--output", type=Path, required=True)
    group = ap.add_mutually_exclusive_group()
    group.add_argument("--events", type=int,
                       help="at least this many events (rounded up to whole copies)")
    group.add_argument("--copies", type=int, help="exact number of copies")
    ap.add_argument("--compress", choices=("none", "zstd", "zlib"), default="none",
                    help="none: v6 uncompressed; else convert the result to v7 with it")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    build(args.input, args.output, args.events, args.copies, args.compress)
    print(f"built in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
