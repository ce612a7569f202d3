"""Write the corpus's field-kind captures: one trace.dat per field kind, whose payload is that kind.

Each kind is one event format (``bench:kind_<name>``) built here from field declarations, with
natural alignment, and a value generator. :func:`write_kind` encodes one block of events (at most
``BLOCK`` events, alternating over 2 CPUs) with :class:`kvmtrace.fileformats.writer.EventEncoder`
and :class:`PageEncoder`, then appends that block's pages again and again, every page timestamp
shifted by the block's span, until the capture holds at least the number of events asked for.
So a 10 M-event capture costs one block of Python encoding; the values repeat with the blocks.
"""

from __future__ import annotations

import io
import math
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kvmtrace.fileformats.writer import EventEncoder, PageEncoder, TraceDatWriter

BLOCK = 1 << 17
CPUS = 2
BASE_NS = 1_000_000_000
PAGE_SIZE = 4096
FIRST_ID = 3001
COMMON = (
    "\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n"
    "\tfield:unsigned char common_flags;\toffset:2;\tsize:1;\tsigned:0;\n"
    "\tfield:unsigned char common_preempt_count;\toffset:3;\tsize:1;\tsigned:0;\n"
    "\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;\n\n"
)
Values = Callable[[int, random.Random], dict[str, Any]]


@dataclass(frozen=True)
class Field:
    """One field declaration: ``decl`` as the format file writes it, its size, alignment, sign."""

    decl: str
    size: int
    align: int
    signed: bool = False


@dataclass(frozen=True)
class Kind:
    """One field kind: the corpus member it makes, its fields, print fmt and values."""

    name: str
    label: str
    fields: tuple[Field, ...]
    print_fmt: str
    values: Values
    big_endian: bool = False
    long_size: int = 8

    @property
    def event(self) -> str:
        return f"kind_{self.name.replace('-', '_')}"


def format_text(kind: Kind, event_id: int) -> str:
    """The tracefs format text of ``kind``'s event: common fields, then its own, aligned."""
    lines, offset = [], 8
    for f in kind.fields:
        offset = (offset + f.align - 1) // f.align * f.align
        lines.append(f"\tfield:{f.decl};\toffset:{offset};\tsize:{f.size};\tsigned:{int(f.signed)};\n")
        offset += f.size
    return (f"name: {kind.event}\nID: {event_id}\nformat:\n{COMMON}{''.join(lines)}\n"
            f"print fmt: {kind.print_fmt}\n")


# ----------------------------------------------------------------------------- value generators

STRINGS = [f"/usr/lib/bench/{'sub/' * (i % 7)}file-{i:03d}{'.so' if i % 3 else ''}" for i in range(300)]
COMMS = [f"worker/{i}:{i % 4}H"[:15] for i in range(200)]
INT_RANGES = {"u8v": (0, 255), "s8v": (-128, 127), "u16v": (0, 65535), "s16v": (-32768, 32767),
              "u32v": (0, 2**32 - 1), "s32v": (-(2**31), 2**31 - 1), "u64v": (0, 2**64 - 1),
              "s64v": (-(2**63), 2**63 - 1)}


def _u64x6(i: int, rng: random.Random) -> dict[str, Any]:
    return {"args": [rng.getrandbits(64 if j % 2 else 16) for j in range(6)]}


def _u8x15(i: int, rng: random.Random) -> dict[str, Any]:
    return {"bytes": [rng.getrandbits(8) for _ in range(15)]}


def _u32_list(rng: random.Random) -> list[int]:
    return [rng.getrandbits(32) for _ in range(rng.randint(1, 16))]


def _tail(i: int, rng: random.Random) -> dict[str, Any]:
    vals = _u32_list(rng)
    return {"n": len(vals), "vals": vals}


def _dynarray(i: int, rng: random.Random) -> dict[str, Any]:
    return {"vals": _u32_list(rng)}


def _string(i: int, rng: random.Random) -> dict[str, Any]:
    return {"name": rng.choice(STRINGS)}


def _comm(i: int, rng: random.Random) -> dict[str, Any]:
    return {"comm": rng.choice(COMMS)}


def _bools(i: int, rng: random.Random) -> dict[str, Any]:
    return {name: rng.getrandbits(1) for name in ("a", "b", "c", "d")}


def _ints(i: int, rng: random.Random) -> dict[str, Any]:
    return {name: rng.randint(lo, hi) for name, (lo, hi) in INT_RANGES.items()}


INT_FIELDS = (
    Field("unsigned char u8v", 1, 1), Field("signed char s8v", 1, 1, True),
    Field("unsigned short u16v", 2, 2), Field("short s16v", 2, 2, True),
    Field("unsigned int u32v", 4, 4), Field("int s32v", 4, 4, True),
    Field("unsigned long long u64v", 8, 8), Field("long long s64v", 8, 8, True),
)
INT_PRINT = ('"u8=%u s8=%d u16=%u s16=%d u32=%u s32=%d u64=%llu s64=%lld", REC->u8v, REC->s8v, '
             "REC->u16v, REC->s16v, REC->u32v, REC->s32v, REC->u64v, REC->s64v")
ARGS_PRINT = '"(%llx, %llx, %llx, %llx, %llx, %llx)", ' + ", ".join(f"REC->args[{j}]" for j in range(6))
KINDS = (
    Kind("u64x6", "fixed int array u64[6]", (Field("u64 args[6]", 48, 8),), ARGS_PRINT, _u64x6),
    Kind("u8x15", "fixed byte array u8[15]", (Field("u8 bytes[15]", 15, 1),),
         '"%s", __print_hex(REC->bytes, 15)', _u8x15),
    Kind("tail-u32", "trailing array u32 vals[]", (Field("unsigned int n", 4, 4), Field("u32 vals[]", 0, 4)),
         '"n=%u first=%u", REC->n, REC->vals[0]', _tail),
    Kind("dynarray-u32", "dynamic array __data_loc u32[]", (Field("__data_loc u32[] vals", 4, 4),),
         '"%s", __print_array(__get_dynamic_array(vals), __get_dynamic_array_len(vals) / 4, 4)', _dynarray),
    Kind("dataloc-str", "__data_loc char[] string", (Field("__data_loc char[] name", 4, 4),),
         '"%s", __get_str(name)', _string),
    Kind("relloc-str", "__rel_loc char[] string", (Field("__rel_loc char[] name", 4, 4),),
         '"%s", __get_rel_str(name)', _string),
    Kind("char16", "char[16] string", (Field("char comm[16]", 16, 1),), '"%s", REC->comm', _comm),
    Kind("bool", "bool x4", tuple(Field(f"bool {n}", 1, 1) for n in "abcd"),
         '"%d %d %d %d", REC->a, REC->b, REC->c, REC->d', _bools),
    Kind("ints", "integers 1/2/4/8 B, signed+unsigned", INT_FIELDS, INT_PRINT, _ints),
    Kind("ints-be", "integers, big endian", INT_FIELDS, INT_PRINT, _ints, big_endian=True),
    Kind("ints-32", "integers, 32-bit (long 4 B)", INT_FIELDS, INT_PRINT, _ints, long_size=4),
)
BY_NAME = {k.name: k for k in KINDS}


# ----------------------------------------------------------------------------- writing


def block_values(kind: Kind, events: int, seed: int = 1) -> Iterator[tuple[int, int, dict[str, Any]]]:
    """The block's events in time order: (timestamp ns, cpu, field values); the same for the same seed."""
    rng = random.Random(seed)
    ts = BASE_NS
    for i in range(events):
        ts += (1 << 28) if i % 50_000 == 49_999 else rng.randint(20, 400)  # now and then a TIME_EXTEND
        yield ts, i % CPUS, {"common_pid": 1000 + i % 64, **kind.values(i, rng)}


def block_pages(kind: Kind, text: str, events: int, seed: int = 1) -> tuple[list[bytes], int]:
    """One block of ``events`` events, alternating CPUs: each CPU's pages and the block's span (ns)."""
    enc = EventEncoder(text, kind.big_endian, "bench")
    sinks = [io.BytesIO() for _ in range(CPUS)]
    pages = [PageEncoder(s, PAGE_SIZE, kind.long_size, kind.big_endian) for s in sinks]
    last = BASE_NS
    for ts, cpu, values in block_values(kind, events, seed):
        pages[cpu].add(ts, enc.encode(values))
        last = ts
    for p in pages:
        p.flush()
    return [s.getvalue() for s in sinks], last - BASE_NS + 1_000


def shifted(pages: bytes, big_endian: bool, shift: int) -> bytes:
    """``pages`` with every page's u64 timestamp (its first 8 bytes) moved by ``shift`` ns."""
    if not shift or not pages:
        return pages
    work = np.frombuffer(pages, (">" if big_endian else "<") + "u8").reshape(-1, PAGE_SIZE // 8).copy()
    work[:, 0] += np.uint64(shift)
    return work.tobytes()


def write_kind(kind: Kind, out: Path, events: int, tmpdir: str | None = None) -> int:
    """Write ``kind``'s capture (v6, uncompressed) with at least ``events`` events; returns its count."""
    block = min(events, BLOCK)
    copies = math.ceil(events / block)
    text = format_text(kind, FIRST_ID + KINDS.index(kind))
    cpu_pages, span = block_pages(kind, text, block)
    with TraceDatWriter(version=6, big_endian=kind.big_endian, long_size=kind.long_size,
                        page_size=PAGE_SIZE, tmpdir=tmpdir) as w:
        w.add_event_format("bench", text)
        w.set_cmdlines({1000 + p: f"bench-{p}" for p in range(64)})
        w.uname = f"Linux bench 6.1.0 #1 SMP {'ppc64' if kind.big_endian else 'x86_64'}"
        w.tracecmd_version = "kvmtrace-bench-corpus"
        for k in range(copies):
            for cpu, pages in enumerate(cpu_pages):
                w.add_raw_pages(cpu, shifted(pages, kind.big_endian, k * span))
        w.write(out)
    return block * copies
