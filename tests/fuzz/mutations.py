"""Structure-aware mutations of the bundled captures: each makes one damaged input (a file or a
capture folder) from a seed, aimed at one part of it.

* trace.dat parts, edited in a ``DatModel`` and written again: format files (field offsets, sizes,
  array lengths, types, deleted or doubled fields, ids), header_page, options (DATE, OFFSET,
  CPUSTAT, TSC2NSEC, TIME_SHIFT, CPUCOUNT, unknown ones), ring-buffer pages (commit words, missed
  event counts, record headers), cmdlines, decompression bombs;
* trace.dat bytes, at regions ``layout`` finds: interesting integers, bit flips, truncation,
  BUFFER option fields, chunk tables, a duplicated options section;
* text captures: out-of-range CPU, pid and timestamps, long lines, floods of newlines, binary
  bytes, gzip/zstd (and their bombs);
* capture folders: ``capture.json`` keys and encodings, trace paths, special files.
"""

from __future__ import annotations

import functools
import gzip
import json
import os
import random
import re
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from kvmtrace.fileformats.tracedat import OPT_DATE, OPT_OFFSET, OPT_TIME_SHIFT, OPT_TSC2NSEC
from tests.fuzz.layout import Region, regions
from tests.fuzz.model import DatModel, _compress_zeros

INTERESTING = (0, 1, 2, 3, 4, 7, 8, 15, 16, 63, 64, 255, 256, 4095, 4096, 4097, 8192, 65535, 65536,
               (1 << 27) - 1, 1 << 27, (1 << 31) - 1, 1 << 31, (1 << 32) - 1, 1 << 32, 10**9, 10**12,
               (1 << 63) - 1, 1 << 63, (1 << 64) - 1)
BIG_TEXT = ("0", "-1", "abc", "", "1e5", "0x", "99999999999999999999999", "-99999999999999999999",
            "9223372036854775807", "18446744073709551616", "0x7fffffffffffffff", " 12", "12abc", "nan")


@dataclass
class Input:
    """One generated input: where it is and what made it."""

    path: Path
    mutation: str
    seed: str
    kind: str  # "dat", "text", "dir"


Rng = random.Random
ModelMutation = Callable[[Rng, DatModel], str]


# ------------------------------------------------------------------ format files
def _pick_format(rng: Rng, m: DatModel) -> tuple[int, str, str]:
    """A format of an event present in the pages, preferably (index, system, text)."""
    index = rng.randrange(len(m.event_formats))
    wanted = ("sched_switch", "kvm_exit", "kvm_entry", "print", "sched_wakeup", "irq_handler_entry")
    for k, (_system, text) in enumerate(m.event_formats):
        if any(f"name: {w}\n" in text for w in wanted) and rng.random() < 0.3:
            index = k
    system, text = m.event_formats[index]
    return index, system, text


def _field_lines(text: str) -> list[str]:
    return [ln for ln in text.splitlines() if ln.strip().startswith("field:") and "common_" not in ln]


def _edit_field(rng: Rng, m: DatModel, edit: Callable[[str], str]) -> str:
    index, system, text = _pick_format(rng, m)
    lines = _field_lines(text)
    if not lines:
        return "format without payload fields"
    line = rng.choice(lines)
    m.event_formats[index] = (system, text.replace(line, edit(line), 1))
    return line.strip()[:60]


def fmt_offset(rng: Rng, m: DatModel) -> str:
    value = rng.choice((*INTERESTING, 24, 40, 4080, 4090))
    return _edit_field(rng, m, lambda ln: re.sub(r"offset:\d+", f"offset:{value}", ln)) + f" offset {value}"


def fmt_size(rng: Rng, m: DatModel) -> str:
    value = rng.choice((0, 1, 3, 5, 16, 64, 4096, 1 << 31, 10**9, 2**40))
    return _edit_field(rng, m, lambda ln: re.sub(r"size:\d+", f"size:{value}", ln)) + f" size {value}"


def fmt_array(rng: Rng, m: DatModel) -> str:
    length = rng.choice(("", "0", "1", "1000000000", "x", "-1", "16"))
    size = rng.choice((None, 0, 16, 10**9))

    def edit(ln: str) -> str:
        ln = re.sub(r"(\w+);\s*offset", lambda g: f"{g.group(1)}[{length}]; offset", ln, count=1)
        return re.sub(r"size:\d+", f"size:{size}", ln) if size is not None else ln

    return _edit_field(rng, m, edit) + f" array [{length}] size {size}"


def fmt_type(rng: Rng, m: DatModel) -> str:
    kind = rng.choice(("__data_loc char[]", "__rel_loc char[]", "__data_loc int[]", "char", "bool", "u64",
                       "unsigned char[0]", "int[]", "__data_loc unsigned long[]"))

    def edit(ln: str) -> str:
        return re.sub(r"field:([^;]*?)(\w+)(\[[^\]]*\])?;", lambda g: f"field:{kind} {g.group(2)};", ln, count=1)

    return _edit_field(rng, m, edit) + f" type {kind}"


def fmt_delete(rng: Rng, m: DatModel) -> str:
    return _edit_field(rng, m, lambda ln: "") + " deleted"


def fmt_header(rng: Rng, m: DatModel) -> str:
    index, system, text = _pick_format(rng, m)
    choice = rng.randrange(5)
    if choice == 0:
        text = re.sub(r"ID: \d+", f"ID: {rng.choice(('abc', '-1', '99999999999', '0', '65535', '1'))}", text)
    elif choice == 1:
        text = re.sub(r"name: .*\n", "", text)
    elif choice == 2:
        text = re.sub(r"ID: .*\n", "", text)
    elif choice == 3:
        other = m.event_formats[rng.randrange(len(m.event_formats))][1]
        found = re.search(r"ID: (\d+)", other)
        text = re.sub(r"ID: \d+", f"ID: {found.group(1) if found else 1}", text)
    else:
        text = text.replace("\tfield:", "\tfield:junk ", 1) if rng.random() < 0.5 else text + "field: x;\n"
    m.event_formats[index] = (system, text)
    return f"format header edit {choice}"


def fmt_common(rng: Rng, m: DatModel) -> str:
    """The common header fields (type, pid...) at other offsets or sizes."""
    field_name = rng.choice(("common_type", "common_pid", "common_flags", "common_preempt_count"))
    value = rng.choice((0, 2, 6, 9, 4096, 10**9))
    what = rng.choice(("offset", "size"))
    for k, (system, text) in enumerate(m.event_formats):
        m.event_formats[k] = (system, re.sub(rf"({re.escape(field_name)};\s*offset:\d+;\s*size:\d+)",
                                             lambda g: re.sub(rf"{what}:\d+", f"{what}:{value}", g.group(1)), text))
    return f"{field_name} {what} {value}"


# ------------------------------------------------------------------ header_page
def header_page(rng: Rng, m: DatModel) -> str:
    name = rng.choice(("commit", "data", "timestamp", "overwrite"))
    what = rng.choice(("offset", "size", "delete"))
    value = rng.choice((0, 1, 2, 3, 4, 12, 16, 4095, 4096, 1 << 31, 10**9))
    lines = m.header_page.splitlines(keepends=True)
    for k, ln in enumerate(lines):
        if re.search(rf"\b{name};", ln):
            lines[k] = "" if what == "delete" else re.sub(rf"{what}:\d+", f"{what}:{value}", ln)
    m.header_page = "".join(lines)
    return f"header_page {name} {what} {value}"


# ------------------------------------------------------------------ options
def _cstr(text: str) -> bytes:
    return text.encode() + b"\0"


def opt_text(rng: Rng, m: DatModel) -> str:
    opt, name = rng.choice(((OPT_DATE, "DATE"), (OPT_OFFSET, "OFFSET")))
    value = rng.choice(BIG_TEXT)
    m.options.append((opt, _cstr(value)))
    if rng.random() < 0.3:
        m.options.append((opt, _cstr(rng.choice(BIG_TEXT))))
    return f"{name} {value!r}"


def opt_cpustat(rng: Rng, m: DatModel) -> str:
    value = rng.choice(("1e5", "abc", "-5", "99999999999999999999999", "", "0x10", "12 13"))
    key = rng.choice(("overrun", "CPU", "entries", "dropped events"))
    cpu = rng.choice(("0", "1", "4294967295", "x"))
    m.cpustats = [f"CPU: {cpu}\nentries: 5\n{key}: {value}\ncommit overrun: 0\n", *m.cpustats[1:]]
    return f"CPUSTAT cpu {cpu} {key}: {value!r}"


def opt_tsc2nsec(rng: Rng, m: DatModel) -> str:
    mult, shift, off = rng.choice(INTERESTING) & 0xFFFFFFFF, rng.choice((0, 1, 31, 32, 33, 63, 64, 255, 1 << 31)), \
        rng.choice(INTERESTING)
    data = struct.pack("<IIQ", mult, shift & 0xFFFFFFFF, off & ((1 << 64) - 1))
    m.options.append((OPT_TSC2NSEC, data[: rng.choice((16, 16, 12, 4))]))
    return f"TSC2NSEC mult {mult} shift {shift} offset {off}"


def opt_time_shift(rng: Rng, m: DatModel) -> str:
    ncpus = rng.choice((1, 2, 1000, (1 << 32) - 1))
    count = rng.choice((0, 1, 2, 1000, (1 << 32) - 1))
    body = struct.pack("<QII", 1, rng.choice((0, 1)), ncpus)
    for _ in range(min(ncpus, 2)):
        body += struct.pack("<I", count)
        for _k in range(3 * min(count, 3)):
            body += struct.pack("<Q", rng.choice(INTERESTING))
    cut = rng.choice((len(body), len(body), 12, 20, len(body) - 3))
    m.options.append((OPT_TIME_SHIFT, body[:cut]))
    return f"TIME_SHIFT ncpus {ncpus} count {count} cut {cut}"


def opt_misc(rng: Rng, m: DatModel) -> str:
    opt = rng.choice((4, 5, 6, 8, 9, 10, 11, 13, 14, 23, 99, 0xFFFF))
    data = rng.choice((b"", b"\0", b"[junk", struct.pack("<I", (1 << 32) - 1), rng.randbytes(rng.randrange(1, 64))))
    m.options.append((opt, data))
    return f"option {opt} {len(data)} bytes"


# ------------------------------------------------------------------ pages
def _page(rng: Rng, m: DatModel) -> tuple[tuple[str, int], bytearray, int]:
    key = rng.choice(sorted(m.pages))
    data = bytearray(m.pages[key])
    return key, data, rng.randrange(len(data) // m.page_size) * m.page_size


def page_commit(rng: Rng, m: DatModel) -> str:
    key, data, at = _page(rng, m)
    flags = rng.choice((0, 1 << 31, 1 << 30, 3 << 30))
    length = rng.choice((0, 1, 4, 4080, 4088, 4095, 4096, 9000, (1 << 27) - 1))
    word = flags | length
    data[at + 8:at + 8 + m.long_size] = word.to_bytes(m.long_size, "little")
    if flags & (1 << 30):
        end = at + 16 + min(length, m.page_size - 24)
        count = rng.choice(((1 << 64) - 1, 1 << 63, 5, 0))
        data[end:end + 8] = count.to_bytes(8, "little")
    m.pages[key] = bytes(data)
    return f"page commit {word:#x}"


def page_record(rng: Rng, m: DatModel) -> str:
    key, data, at = _page(rng, m)
    pos = at + 16 + 4 * rng.randrange(16)
    type_len = rng.choice((0, 0, 1, 28, 29, 30, 31))
    delta = rng.randrange(1 << 27)
    data[pos:pos + 4] = (type_len | (delta << 5)).to_bytes(4, "little")
    data[pos + 4:pos + 8] = rng.choice(INTERESTING[:-4]).to_bytes(8, "little")[:4]
    m.pages[key] = bytes(data)
    return f"record type_len {type_len}"


def page_bytes(rng: Rng, m: DatModel) -> str:
    key, data, at = _page(rng, m)
    for _ in range(rng.randrange(1, 12)):
        data[at + rng.randrange(m.page_size)] = rng.randrange(256)
    m.pages[key] = bytes(data)
    return "page bytes"


def page_payload(rng: Rng, m: DatModel) -> str:
    """A record's common_type or a __data_loc word replaced."""
    key, data, at = _page(rng, m)
    pos = at + 16 + 4 * rng.randrange(60)
    data[pos:pos + 4] = rng.choice(INTERESTING[:-4]).to_bytes(8, "little")[:4]
    m.pages[key] = bytes(data)
    return "record payload word"


def cmdlines(rng: Rng, m: DatModel) -> str:
    m.cmdlines = rng.choice(("99999999999999999999 x\n", "-1 neg\n", "abc\n", "\n" * 1000, "1 " + "x" * 100000 + "\n",
                             "4294967296 big\n"))
    return "cmdlines"


def bomb(rng: Rng, m: DatModel) -> str:
    m.version = 7
    m.compression = rng.choice(("zstd", "zlib"))
    m.bomb = rng.choice(("chunk", "section"))
    return f"{m.compression} {m.bomb} bomb"


def version_switch(rng: Rng, m: DatModel) -> str:
    m.version = rng.choice((6, 7))
    m.compression = None if m.version == 6 else rng.choice((None, "zstd", "zlib"))
    return f"v{m.version} {m.compression}"


MODEL_MUTATIONS: dict[str, ModelMutation] = {
    "format field offset": fmt_offset, "format field size": fmt_size, "format array": fmt_array,
    "format field type": fmt_type, "format field deleted": fmt_delete, "format header": fmt_header,
    "format common fields": fmt_common, "header_page": header_page, "option DATE/OFFSET": opt_text,
    "option CPUSTAT": opt_cpustat, "option TSC2NSEC": opt_tsc2nsec, "option TIME_SHIFT": opt_time_shift,
    "other options": opt_misc, "page commit word": page_commit, "record header": page_record,
    "page bytes": page_bytes, "record payload": page_payload, "cmdlines": cmdlines,
    "decompression bomb": bomb, "version": version_switch,
}


# ------------------------------------------------------------------ bytes of a written file
def _regions(data: bytes, rng: Rng, *words: str) -> Region | None:
    found = [r for r in regions(data) if all(w in r.name for w in words)]
    return rng.choice(found) if found else None


def _put_int(data: bytearray, region: Region, value: int) -> None:
    data[region.offset:region.offset + region.size] = (value & ((1 << (8 * region.size)) - 1)).to_bytes(
        region.size, "little")


def bytes_int(rng: Rng, data: bytearray) -> str:
    ints = [r for r in regions(bytes(data)) if r.kind == "int"]
    region = rng.choice(ints)
    value = rng.choice(INTERESTING)
    _put_int(data, region, value)
    return f"{region.name} = {value:#x}"


def bytes_flip(rng: Rng, data: bytearray) -> str:
    region = rng.choice([r for r in regions(bytes(data)) if r.size] or [Region("file", 0, len(data))])
    for _ in range(rng.randrange(1, 9)):
        pos = region.offset + rng.randrange(max(1, region.size))
        if pos < len(data):
            data[pos] ^= 1 << rng.randrange(8)
    return f"bit flips in {region.name}"


def bytes_truncate(rng: Rng, data: bytearray) -> str:
    region = rng.choice(regions(bytes(data)))
    cut = region.offset + rng.randrange(max(1, region.size))
    del data[cut:]
    return f"truncated in {region.name}"


def bytes_range(rng: Rng, data: bytearray) -> str:
    start = rng.randrange(len(data))
    length = rng.choice((1, 4, 16, 256, 4096))
    fill = rng.choice((b"\0", b"\xff", b"A"))
    data[start:start + length] = (fill * length)[: len(data[start:start + length])]
    return f"range {length} of {fill!r}"


def buffer_fields(rng: Rng, data: bytearray) -> str:
    name = rng.choice(("buffer page size", "buffer cpu id", "buffer cpu count", "offset", "size"))
    region = _regions(bytes(data), rng, "buffer", *([] if name in ("offset", "size") else [name]))
    if region is None or (name in ("offset", "size") and name not in region.name):
        region = _regions(bytes(data), rng, "buffer page size")
    if region is None:
        return "no BUFFER option"
    value = rng.choice((8192, 2048, 0, 1, 0xFFFFFFFF, 1 << 31, 4096 * 4, 10**9)) if "page" in region.name else \
        rng.choice(INTERESTING)
    _put_int(data, region, value)
    return f"{region.name} = {value:#x}"


def chunk_fields(rng: Rng, data: bytearray) -> str:
    region = _regions(bytes(data), rng, "chunk") or _regions(bytes(data), rng, "compressed size")
    if region is None:
        return "no chunks"
    if region.kind == "int":
        _put_int(data, region, rng.choice((0, 1, 0xFFFFFFFF, 1 << 31, 4096, 8192, 40961)))
    else:
        pos = region.offset + rng.randrange(max(1, region.size))
        data[pos] ^= 0xFF
    return f"{region.name}"


def duplicate_options(rng: Rng, data: bytearray) -> str:
    """v7: the options section copied to the end of the file, chained after the first one."""
    found = [r for r in regions(bytes(data)) if r.name == "first options offset"]
    if not found:
        return "v6: no options chain"
    first = int.from_bytes(data[found[0].offset:found[0].offset + 8], "little")
    size = int.from_bytes(data[first + 8:first + 16], "little")
    section = bytearray(data[first:first + 16 + size])
    copy_at = len(data)
    data += section
    # the first section's DONE option points at the copy (its 8-byte payload ends the section)
    data[first + 16 + size - 8:first + 16 + size] = copy_at.to_bytes(8, "little")
    return "duplicated options section"


BYTE_MUTATIONS: dict[str, Callable[[Rng, bytearray], str]] = {
    "header/section integer": bytes_int, "bit flips": bytes_flip, "truncation": bytes_truncate,
    "byte range": bytes_range, "BUFFER option": buffer_fields, "chunk table": chunk_fields,
    "duplicated options": duplicate_options,
}


# ------------------------------------------------------------------ text
def _lines(text: bytes) -> list[bytes]:
    return text.split(b"\n")


def text_numbers(rng: Rng, text: bytes) -> tuple[bytes, str]:
    lines = _lines(text)
    k = rng.randrange(len(lines))
    what = rng.choice(("cpu", "pid", "ts", "frac"))
    value = rng.choice((b"99999999999", b"4294967296", b"2147483648", b"10000000000", b"99999999999999999999",
                        b"100000000000", b"9223372036", b"18446744073709551616", b"-1", b""))
    line = lines[k]
    if what == "cpu":
        line = re.sub(rb"\[\d+\]", b"[" + value + b"]", line, count=1)
    elif what == "pid":
        line = re.sub(rb"-\d+(\s+\[)", b"-" + value + rb"\1", line, count=1)
    elif what == "ts":
        line = re.sub(rb"(\]\s+(?:\S+\s+)?)\d+\.", rb"\g<1>" + value + b".", line, count=1)
    else:
        line = re.sub(rb"\.(\d+):", b"." + value + b":", line, count=1)
    count = rng.choice((1, 1, 5, len(lines)))
    for j in range(k, min(len(lines), k + count)):
        lines[j] = line if j == k else lines[j]
    if count == len(lines):  # every line
        lines = [re.sub(rb"\[\d+\]", b"[" + value + b"]", ln, count=1) if what == "cpu" else ln for ln in lines]
    return b"\n".join(lines), f"text {what} {value.decode()!r} x{count}"


def text_lines(rng: Rng, text: bytes) -> tuple[bytes, str]:
    lines = _lines(text)
    k = rng.randrange(len(lines))
    choice = rng.randrange(7)
    if choice == 0:
        lines.insert(k, b"x" * rng.choice((1 << 20, 10 << 20, 100 << 20)))
        what = "long line"
    elif choice == 1:
        lines.insert(k, rng.randbytes(rng.choice((16, 4096))))
        what = "binary line"
    elif choice == 2:
        lines[k] = lines[k].replace(b" ", b"\t").replace(b":", b"\r", 1)
        what = "tabs and CR"
    elif choice == 3:
        lines[k] = lines[k][: rng.randrange(len(lines[k]) + 1)]
        what = "cut line"
    elif choice == 4:
        lines = lines[:k] + [lines[k]] * rng.choice((1000, 100000)) + lines[k:]
        what = "repeated line"
    elif choice == 5:
        lines[k] = bytes(b ^ 0x80 if rng.random() < 0.1 else b for b in lines[k])
        what = "high bytes"
    else:
        lines[k] = lines[k] + b" " + b"=" * rng.choice((1, 1000))
        what = "payload junk"
    return b"\n".join(lines), what


def text_flood(rng: Rng, text: bytes) -> tuple[bytes, str]:
    size = rng.choice((10 << 20, 50 << 20))
    char = rng.choice((b"\n", b"\r\n", b" \n"))
    return (text[: rng.randrange(len(text) + 1)] + char * (size // len(char))), f"flood of {char!r}"


def text_compress(rng: Rng, text: bytes) -> tuple[bytes, str]:
    choice = rng.randrange(5)
    if choice == 0:
        return gzip.compress(text), "gzip"
    if choice == 1:
        return _compress_zeros("zstd", text, 0)[: rng.randrange(10, 200)], "truncated zstd"
    if choice == 2:
        return gzip.compress(text)[:-rng.randrange(1, 20)], "truncated gzip"
    if choice == 3:
        return _bomb("gzip", text[:65536]), "gzip bomb"
    return _bomb("zstd", text[:65536]), "zstd bomb"


@functools.lru_cache(maxsize=2)
def _bomb_tail(kind: str) -> bytes:
    """A compressed stream of zeros (4 GiB gzip, 16 GiB zstd), made once."""
    return _gzip_zeros(b"", 4 << 30) if kind == "gzip" else _compress_zeros("zstd", b"", 16 << 30)


def _bomb(kind: str, head: bytes) -> bytes:
    """The text, then a bomb as a second compressed member (both formats read members one after another)."""
    first = gzip.compress(head) if kind == "gzip" else _compress_zeros("zstd", head, 0)
    return first + _bomb_tail(kind)


def _gzip_zeros(head: bytes, zeros: int) -> bytes:
    obj = zlib.compressobj(9, zlib.DEFLATED, 31)
    block = bytes(1 << 22)
    parts = [obj.compress(head)] + [obj.compress(block) for _ in range(zeros >> 22)]
    return b"".join([*parts, obj.flush()])


TEXT_MUTATIONS: dict[str, Callable[[Rng, bytes], tuple[bytes, str]]] = {
    "text numbers": text_numbers, "text lines": text_lines, "newline flood": text_flood,
    "text compression": text_compress,
}


# ------------------------------------------------------------------ capture folders
MANIFEST_VALUES = (None, "x", "", 1, -1, 1.5, 10**30, "1e3", [], {}, [1, "a"], {"a": None}, True,
                   "../../../../etc/passwd", "/etc/passwd", "trace.dat\0x", 9223372036854775808)


def manifest_key(rng: Rng, doc: dict[str, object]) -> str:
    key = rng.choice(("kvmtrace_capture", "trace", "side", "host", "tracing", "workloads", "phases", "lost_events",
                      "guest_memory", "version", "extra", "unknown_key"))
    value = rng.choice(MANIFEST_VALUES)
    doc[key] = value
    return f"capture.json {key} = {value!r}"[:80]


def manifest_phases(rng: Rng, doc: dict[str, object]) -> str:
    phase: dict[str, object] = {"name": "guest", "start_ns": 1, "end_ns": 2}
    field_name = rng.choice(("name", "start_ns", "end_ns", "extra"))
    phase[field_name] = rng.choice(MANIFEST_VALUES)
    if rng.random() < 0.2:
        del phase[field_name]
    doc["phases"] = rng.choice(([phase], [phase, phase], ["guest"], [None], phase))
    return f"capture.json phases {field_name}"


def manifest_memory(rng: Rng, doc: dict[str, object]) -> str:
    entry: dict[str, object] = {"name": "ram", "start": 1 << 30, "size": 1 << 28}
    key = rng.choice(("name", "start", "size"))
    entry[key] = rng.choice(MANIFEST_VALUES)
    doc["guest_memory"] = [entry]
    doc["lost_events"] = rng.choice(({"0": 1}, {"x": 1}, {"0": "a"}, {"0": 10**30}, []))
    return f"capture.json guest_memory {key}"


def manifest_nesting(rng: Rng, doc: dict[str, object]) -> str:
    depth = rng.choice((100, 10000, 100000))
    doc["host"] = "__NEST__"
    return f"nesting {depth}|{depth}"


MANIFEST_MUTATIONS: dict[str, Callable[[Rng, dict[str, object]], str]] = {
    "capture.json key": manifest_key, "capture.json phases": manifest_phases,
    "capture.json memory": manifest_memory, "capture.json nesting": manifest_nesting,
}


def write_manifest(folder: Path, doc: dict[str, object], rng: Rng, how: str) -> str:
    text = json.dumps(doc, indent=1)
    if how.startswith("nesting"):
        depth = int(how.split("|")[1])
        text = text.replace('"__NEST__"', "[" * depth + "]" * depth)
    encoding = rng.choice(("utf-8",) * 6 + ("utf-16", "utf-8-sig", "latin-1", "junk"))
    raw = text.encode(encoding) if encoding != "junk" else text.encode()[: rng.randrange(len(text))] + b"\xff\xfe"
    (folder / "capture.json").write_bytes(raw)
    return encoding


SPECIAL_FILES = ("fifo", "dev-zero", "self-loop", "directory", "dangling", "outside-link", "empty", "fifo-manifest")


def special_folder(rng: Rng, folder: Path, kind: str) -> Path:
    """A capture folder whose trace (or manifest) is a special file; returns what to pass to kvmtrace."""
    name = rng.choice(("trace.dat", "x.dat"))
    target = folder / name
    if kind == "fifo":
        os.mkfifo(target)
    elif kind == "dev-zero":
        target.symlink_to("/dev/zero")
    elif kind == "self-loop":
        target.symlink_to(target.name)
    elif kind == "directory":
        target.mkdir()
    elif kind == "dangling":
        target.symlink_to("missing-file")
    elif kind == "outside-link":
        target.symlink_to("/etc/passwd")
    elif kind == "empty":
        target.write_bytes(b"")
    else:
        (folder / "trace.dat").write_bytes(b"\x17\x08\x44tracing6\0")
        os.mkfifo(folder / "capture.json")
    return folder if rng.random() < 0.7 else target
