"""Where the parts of a valid trace.dat are (byte regions), so that mutations can aim at them.

A plain parser of the layout, independent of kvmtrace's reader, for files written by trace-cmd or
by kvmtrace's writer: header fields, metadata texts and counts, options (and the fields of BUFFER
options), v7 section headers, compressed chunk tables and ring-buffer page headers.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass


@dataclass(frozen=True)
class Region:
    """``size`` bytes at ``offset``: a field (``kind`` int: an integer of that size) or a blob."""

    name: str
    offset: int
    size: int
    kind: str = "blob"  # "int" or "blob"


class _Scan:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.e = ">" if data[data.index(b"\0", 10) + 1] else "<"
        self.out: list[Region] = []

    def num(self, pos: int, size: int, name: str) -> int:
        self.out.append(Region(name, pos, size, "int"))
        return int(struct.unpack_from(self.e + {2: "H", 4: "I", 8: "Q"}[size], self.data, pos)[0])

    def blob(self, pos: int, size: int, name: str) -> None:
        self.out.append(Region(name, pos, size))

    def cstr(self, pos: int, name: str) -> int:
        end = self.data.index(b"\0", pos)
        self.blob(pos, end + 1 - pos, name)
        return end + 1

    def sized(self, pos: int, width: int, name: str) -> int:
        size = self.num(pos, width, f"{name} size")
        self.blob(pos + width, size, name)
        return pos + width + size


def regions(data: bytes) -> list[Region]:
    """Every region found in ``data`` (a valid file); parts it cannot follow are left out."""
    scan = _Scan(data)
    pos = data.index(b"\0", 10) + 1
    scan.blob(0, pos, "magic and version")
    scan.blob(pos, 2, "endian and long size")
    page_size = scan.num(pos + 2, 4, "page size")
    pos += 6
    try:
        if data[10:11] == b"7":
            _v7(scan, pos, page_size)
        else:
            _v6(scan, pos, page_size)
    except (ValueError, struct.error, IndexError):
        pass
    return scan.out


def _header_info(scan: _Scan, pos: int) -> int:
    scan.blob(pos, 12, "header_page tag")
    pos = scan.sized(pos + 12, 8, "header_page text")
    scan.blob(pos, 13, "header_event tag")
    return scan.sized(pos + 13, 8, "header_event text")


def _formats(scan: _Scan, pos: int) -> int:
    count = scan.num(pos, 4, "ftrace format count")
    pos += 4
    for _ in range(count):
        pos = scan.sized(pos, 8, "ftrace format")
    systems = scan.num(pos, 4, "system count")
    pos += 4
    for _ in range(systems):
        pos = scan.cstr(pos, "system name")
        count = scan.num(pos, 4, "event format count")
        pos += 4
        for _ in range(count):
            pos = scan.sized(pos, 8, "event format")
    return pos


def _v6(scan: _Scan, pos: int, page_size: int) -> None:
    pos = _formats(scan, _header_info(scan, pos))
    pos = scan.sized(pos, 4, "kallsyms")
    pos = scan.sized(pos, 4, "printk formats")
    pos = scan.sized(pos, 8, "cmdlines")
    ncpus = scan.num(pos, 4, "cpu count")
    pos += 4
    if scan.data[pos:pos + 7] == b"options":
        scan.blob(pos, 10, "options tag")
        pos += 10
        while True:
            opt = scan.num(pos, 2, "option id")
            if opt == 0:
                pos += 2
                break
            size = scan.num(pos + 2, 4, "option size")
            scan.blob(pos + 6, size, f"option {opt} data")
            pos += 6 + size
    scan.blob(pos, 10, "flyrecord tag")
    pos += 10
    for cpu in range(ncpus):
        off = scan.num(pos, 8, f"cpu {cpu} data offset")
        size = scan.num(pos + 8, 8, f"cpu {cpu} data size")
        pos += 16
        _pages(scan, off, size, page_size, f"cpu {cpu}")


def _pages(scan: _Scan, offset: int, size: int, page_size: int, name: str) -> None:
    for p in range(size // page_size):
        at = offset + p * page_size
        scan.num(at, 8, f"{name} page {p} timestamp")
        scan.num(at + 8, 8, f"{name} page {p} commit")
        scan.blob(at + 16, page_size - 16, f"{name} page {p} data")


def _v7(scan: _Scan, pos: int, page_size: int) -> None:
    end = scan.cstr(pos, "compression name")
    compression = scan.data[pos:end - 1]
    pos = end
    pos = scan.cstr(pos, "compression version")
    options = scan.num(pos, 8, "first options offset")
    seen = set()
    while options and options not in seen:
        seen.add(options)
        options = _options_section(scan, options, page_size, compression != b"none")


def _section_header(scan: _Scan, pos: int, name: str) -> tuple[int, int, int]:
    sec_id = scan.num(pos, 2, f"{name} section id")
    flags = scan.num(pos + 2, 2, f"{name} section flags")
    scan.num(pos + 4, 4, f"{name} section description")
    size = scan.num(pos + 8, 8, f"{name} section size")
    if flags & 1:
        scan.num(pos + 16, 4, f"{name} compressed size")
        scan.num(pos + 20, 4, f"{name} uncompressed size")
    return sec_id, flags, size


def _options_section(scan: _Scan, offset: int, page_size: int, compressed: bool) -> int:
    _sec, flags, size = _section_header(scan, offset, "options")
    if flags & 1:
        return 0
    pos, end = offset + 16, offset + 16 + size
    nxt = 0
    while pos + 6 <= end:
        opt = scan.num(pos, 2, "option id")
        osize = scan.num(pos + 2, 4, "option size")
        data = pos + 6
        scan.blob(data, osize, f"option {opt} data")
        if opt == 0:
            nxt = scan.num(data, 8, "next options offset")
            break
        if opt in (16, 17, 18, 19, 20, 21):
            at = scan.num(data, 8, f"option {opt} section offset")
            _section_header(scan, at, f"metadata {opt}")
        if opt == 3:
            _buffer_option(scan, data, osize, page_size, compressed)
        pos = data + osize
    return nxt


def _buffer_option(scan: _Scan, data: int, size: int, page_size: int, compressed: bool) -> None:
    at = scan.num(data, 8, "buffer section offset")
    _section_header(scan, at, "buffer")
    pos = scan.cstr(data + 8, "buffer name")
    pos = scan.cstr(pos, "buffer clock")
    scan.num(pos, 4, "buffer page size")
    ncpus = scan.num(pos + 4, 4, "buffer cpu count")
    pos += 8
    for _ in range(ncpus):
        cpu = scan.num(pos, 4, "buffer cpu id")
        off = scan.num(pos + 4, 8, f"buffer cpu {cpu} offset")
        csize = scan.num(pos + 12, 8, f"buffer cpu {cpu} size")
        pos += 20
        if compressed:
            _chunks(scan, off, f"cpu {cpu}")
        else:
            _pages(scan, off, csize, page_size, f"cpu {cpu}")


def _chunks(scan: _Scan, offset: int, name: str) -> None:
    count = scan.num(offset, 4, f"{name} chunk count")
    pos = offset + 4
    for k in range(count):
        zsize = scan.num(pos, 4, f"{name} chunk {k} compressed size")
        scan.num(pos + 4, 4, f"{name} chunk {k} size")
        scan.blob(pos + 8, zsize, f"{name} chunk {k} data")
        pos += 8 + zsize
