"""The regression corpus: one small input per failure the campaigns found (and per cause the issue
names), with what kvmtrace must do with it. ``scripts/fuzz/make_corpus.py`` writes them into
tests/fuzz/corpus/ (deterministic: the same files every time); tests/test_fuzz_corpus.py replays them.

Expectations: ``exit2`` (a CaptureError whose one line matches ``message``) or ``read`` (read,
the report noting the damage when ``note`` is given). Inputs too large to keep (bombs, floods) or
that git cannot hold (FIFOs, links) are ``recipe`` cases, made when the test runs.
"""

from __future__ import annotations

import json
import re
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tests.fuzz.model import DatModel, _compress_zeros, from_capture

CORPUS = Path(__file__).resolve().parent / "corpus"
ROOT = Path(__file__).resolve().parents[2]
SEED = ROOT / "tests" / "fixtures" / "board-device-irq"
FOUND = Path(__file__).resolve().parent / "found"  # inputs the coverage-guided fuzzer found, kept as they are


@dataclass
class Case:
    """One corpus input and what kvmtrace must do with it."""

    name: str
    origin: str  # the campaign input or the cause it stands for
    expect: str  # "exit2" or "read"
    message: str = ""  # regex the one line must match (exit2), or a note the report must hold (read)
    target: str = "trace.dat"  # what kvmtrace is given, relative to the case folder ("." the folder)
    recipe: str = ""  # made at test time: see make_recipe
    files: dict[str, bytes] = field(default_factory=dict, repr=False)

    def doc(self) -> dict[str, str]:
        return {k: v for k, v in self.__dict__.items() if k != "files" and v != ""}


def _model() -> DatModel:
    return from_capture(SEED / "trace.dat", pages_per_cpu=4)


def _dat(edit: Callable[[DatModel], None], version: int = 7, compression: str | None = "zstd") -> bytes:
    m = _model()
    m.version, m.compression = version, compression if version == 7 else None
    edit(m)
    out = CORPUS / ".tmp.dat"
    m.write(out)
    data = out.read_bytes()
    out.unlink()
    return data


def _field(event: str, field_name: str, pattern: str, replacement: str) -> Callable[[DatModel], None]:
    def edit(m: DatModel) -> None:
        for k, (system, text) in enumerate(m.event_formats):
            if f"name: {event}\n" in text:
                lines = text.splitlines(keepends=True)
                for j, ln in enumerate(lines):
                    if re.search(rf"\b{field_name}(\[[^\]]*\])?;", ln):
                        lines[j] = re.sub(pattern, replacement, ln) if pattern else ""
                m.event_formats[k] = (system, "".join(lines))
    return edit


def _header_page(name: str, what: str, value: int) -> Callable[[DatModel], None]:
    def edit(m: DatModel) -> None:
        m.header_page = re.sub(rf"(\b{name};\s*(?:offset:\d+;\s*)?){what}:\d+", rf"\g<1>{what}:{value}", m.header_page)
    return edit


def _option(opt: int, data: bytes) -> Callable[[DatModel], None]:
    def edit(m: DatModel) -> None:
        m.options.append((opt, data))
    return edit


def _page_word(offset: int, value: int, size: int = 8) -> Callable[[DatModel], None]:
    def edit(m: DatModel) -> None:
        key = sorted(m.pages)[0]
        data = bytearray(m.pages[key])
        data[offset:offset + size] = value.to_bytes(size, "little")
        m.pages[key] = bytes(data)
    return edit


def _missed_count(m: DatModel) -> None:
    key = sorted(m.pages)[0]
    data = bytearray(m.pages[key])
    commit = int.from_bytes(data[8:16], "little") & ((1 << 27) - 1)
    data[8:16] = (commit | (3 << 30)).to_bytes(8, "little")
    data[16 + commit:24 + commit] = ((1 << 64) - 1).to_bytes(8, "little")
    m.pages[key] = bytes(data)


def _to_instance(m: DatModel) -> None:
    m.pages = {("inst", cpu): data for (_buffer, cpu), data in m.pages.items()}


def _irq_value(m: DatModel) -> None:
    """The first vgic_update_irq_pending record's irq (a __u32 at payload offset 16) set to 2516582427."""
    import numpy as np

    from kvmtrace.ingest.tracedat.pages import walk_pages

    wanted = next(int(re.search(r"ID: (\d+)", t).group(1))  # type: ignore[union-attr]
                  for _s, t in m.event_formats if "name: vgic_update_irq_pending\n" in t)
    for key in sorted(m.pages):
        data = bytearray(m.pages[key])
        records = walk_pages(np.frombuffer(bytes(data), np.uint8), m.page_size, 8, 16, False)
        for at in records.payload.tolist():
            if int.from_bytes(data[at:at + 2], "little") == wanted:
                data[at + 16:at + 20] = (2516582427).to_bytes(4, "little")
                m.pages[key] = bytes(data)
                return


def _patch(data: bytes, name: str, value: int, nth: int = 0) -> bytes:
    from tests.fuzz.layout import regions

    region = [r for r in regions(data) if r.name == name][nth]
    out = bytearray(data)
    out[region.offset:region.offset + region.size] = (value & ((1 << (8 * region.size)) - 1)).to_bytes(
        region.size, "little")
    return bytes(out)


def _dup_options(data: bytes) -> bytes:
    import random

    from tests.fuzz.mutations import duplicate_options

    out = bytearray(data)
    duplicate_options(random.Random(0), out)
    return bytes(out)


def _manifest(**changes: object) -> dict[str, bytes]:
    doc = json.loads((SEED / "capture.json").read_text())
    doc.update(changes)
    return {"capture.json": json.dumps(doc).encode(), "trace.dat": (SEED / "trace.dat").read_bytes()}


def _text() -> bytes:
    """The first 300 lines of the bundled kernel trace text (small enough to keep many copies)."""
    lines = (ROOT / "tests" / "fixtures" / "text" / "kernel_trace.txt").read_bytes().split(b"\n")
    return b"\n".join(lines[:300]) + b"\n"


def _text_line(pattern: bytes, replacement: bytes, count: int = 1) -> bytes:
    return re.sub(pattern, replacement, _text(), count=count)


def dat_cases() -> list[Case]:
    ss = "sched_switch"
    return [
        Case("field-offset-1e9", "C kernels trust format files: field offset outside the record", "read",
             "records end before its bytes",
             files={"trace.dat": _dat(_field(ss, "prev_pid", r"offset:\d+", "offset:1000000000"))}),
        Case("field-offset-past-record", "field offset past its records: other records' bytes", "read",
             "records end before its bytes",
             files={"trace.dat": _dat(_field(ss, "next_prio", r"offset:\d+", "offset:4088"))}),
        Case("field-size-2e31", "field size 2^31 (a scalar)", "read",
             files={"trace.dat": _dat(_field(ss, "prev_state", r"size:\d+", "size:2147483648"))}),
        Case("field-size-0", "field size 0", "read",
             files={"trace.dat": _dat(_field(ss, "prev_prio", r"size:\d+", "size:0"))}),
        Case("char-array-1e9", "a char array of 10^9 bytes asks for 1.9 TiB", "read",
             files={"trace.dat": _dat(_field(ss, "prev_comm", r"\[16\];(\s*offset:\d+;\s*)size:16",
                                             r"[1000000000];\g<1>size:1000000000"))}),
        Case("trailing-array-element-0", "a trailing array of element size 0", "read",
             files={"trace.dat": _dat(_field(ss, "next_prio", r"field:int next_prio;(\s*offset:\d+;\s*)size:4",
                                             r"field:struct x next_prio[];\g<1>size:0"))}),
        Case("deleted-field", "a deleted field: ColumnNotFoundError in a model", "read",
             files={"trace.dat": _dat(_field(ss, "next_pid", "", ""))}),
        Case("field-as-list", "a field turned into an array: a list column in an asof join", "read",
             files={"trace.dat": _dat(_field(ss, "next_pid", r"pid_t next_pid;", "pid_t next_pid[x];"))}),
        Case("wakeup-pid-as-list", "campaign 404 #442: sched_wakeup's pid as an array (a list in an asof join)",
             "read", files={"trace.dat": _dat(_field("sched_wakeup", "pid", r"pid_t pid;", "pid_t pid[0];"))}),
        Case("next-pid-size-2e40", "campaign 505 #652: next_pid of size 2^40 (an Int64 column in an asof join "
             "with Int32)", "read", "field next_pid read as Int32",
             files={"trace.dat": _dat(_field(ss, "next_pid", r"size:\d+", "size:1099511627776"))}),
        Case("header-page-commit-16", "header_page commit size 16", "exit2",
             r"header_page: commit at offset 8, size 16: expected offset 8, size 4 or 8",
             files={"trace.dat": _dat(_header_page("commit", "size", 16))}),
        Case("header-page-data-1e9", "a data offset of 10^9", "exit2", r"header_page: data at offset 1000000000",
             files={"trace.dat": _dat(_header_page("data", "offset", 10**9))}),
        Case("missed-count-2e64", "a missed-events count of 2^64-1", "read",
             files={"trace.dat": _dat(_missed_count, version=6)}),
        Case("date-abc", "option DATE 'abc': ValueError", "exit2", r"option DATE at .*expected a 64-bit integer",
             files={"trace.dat": _dat(_option(1, b"abc\0"))}),
        Case("offset-beyond-int64", "option OFFSET beyond int64: OverflowError", "exit2",
             r"option OFFSET at .*expected a 64-bit integer",
             files={"trace.dat": _dat(_option(7, b"99999999999999999999999\0"))}),
        Case("cpustat-1e5", "CPUSTAT 'overrun: 1e5': ValueError", "read", "not counts, not used",
             files={"trace.dat": _dat(lambda m: setattr(m, "cpustats", ["CPU: 0\noverrun: 1e5\n"]))}),
        Case("time-shift-short", "TIME_SHIFT shorter than it claims: struct.error", "exit2",
             r"option TIME_SHIFT at .*: file ends early",
             files={"trace.dat": _dat(_option(12, struct.pack("<QII", 1, 0, 1000) + struct.pack("<I", 0)))}),
        Case("tsc2nsec-shift-255", "TSC2NSEC shift 255: OverflowError", "exit2", r"TSC shift 255: expected 0 to 32",
             files={"trace.dat": _dat(_option(14, struct.pack("<IIQ", 4294967295, 255, 4)))}),
        Case("buffer-cpu-ffffffff", "a buffer CPU id of 0xFFFFFFFF", "exit2", r"cpu id 4294967295",
             files={"trace.dat": _patch(_dat(lambda m: None), "buffer cpu id", 0xFFFFFFFF)}),
        Case("buffer-page-8192", "BUFFER page size 8192 dropped events", "read",
             files={"trace.dat": _patch(_dat(lambda m: None), "buffer page size", 8192)}),
        Case("buffer-page-ffffffff", "BUFFER page size 0xFFFFFFFF dropped events", "read",
             files={"trace.dat": _patch(_dat(lambda m: None), "buffer page size", 0xFFFFFFFF)}),
        Case("instance-page-8192", "campaign 303 #487: an instance's BUFFER page size 8192 (silently other "
             "counts than trace-cmd)", "exit2", r"buffer 'inst' page size 8192: expected the file's page size 4096",
             files={"trace.dat": _patch(_dat(_to_instance), "buffer page size", 8192, nth=1)}),
        Case("irq-out-of-int32", "campaign 303 #782: a damaged irq value 2516582427 (a strict cast error in a model)",
             "read", "values of field irq outside", files={"trace.dat": _dat(_irq_value)}),
        Case("duplicated-options", "a duplicated options section made every event appear twice", "read",
             files={"trace.dat": _dup_options(_dat(lambda m: None))}),
        Case("chunk-size-ffffffff", "a chunk size of 0xFFFFFFFF allocates 4 GiB up front", "exit2",
             r"(needs .* more than the decompressed size limit|inflates to|corrupt zstd)",
             files={"trace.dat": _patch(_dat(lambda m: None), "cpu 0 chunk 0 size", 0xFFFFFFFF)}),
        Case("chunk-count-ffffffff", "a chunk count of 0xFFFFFFFF", "exit2", r"file ends early",
             files={"trace.dat": _patch(_dat(lambda m: None), "cpu 0 chunk count", 0xFFFFFFFF)}),
        Case("zlib-chunk-bomb", "a zlib chunk inflating far past its header", "exit2",
             r"zlib data inflates to more than", files={"trace.dat": _dat(
                 lambda m: (setattr(m, "bomb", "chunk"), setattr(m, "bomb_size", 64 << 20)), compression="zlib")}),
        Case("zstd-section-bomb", "a zstd section inflating far past its header", "exit2",
             r"zstd", files={"trace.dat": _dat(lambda m: (setattr(m, "bomb", "section"),
                                                          setattr(m, "bomb_size", 64 << 20)))}),
    ]


def text_cases() -> list[Case]:
    zeros = _compress_zeros("zstd", _text()[:4096], 1 << 30)
    return [
        Case("text-cpu-huge", "an out-of-range CPU: polars cast error", "read", "CPU, pid or timestamp out of range",
             target="trace.txt", files={"trace.txt": _text_line(rb"\[00(\d)\]", rb"[99999999999]")}),
        Case("text-pid-huge", "an out-of-range pid: polars cast error", "read", "CPU, pid or timestamp out of range",
             target="trace.txt", files={"trace.txt": _text_line(rb"-(\d+)(\s+\[)", rb"-18446744073709551616\2")}),
        Case("text-ts-1e11", "timestamps of 10^10-10^11 s wrapped int64 silently", "read",
             "CPU, pid or timestamp out of range", target="trace.txt",
             files={"trace.txt": _text_line(rb"(\]\s+\S+\s+)(\d+)\.", rb"\g<1>100000000000.")}),
        Case("text-all-out-of-range", "every line out of range", "exit2", r"line \d+: expected a trace-cmd report "
             "or tracefs trace line, got an event line with its CPU, pid or timestamp out of range", target="trace.txt",
             files={"trace.txt": _text_line(rb"\[(\d+)\]", rb"[4294967296]", count=0)}),
        Case("text-duplicate-keys", "atheris: a -R payload naming a key twice (duplicate regex group)", "read",
             target="trace.txt", files={"trace.txt": _text() + b"            bash-5107    [000] d.h1.   457.503700: "
                                        b"hrtimer_start: hrtimer=1 hrtimer=2 function=x now=3\n"}),
        Case("text-layout-near-start", "atheris: a dominant layout whose '.' is before column 8 (the numpy tier "
             "read a word before the line: ValueError)", "read", "not an event line",
             target="trace.txt", files={"trace.txt": (FOUND / "atheris-layout-near-start.txt").read_bytes()}),
        Case("text-zstd-bomb", "a zstd text bomb exhausted memory", "exit2", r"more than the decompressed size limit",
             target="trace.txt.zst", files={"trace.txt.zst": zeros}),
        Case("text-newline-flood", "a 50 MB file of newlines exhausted memory", "exit2",
             r"expected a trace-cmd report or tracefs trace line", target="trace.txt", recipe="newline-flood"),
        Case("text-long-line", "a line past the line length limit", "exit2", r"line 3: a text line needs .* more than "
             "the line length limit", target="trace.txt", recipe="long-line"),
        Case("text-gzip-bomb", "a gzip text bomb exhausted memory", "exit2", r"more than the decompressed size limit",
             target="trace.txt.gz", recipe="gzip-bomb"),
    ]


def dir_cases() -> list[Case]:
    nested = _manifest()
    nested["capture.json"] = nested["capture.json"].replace(b'"host": {', b'"host": {"deep": ' + b"[" * 100000
                                                              + b"]" * 100000 + b", ", 1)
    utf16 = _manifest()
    utf16["capture.json"] = utf16["capture.json"].decode().encode("utf-16")
    return [
        Case("manifest-trace-null", "capture.json \"trace\": null", "exit2",
             r"key 'trace': expected a non-empty string", target=".", files=_manifest(trace=None)),
        Case("manifest-phase-string", "phases as strings", "exit2", r"key 'phases\[0\]': expected an object",
             target=".", files=_manifest(phases=["guest"])),
        Case("manifest-phase-no-name", "phases without names", "exit2", r"key 'phases\[0\]': expected a 'name' key",
             target=".", files=_manifest(phases=[{"start_ns": 1, "end_ns": 2}])),
        Case("manifest-time-string", "string times", "exit2", r"key 'phases\[0\].start_ns': expected a time in ns",
             target=".", files=_manifest(phases=[{"name": "x", "start_ns": "1e3", "end_ns": 2}])),
        Case("manifest-time-huge", "huge times", "exit2", r"key 'phases\[0\].end_ns': expected a time in ns",
             target=".", files=_manifest(phases=[{"name": "x", "start_ns": 1, "end_ns": 10**30}])),
        Case("manifest-version-key", "unknown keys ('version' clashed with a field)", "read", target=".",
             files=_manifest(version=[1, "a"], extra={"x": 1}, unknown_key=None)),
        Case("manifest-utf16", "UTF-16 capture.json", "exit2", r"capture.json: byte 0: expected UTF-8 JSON text",
             target=".", files=utf16),
        Case("manifest-deep", "deep nesting: RecursionError", "exit2", r"capture.json", target=".", files=nested),
        Case("manifest-etc-passwd", "\"trace\": \"/etc/passwd\" was read and quoted", "exit2",
             r"key 'trace': expected a file name inside the capture folder", target=".",
             files=_manifest(trace="/etc/passwd")),
        Case("manifest-dotdot", "a trace path out of the folder", "exit2",
             r"key 'trace': expected a file name inside the capture folder", target=".",
             files=_manifest(trace="../../etc/passwd")),
        Case("manifest-memory-string", "guest_memory with a string start", "exit2",
             r"key 'guest_memory\[0\].start': expected an address", target=".",
             files=_manifest(guest_memory=[{"name": "ram", "start": "x", "size": 1}])),
    ]


SPECIAL = {
    "special-fifo": ("a FIFO named *.dat blocked forever", r"x.dat: a FIFO: expected a regular file"),
    "special-dev-zero": ("a .dat symlink to /dev/zero read forever",
                         r"trace.dat: a character device: expected a regular file"),
    "special-self-loop": ("a self-referencing symlink", r"trace.dat: cannot read: a symbolic link loop"),
    "special-directory": ("a directory named trace.dat", r"trace.dat: a directory: expected a regular file"),
    "special-outside-link": ("a symlink to a file outside the folder", r"resolves outside the capture folder"),
    "special-manifest-fifo": ("capture.json is a FIFO", r"capture.json: a FIFO: expected a regular file"),
}


def special_cases() -> list[Case]:
    return [Case(name, origin, "exit2", message, target=".", recipe=name) for name, (origin, message) in
            SPECIAL.items()]


def all_cases() -> list[Case]:
    return dat_cases() + text_cases() + dir_cases() + special_cases()


def make_recipe(case: Case, folder: Path) -> None:
    """Make a recipe case's input in ``folder`` (its kept files are there already)."""
    kind = case.recipe
    if kind == "newline-flood":
        (folder / "trace.txt").write_bytes(b"\n" * (50 << 20))
    elif kind == "long-line":
        lines = _text().split(b"\n")
        (folder / "trace.txt").write_bytes(b"\n".join([*lines[:2], b"x" * (2 << 20), *lines[2:]]))
    elif kind == "gzip-bomb":
        import zlib

        obj = zlib.compressobj(9, zlib.DEFLATED, 31)
        block = bytes(1 << 20)
        (folder / "trace.txt.gz").write_bytes(b"".join([obj.compress(block) for _ in range(512)] + [obj.flush()]))
    elif kind == "special-fifo":
        import os

        os.mkfifo(folder / "x.dat")
    elif kind == "special-dev-zero":
        (folder / "trace.dat").symlink_to("/dev/zero")
    elif kind == "special-self-loop":
        (folder / "trace.dat").symlink_to("trace.dat")
    elif kind == "special-directory":
        (folder / "trace.dat").mkdir()
    elif kind == "special-outside-link":
        (folder / "trace.dat").symlink_to("/etc/passwd")
    elif kind == "special-manifest-fifo":
        import os

        (folder / "trace.dat").write_bytes((SEED / "trace.dat").read_bytes())
        os.mkfifo(folder / "capture.json")
