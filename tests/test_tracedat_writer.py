"""The trace.dat writer, checked against trace-cmd itself (report, --stat, dump --summary)."""

from __future__ import annotations

import io
import re
import shutil
import struct
import subprocess
import zlib
from dataclasses import dataclass
from pathlib import Path

import pytest
import zstandard

from kvmtrace.fileformats.formats import parse_event_format, parse_header_page
from kvmtrace.fileformats.tracedat import header_page_text
from kvmtrace.fileformats.writer import (
    CallableCompressor,
    EventEncoder,
    PageEncoder,
    TimeShiftSample,
    TraceDatWriter,
)

FORMATS = Path(__file__).resolve().parents[1] / "kvmtrace" / "data" / "formats" / "arm64-6.1"
PRINT_FORMAT = (Path(__file__).parent / "fixtures" / "writer" / "ftrace_print.format").read_text()
EVENTS = {
    "kvm_exit": ("kvm", "kvm_exit.format"),
    "kvm_entry": ("kvm", "kvm_entry.format"),
    "sched_switch": ("sched", "sched_sched_switch.format"),
    "irq_handler_entry": ("irq", "irq_irq_handler_entry.format"),
}
BASE = 1_000_000_000
LONG_MARKER = "guest marker " + "x" * 150 + "\n"  # > 112 bytes: type_len 0 + length word

pytestmark = pytest.mark.skipif(shutil.which("trace-cmd") is None, reason="needs trace-cmd")


def zstd_compressor() -> CallableCompressor:
    version = ".".join(str(part) for part in zstandard.ZSTD_VERSION)
    return CallableCompressor("zstd", version, zstandard.ZstdCompressor(level=3).compress)


@dataclass(frozen=True)
class Expected:
    buffer: str
    cpu: int
    ts: int
    comm_pid: str
    event: str
    fields: str


def print_format(long_size: int) -> str:
    """The ftrace print format; a 32-bit kernel has a 4-byte ip and buf at offset 12."""
    if long_size == 8:
        return PRINT_FORMAT
    text = PRINT_FORMAT.replace("offset:8;\tsize:8;", "offset:8;\tsize:4;")
    return text.replace("offset:16;\tsize:0;", "offset:12;\tsize:0;")


def new_writer(version: int, compression: object, big_endian: bool, long_size: int,
               **kw: object) -> tuple[TraceDatWriter, dict[str, EventEncoder]]:
    comp = zstd_compressor() if compression == "zstd" else compression
    w = TraceDatWriter(version=version, compression=comp, big_endian=big_endian,  # type: ignore[arg-type]
                       long_size=long_size, **kw)  # type: ignore[arg-type]
    encoders = {}
    for name, (system, fname) in EVENTS.items():
        text = (FORMATS / fname).read_text()
        w.add_event_format(system, text)
        encoders[name] = EventEncoder(text, big_endian)
    w.add_ftrace_format(print_format(long_size))
    encoders["print"] = EventEncoder(print_format(long_size), big_endian)
    w.set_cmdlines({1234: "qemu-kvm", 42: "vcpu0"})
    w.uname = "Linux board 6.1.0-arm64 #1 SMP aarch64"
    w.tracecmd_version = "kvmtrace-writer"
    return w, encoders


def scenario(w: TraceDatWriter, enc: dict[str, EventEncoder], missed: int | None = 17,
             ) -> list[Expected]:
    """A handful of real arm64 events on two CPUs of the top buffer and a 'guest' buffer."""
    exp = []

    def add(buffer: str, cpu: int, ts: int, name: str, values: dict, comm_pid: str,
            fields: str) -> None:
        w.add_events(cpu, [(ts, enc[name].encode(values))], buffer=buffer)
        exp.append(Expected(buffer, cpu, ts, comm_pid, name, fields))

    add("", 0, BASE, "kvm_exit",
        {"common_pid": 1234, "ret": 1, "esr_ec": 0x16, "vcpu_pc": 0xFFFF800008001234},
        "qemu-kvm-1234", "ret=1 esr_ec=0x0016 vcpu_pc=0xffff800008001234")
    add("", 0, BASE + 500, "kvm_entry", {"common_pid": 1234, "vcpu_pc": 0xFFFF800008001238},
        "qemu-kvm-1234", "vcpu_pc=0xffff800008001238")
    # a gap of 2**28 ns does not fit the 27-bit delta: needs a TIME_EXTEND record
    add("", 0, BASE + (1 << 28), "irq_handler_entry", {"irq": 27, "name": "arch_timer"},
        "<idle>-0", "irq=27 name=arch_timer")
    add("", 0, BASE + (1 << 28) + 7, "print",
        {"common_pid": 1234, "ip": 0x8012AA00, "buf": "hello marker\n"},
        "qemu-kvm-1234", "ip=0x8012aa00 buf=hello marker")
    if missed is not None:
        w.mark_missed(1, missed or None)
    add("", 1, BASE + 3, "sched_switch",
        {"common_pid": 42, "prev_comm": "vcpu0", "prev_pid": 42, "prev_prio": 120,
         "prev_state": 1, "next_comm": "swapper/1", "next_pid": 0, "next_prio": 120},
        "vcpu0-42", "prev_comm=vcpu0 prev_pid=42 prev_prio=120 prev_state=1 "
        "next_comm=swapper/1 next_pid=0 next_prio=120")
    add("guest", 0, BASE + 10, "kvm_entry", {"common_pid": 42, "vcpu_pc": 5},
        "vcpu0-42", "vcpu_pc=0x0000000000000005")
    add("guest", 1, BASE + 20, "print", {"common_pid": 42, "ip": 0x10, "buf": LONG_MARKER},
        "vcpu0-42", f"ip=0x10 buf={LONG_MARKER.rstrip()}")
    return exp


_LINE = re.compile(
    r"^(?:(?P<buffer>[\w-]+): )?\s*(?P<comm_pid>\S+-\d+)\s+\[(?P<cpu>\d+)\]\s+"
    r"(?P<sec>\d+)\.(?P<nsec>\d{9}): (?P<event>\w+):\s+(?P<fields>.*?)\s*$"
)


def report(path: Path, *extra: str) -> tuple[str, str]:
    proc = subprocess.run(["trace-cmd", "report", *extra, "-i", str(path)],
                          capture_output=True, text=True, timeout=60, check=True)
    return proc.stdout, proc.stderr


def parse_report(text: str, ts_shift: int = 0) -> list[Expected]:
    out = []
    for line in text.splitlines():
        m = _LINE.match(line)
        if m:
            ts = int(m["sec"]) * 1_000_000_000 + int(m["nsec"]) - ts_shift
            out.append(Expected(m["buffer"] or "", int(m["cpu"]), ts, m["comm_pid"],
                                m["event"], m["fields"]))
    return out


def events_of(path: Path, ts_shift: int = 0) -> list[Expected]:
    stdout, stderr = report(path, "-N", "-t", "-R")
    assert stderr == ""
    return parse_report(stdout, ts_shift)


def ordered(items: list[Expected]) -> list[Expected]:
    return sorted(items, key=lambda e: (e.buffer, e.cpu, e.ts))


COMBOS = [
    (6, None, False, 8), (6, None, True, 8), (6, None, False, 4), (6, None, True, 4),
    (7, None, False, 8), (7, None, True, 8), (7, None, False, 4), (7, None, True, 4),
    (7, "zstd", False, 8), (7, "zstd", True, 8), (7, "zstd", False, 4), (7, "zstd", True, 4),
]


@pytest.mark.parametrize(("version", "compression", "big_endian", "long_size"), COMBOS)
def test_trace_cmd_reads_every_event(tmp_path: Path, version: int, compression: str | None,
                                     big_endian: bool, long_size: int) -> None:
    path = tmp_path / "trace.dat"
    w, enc = new_writer(version, compression, big_endian, long_size)
    with w:
        expected = scenario(w, enc)
        w.write(path)
    assert ordered(events_of(path)) == ordered(expected)
    stdout, _ = report(path, "-N", "-t", "-R")
    assert "CPU:1 [17 EVENTS DROPPED]" in stdout
    assert stdout.count("EVENTS DROPPED") == 1


@pytest.mark.parametrize("version", [6, 7])
def test_missed_events_without_count(tmp_path: Path, version: int) -> None:
    path = tmp_path / "trace.dat"
    w, enc = new_writer(version, None, False, 8)
    with w:
        scenario(w, enc, missed=0)  # 0 -> unknown count: RB_MISSED_EVENTS only
        w.write(path)
    stdout, stderr = report(path, "-N", "-t", "-R")
    assert stderr == ""
    assert "CPU:1 [EVENTS DROPPED]" in stdout


def test_page_flags_and_stored_count() -> None:
    sink = io.BytesIO()
    pages = PageEncoder(sink, page_size=4096, long_size=4, big_endian=True)
    pages.add(100, b"\1" * 8)
    pages.mark_missed(5)
    pages.add(200, b"\2" * 8)
    pages.flush()
    raw = sink.getvalue()
    assert len(raw) == 2 * 4096
    ts, commit = struct.unpack(">QI", raw[4096:4108])
    assert ts == 200
    assert commit & 0x7FFFFFF == 12  # one header word + 8 bytes
    assert commit >> 30 == 0b11  # RB_MISSED_EVENTS | RB_MISSED_STORED
    assert struct.unpack(">I", raw[4108 + 12:4108 + 16]) == (5,)
    # big endian: type_len in the top five bits of the header word
    assert struct.unpack(">I", raw[4108:4112])[0] >> 27 == 2


def test_encoder_rejects_bad_input() -> None:
    pages = PageEncoder(io.BytesIO())
    pages.add(100, b"x" * 8)
    pages.mark_missed()
    with pytest.raises(ValueError, match="backwards"):
        pages.add(99, b"x" * 8)
    with pytest.raises(ValueError, match="does not fit"):
        pages.add(200, b"x" * 4090)


def test_event_header_layout_little_endian() -> None:
    sink = io.BytesIO()
    pages = PageEncoder(sink, long_size=8)
    pages.add(1000, b"a" * 8)
    pages.add(1000 + 77, b"b" * 200)
    pages.flush()
    raw = sink.getvalue()
    first, second = struct.unpack("<I", raw[16:20])[0], struct.unpack("<I", raw[28:32])[0]
    assert (first & 31, first >> 5) == (2, 0)
    assert (second & 31, second >> 5) == (0, 77)
    assert struct.unpack("<I", raw[32:36]) == (204,)  # data length + the length word
    commit = struct.unpack("<Q", raw[8:16])[0]
    assert commit == 12 + 8 + 200
    padding = struct.unpack("<I", raw[16 + commit:20 + commit])[0]
    assert padding & 31 == 29


def test_options_offset_tsc2nsec_time_shift(tmp_path: Path) -> None:
    results = {}
    for name, setup in {
        "offset": lambda w: setattr(w, "offset", 5000),
        "date": lambda w: setattr(w, "date", "0x10"),  # microseconds
        "tsc2nsec": lambda w: w.set_tsc2nsec(3, 1, 0),
        "time_shift": lambda w: w.set_time_shift(
            0x1234, 0, [[TimeShiftSample(0, 700, 1)], [TimeShiftSample(0, 700, 1)]]),
    }.items():
        for version in (6, 7):
            path = tmp_path / f"{name}-{version}.dat"
            w, enc = new_writer(version, None, False, 8)
            with w:
                setup(w)
                expected = scenario(w, enc)
                w.write(path)
            results[(name, version)] = (events_of(path), expected)
    for (name, _version), (got, expected) in results.items():
        convert = {
            "offset": lambda ts: ts + 5000,
            "date": lambda ts: ts + 16_000,
            "tsc2nsec": lambda ts: (ts * 3) >> 1,
            "time_shift": lambda ts: ts + 700,
        }[name]
        # trace-cmd applies TIME_SHIFT (a guest-file option) to the top buffer only
        shifted = [name != "time_shift" or not e.buffer for e in expected]
        want = [Expected(e.buffer, e.cpu, convert(e.ts) if shift else e.ts, e.comm_pid, e.event,
                         e.fields) for e, shift in zip(expected, shifted, strict=True)]
        assert ordered(got) == ordered(want), name


def test_many_events_across_pages(tmp_path: Path) -> None:
    """Thousands of events, large and tiny deltas, both timestamp modes, raw-page fast path."""
    text = (FORMATS / "kvm_entry.format").read_text()
    enc = EventEncoder(text)
    stamps, ts = [], BASE
    for i in range(5000):
        ts += (1 << 27) + 5 if i % 997 == 0 else (i * 7919) % 4000
        stamps.append(ts)
    for absolute in (False, True):
        path = tmp_path / f"many-{absolute}.dat"
        with TraceDatWriter(version=7, absolute_timestamps=absolute) as w:
            w.add_event_format("kvm", text)
            w.add_events(0, ((t, enc.encode({"vcpu_pc": i})) for i, t in enumerate(stamps)))
            assert w.cpu(0).pages > 10
            w.write(path)
        got = events_of(path)
        assert [e.ts for e in got] == stamps
        assert [int(e.fields.split("=")[1], 16) for e in got] == list(range(5000))


def test_raw_pages_fast_path_is_byte_identical(tmp_path: Path) -> None:
    w1, enc = new_writer(7, "zstd", False, 8)
    with w1:
        scenario(w1, enc)
        w1.write(tmp_path / "a.dat")
    sinks = {(b, c): io.BytesIO() for b in ("", "guest") for c in (0, 1)}
    w2, enc = new_writer(7, "zstd", False, 8)
    encoders = {key: PageEncoder(sink) for key, sink in sinks.items()}

    class Redirect:
        def add_events(self, cpu: int, events: list, buffer: str = "") -> None:
            encoders[(buffer, cpu)].add_many(events)

        def mark_missed(self, cpu: int, count: int | None = None, buffer: str = "") -> None:
            encoders[(buffer, cpu)].mark_missed(count)

    scenario(Redirect(), enc)  # type: ignore[arg-type]
    with w2:
        for (buffer, cpu), pages in encoders.items():
            pages.flush()
            data = sinks[(buffer, cpu)].getvalue()
            chunks = [data[i:i + 4096] for i in range(0, len(data), 4096)]
            w2.add_raw_pages(cpu, iter(chunks) if cpu else data, buffer=buffer)
        w2.write(tmp_path / "b.dat")
    assert (tmp_path / "a.dat").read_bytes() == (tmp_path / "b.dat").read_bytes()
    with pytest.raises(ValueError, match="whole number of pages"):
        TraceDatWriter().add_raw_pages(0, b"\0" * 100)


@pytest.mark.parametrize("compression", [None, "zlib", "zstd"])
def test_same_inputs_same_bytes(tmp_path: Path, compression: str | None) -> None:
    blobs = []
    for i in range(2):
        w, enc = new_writer(7, compression, False, 8)
        with w:
            scenario(w, enc)
            w.write(tmp_path / f"{i}.dat")
        blobs.append((tmp_path / f"{i}.dat").read_bytes())
    assert blobs[0] == blobs[1]


def test_dump_summary_and_stat_see_buffers(tmp_path: Path) -> None:
    for version in (6, 7):
        path = tmp_path / f"v{version}.dat"
        w, enc = new_writer(version, "zstd" if version == 7 else None, False, 8)
        with w:
            w.set_cpustats(["entries: 0\noverrun: 3\n", "entries: 0\noverrun: 0\n"])
            scenario(w, enc)
            w.write(path)
        stdout, stderr = report(path, "--stat")
        assert stderr == ""
        assert "CPU: 0\nentries: 0\noverrun: 3" in stdout
        dump = subprocess.run(["trace-cmd", "dump", "--summary", "-i", str(path)],
                              capture_output=True, text=True, timeout=60, check=True)
        assert f"\t\t{version}\t[Version]" in dump.stdout
        if version == 7:
            assert '[buffer "", "local" clock, 4096 page size, 2 cpus' in dump.stdout
            assert '[buffer "guest", "local" clock, 4096 page size, 2 cpus' in dump.stdout
            assert "zstd\t[Compression algorithm]" in dump.stdout


# ----------------------------------------------------------------- zlib (this trace-cmd lacks it)


def _v7_walk(raw: bytes) -> list[tuple[int, int, bytes]]:
    """Sections of a little-endian v7 file after its header, as (id, flags, body)."""
    pos = raw.index(b"\0", 10) + 1 + 6
    pos = raw.index(b"\0", pos) + 1
    pos = raw.index(b"\0", pos) + 1
    pos += 8  # offset of the first options section
    sections = []
    while pos < len(raw):
        sec_id, flags, _desc, size = struct.unpack_from("<HHiQ", raw, pos)
        sections.append((sec_id, flags, raw[pos + 16:pos + 16 + size]))
        pos += 16 + size
    return sections


def _inflate_section(flags: int, body: bytes) -> bytes:
    if not flags & 1:
        return body
    zsize, size = struct.unpack_from("<II", body)
    data = zlib.decompress(body[8:8 + zsize])
    assert len(data) == size
    return data


def _cpu_data(raw: bytes, compressed: bool) -> list[bytes]:
    """All CPU data blobs in file order, found through the BUFFER options."""
    body = next(s[2] for s in _v7_walk(raw) if s[0] == 0)
    blobs, pos = [], 0
    while True:
        oid, size = struct.unpack_from("<HI", body, pos)
        data = body[pos + 6:pos + 6 + size]
        pos += 6 + size
        if oid == 0:
            break
        if oid != 3:
            continue
        cur = 8
        for _ in range(2):
            cur = data.index(b"\0", cur) + 1
        _page, count = struct.unpack_from("<II", data, cur)
        for i in range(count):
            _cpu, off, length = struct.unpack_from("<IQQ", data, cur + 8 + 20 * i)
            blob = raw[off:off + length]
            blobs.append(_inflate_chunks(blob) if compressed else blob)
    return blobs


def _inflate_chunks(blob: bytes) -> bytes:
    (count,), pos, out = struct.unpack_from("<I", blob), 4, b""
    for _ in range(count):
        zsize, size = struct.unpack_from("<II", blob, pos)
        chunk = zlib.decompress(blob[pos + 8:pos + 8 + zsize])
        assert len(chunk) == size and size % 4096 == 0
        out += chunk
        pos += 8 + zsize
    assert pos == len(blob)
    return out


def test_zlib_file_decompresses_to_the_verified_layout(tmp_path: Path) -> None:
    """This machine's trace-cmd is built without zlib, so compare against the plain v7 file
    (which trace-cmd reads): every section and CPU blob must inflate to the same bytes."""
    files = {}
    for comp in (None, "zlib"):
        w, enc = new_writer(7, comp, False, 8, chunk_pages=1)
        with w:
            scenario(w, enc)
            w.add_events(0, [(BASE * 2 + i, enc["kvm_entry"].encode({})) for i in range(900)])
            w.write(tmp_path / f"{comp}.dat")
        files[comp] = (tmp_path / f"{comp}.dat").read_bytes()
    assert files["zlib"][10:].startswith(b"7\0\0\x08\0\x10\0\0zlib\0")
    plain = [s for s in _v7_walk(files[None]) if s[0] not in (0, 3, 15)]
    packed = [s for s in _v7_walk(files["zlib"]) if s[0] not in (0, 3, 15)]
    assert all(flags == 1 for _, flags, _ in packed)
    assert [(i, b) for i, _, b in plain] == [(i, _inflate_section(f, b)) for i, f, b in packed]
    assert _cpu_data(files[None], False) == _cpu_data(files["zlib"], True)
    strings = [s for s in _v7_walk(files["zlib"]) if s[0] == 15]
    assert b"buffer flyrecord guest\0" in _inflate_section(strings[0][1], strings[0][2])


# ----------------------------------------------------------------- texts and payload encoding


@pytest.mark.parametrize("long_size", [4, 8])
def test_header_page_text_matches_long_size(long_size: int) -> None:
    fields = parse_header_page(header_page_text(long_size, 4096))
    assert fields["commit"].size == long_size
    assert fields["data"].offset == 8 + long_size
    assert fields["data"].size == 4096 - 8 - long_size
    if long_size == 8:
        live = Path("/sys/kernel/tracing/events/header_page")
        if live.exists():
            assert header_page_text(8, 4096) == live.read_text()


@pytest.mark.parametrize("big_endian", [False, True])
def test_payload_encoding_follows_the_format(big_endian: bool) -> None:
    text = (FORMATS / "irq_irq_handler_entry.format").read_text()
    fmt = parse_event_format(text, "irq")
    payload = EventEncoder(text, big_endian).encode(
        {"common_flags": 1, "common_preempt_count": 2, "common_pid": -1, "irq": 27,
         "name": "arch_timer"})
    e = ">" if big_endian else "<"
    common_type, flags, preempt, pid = struct.unpack_from(e + "HBBi", payload)
    assert (common_type, flags, preempt, pid) == (fmt.id, 1, 2, -1)
    name = fmt.field("name")
    assert name is not None
    loc = struct.unpack_from(e + "I", payload, name.offset)[0]
    start, length = loc & 0xFFFF, loc >> 16
    assert start == fmt.fixed_size
    assert payload[start:start + length] == b"arch_timer\0"
    switch = EventEncoder((FORMATS / "sched_sched_switch.format").read_text(), big_endian)
    raw = switch.encode({"prev_comm": "vcpu0", "next_comm": b"swapper/1"})
    assert raw[8:24] == b"vcpu0".ljust(16, b"\0")
    with pytest.raises(ValueError, match="do not fit"):
        switch.encode({"prev_comm": "x" * 17})


@pytest.mark.parametrize("version", [6, 7])
def test_kallsyms_and_printk_sections(tmp_path: Path, version: int) -> None:
    path = tmp_path / "trace.dat"
    w, enc = new_writer(version, None, False, 8)
    with w:
        w.kallsyms = "000000008012aa00 T kvm_marker_write\n0000000080130000 T next_func\n"
        w.printk_formats = '0x8012bb00 : "vcpu %d woke\\n"\n'
        scenario(w, enc)
        w.write(path)
    stdout, stderr = report(path, "-N", "-t")
    assert stderr == ""
    assert re.search(r"1\.268435463: print: +kvm_marker_write: hello marker", stdout)
    assert "000000008012aa00 kvm_marker_write" in report(path, "-f")[0]
    assert "000000008012bb00 vcpu %d woke" in report(path, "-P")[0]
