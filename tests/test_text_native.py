"""The text reader's native kernels (kvmtrace/ingest/text/kernels.c) against the numpy engine: the
same tables and the same report on the bundled captures' report texts (-R, default form, damaged
lines), and each kernel against its numpy twin on odd values."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from kvmtrace.fileformats.formats import EventFormat, FieldFormat
from kvmtrace.ingest import kernels as native
from kvmtrace.ingest.tables import EventTables
from kvmtrace.ingest.text import modal as text_modal
from kvmtrace.ingest.text import native as text_native
from kvmtrace.ingest.text import raw as text_raw
from kvmtrace.ingest.text import typed as text_typed
from kvmtrace.ingest.text.bytetext import ByteText, byte_positions
from kvmtrace.ingest.text.reader import read_text
from tests.engines import assert_same_tables, read_with
from tests.test_text_reader import CAPTURES, VHE, X86, report_text

pytestmark = pytest.mark.skipif(shutil.which("trace-cmd") is None, reason="trace-cmd not installed")
DATS = sorted(p.name for p in CAPTURES.iterdir() if (p / "trace.dat").exists())


def same_tables(path: Path, monkeypatch: pytest.MonkeyPatch) -> EventTables:
    return assert_same_tables(read_text, path, monkeypatch)


@pytest.fixture(scope="module")
def vhe_raw(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return report_text(VHE, tmp_path_factory.mktemp("vhe") / "raw.txt", "-N", "-t", "-R")


@pytest.mark.parametrize("capture", DATS)
def test_raw_reports_give_the_same_tables(capture: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = report_text(CAPTURES / capture / "trace.dat", tmp_path / "raw.txt", "-N", "-t", "-R")
    tables = same_tables(path, monkeypatch)
    assert tables.events.height > 10_000 and tables.meta.version == "trace-cmd report -t -R"


@pytest.mark.parametrize("dat", [X86, VHE], ids=["x86", "vhe"])
def test_default_form_gives_the_same_tables(dat: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    same_tables(report_text(dat, tmp_path / "pretty.txt"), monkeypatch)


def test_microsecond_latency_form_gives_the_same_tables(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    same_tables(report_text(X86, tmp_path / "lat.txt", "-l", "-R"), monkeypatch)


def damaged(lines: list[bytes]) -> list[bytes]:
    """Odd lines spread through a -R report: bad values, CRs, tabs, garbage, long names, cut lines."""
    out = list(lines)
    for i in range(200, len(out) - 10, 997):
        line = out[i]
        kind = (i // 997) % 9
        if kind == 0:
            out[i] = line.replace(b"=", b"=x", 1)  # a value that is not a number
        elif kind == 1:
            out[i] = line + b"\r"
        elif kind == 2:
            out[i] = line.replace(b" ", b"\t", 1)
        elif kind == 3:
            out[i] = line[: len(line) // 2]  # cut in the prefix or the payload
        elif kind == 4:
            out[i] = line.replace(b"=", b"= -", 1)  # padded negative value
        elif kind == 5:
            out[i] = b"CPU:1 [LOST 17 EVENTS]"
        elif kind == 6:
            out[i] = line + b" extra=0x1f"  # a key the format does not have
        elif kind == 7:
            out[i] = line.replace(b"=", b"=0x", 1)  # a hex value in a decimal field
        else:
            out[i] = b"garbage \xff\xfe line"
    return out


def test_damaged_text_gives_the_same_tables(vhe_raw: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lines = vhe_raw.read_bytes().split(b"\n")[:60_000]
    path = tmp_path / "damaged.txt"
    path.write_bytes(b"\n".join(damaged(lines)).rstrip(b"\n"))  # and no newline at the end
    tables = same_tables(path, monkeypatch)
    assert tables.report.unparsed_lines > 10


def test_the_native_kernels_are_the_ones_that_run(vhe_raw: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With KVMTRACE_ENGINE=native the prefixes and payloads go through the C kernels, not numpy."""
    calls = {"codes": 0, "pack": 0, "numpy_codes": 0}

    def counted(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            calls[name] += 1
            return fn(*args, **kwargs)
        return wrapper

    monkeypatch.setattr(text_modal, "_native_parse_layout", counted("codes", text_modal._native_parse_layout))
    monkeypatch.setattr(text_modal, "_codes", counted("numpy_codes", text_modal._codes))
    import kvmtrace.ingest.text.reader as text_module

    monkeypatch.setattr(text_module, "pack_codes", counted("pack", text_module.pack_codes))
    read_with(read_text, vhe_raw, "native", monkeypatch)
    assert calls["codes"] > 0 and calls["pack"] == 1 and calls["numpy_codes"] == 0


# ---------------------------------------------------------------- kernels against their twins

VALUES = [b"0", b"7", b"12345678", b"123456789", b"9999999999999999999", b"18446744073709551615", b"-1", b"-",
          b" 5", b"   -42", b"- 5", b"5 ", b"", b" ", b"0x1f", b"0X1F", b"-0x10", b"0x", b"ffffffff", b"abc",
          b"1a", b"0xffffffffffffffff", b"0x1ffffffffffffffff", b"+3", b"00012", b"1.5", b"\xff", b"-0"]


def _text_of(values: list[bytes], head: bytes = b"v=") -> tuple[ByteText, np.ndarray, np.ndarray]:
    """One ``head + value`` per line, padding before the first, windows' room after the last; the
    values' spans."""
    data = b"pad=....\n" + b"".join(head + v + b"\n" for v in values) + b"\0" * 64
    text = ByteText(np.frombuffer(data, np.uint8).copy())
    vs, ve, at = [], [], len(b"pad=....\n")
    for v in values:
        vs.append(at + len(head))
        ve.append(at + len(head) + len(v))
        at += len(head) + len(v) + 1
    return text, np.array(vs, np.int64), np.array(ve, np.int64)


# (C type, size, signed, array_len): bool, exact widths, wider types, odd sizes (sign-extended, or an
# integer kt_text_fields gives as spans), and a string
FIELDS = [("bool", 1, False, None), ("u8", 1, False, None), ("s16", 2, True, None), ("int", 4, True, None),
          ("unsigned int", 4, False, None), ("u64", 8, False, None), ("long", 8, True, None),
          ("s24", 3, True, None), ("u24", 3, False, None), ("u128", 16, False, None), ("u0", 0, False, None),
          ("char", 16, True, 16)]


def _format(kinds: list[int], hexes: list[bool]) -> EventFormat:
    """An event of the FIELDS ``kinds`` named f0, f1, ... printed with %llx (``hexes``) or %lld / %s."""
    fields = [FieldFormat("common_type", "unsigned short", 0, 2, False)]
    convs = []
    for j, (k, hexed) in enumerate(zip(kinds, hexes, strict=True)):
        ctype, size, signed, array_len = FIELDS[k]
        fields.append(FieldFormat(f"f{j}", ctype, 8 + 16 * j, size, signed, array_len))
        convs.append("s" if array_len else "llx" if hexed else "lld")
    text = " ".join(f"f{j}=%{c}" for j, c in enumerate(convs))
    return EventFormat(1, "test", "test", fields, f'"{text}", ' + ", ".join(
        f"REC->f{j}" for j in range(len(kinds))))


def _assert_same_fields(fmt: EventFormat, payloads: list[bytes], bad_cap: int = text_native.BAD_CAP) -> None:
    """kt_text_fields' table (text_typed._native_typed) is the numpy one (text_raw.split, then
    text_typed._typed with text_raw.parse_ints), and its verdict split's."""
    lib = native.library()
    assert lib is not None
    text, ps, pe = _text_of(payloads, head=b"")
    eqs = byte_positions(text.buf, 61)
    names = [f.name for f in fmt.payload_fields]
    want = text_raw.split(text, eqs, np.searchsorted(eqs, ps), ps, pe, names)
    specs = text_typed._native_specs(fmt)
    assert specs is not None
    saved = text_native.BAD_CAP
    try:
        text_native.BAD_CAP = bad_cap
        got = text_native.fields(lib, text, ps, pe, names, specs)
    finally:
        text_native.BAD_CAP = saved
    if isinstance(want, bool):
        assert got is want
        return
    assert isinstance(got, text_native.Fields)
    for spec, column, s, e in zip(specs, got.columns, want.starts, want.ends, strict=True):
        if spec.kind == text_native.FIELD_SPANS:
            assert isinstance(column, tuple)
            assert column[0].tolist() == s.tolist() and column[1].tolist() == e.tolist()
    mine = text_typed._native_typed(lib, text, fmt, got)
    numpy_result = text_typed._typed(text, fmt, want, text_raw.parse_ints)
    assert (mine is None) == (numpy_result is None)
    if mine is not None and numpy_result is not None:
        assert_frame_equal(mine.columns, numpy_result.columns)


@pytest.mark.parametrize("hexed", [False, True])
@pytest.mark.parametrize("kind", range(len(FIELDS) - 1))
def test_fields_kernel_reads_ints_as_parse_ints(kind: int, hexed: bool) -> None:
    fmt = _format([kind, kind], [hexed, hexed])
    values = [v for v in VALUES if not v.endswith(b" ")]  # (a trailing space leaves the payload last field)
    _assert_same_fields(fmt, [b"f0=" + v + b" f1=" + v for v in values])
    _assert_same_fields(fmt, [b"f0=" + v + b" f1=" + v for v in values], bad_cap=1)  # the kernel again
    _assert_same_fields(fmt, [b"f0=" + v + b" f1=" + v for v in values if v == v.strip()][:3])


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, len(FIELDS) - 1), st.booleans()), min_size=1, max_size=4),
       st.lists(st.lists(st.text(alphabet="0123456789abcdefxX- +", max_size=20).map(str.encode), min_size=4,
                         max_size=4), min_size=1, max_size=20),
       st.integers(1, 3))
def test_fields_kernel_on_random_values(kinds: list[tuple[int, bool]], rows: list[list[bytes]], bad_cap: int) -> None:
    fmt = _format([k for k, _ in kinds], [h for _, h in kinds])
    _assert_same_fields(fmt, [b" ".join(b"f%d=" % j + row[j] for j in range(len(kinds))) for row in rows], bad_cap)


PAYLOADS = [
    [b"f0=1 f1=2 f2=3", b"f0=10 f1=20 f2=30  "],  # spans (trailing spaces dropped)
    [b"f0=1 f1=2 f2=3", b"f0=1 f1=2"],  # too few '=': no match
    [b"f0=1 f1=2 f2=3", b"x=1 f1=2 f2=3"],  # another first key: no match
    [b"f0=1 f1=2 f2=3", b"CAN'T FIND FIELD f0=1 f1=2 f2=3"],  # plugin garbage first: unsure
    [b"f0=1 f1=2 f2=3", b"f0=1 xb=2 f2=3"],  # another second key: unsure
    [b"f0=1 f1=2 f2=3", b"f0=1 f1=x=y f2=3"],  # an '=' in a value: unsure
    [b"f0= f1= f2=", b"f0=1 f1=2 f2=\t"],
    [b"f0=1 f1=2 f2=3", b"f0=1 f1=2 f2=3 f3=4"],  # one more: in the last value
]
VERDICTS: list[bool | None] = [None, False, False, True, True, True, None, None]  # None: spans


@pytest.mark.parametrize(("payloads", "verdict"), list(zip(PAYLOADS, VERDICTS, strict=True)))
@pytest.mark.parametrize("kinds", [[11, 11, 11], [3, 11, 5], [2, 7, 9]])
def test_fields_kernel_splits_as_split(payloads: list[bytes], verdict: bool | None, kinds: list[int]) -> None:
    text, ps, pe = _text_of(payloads, head=b"")
    eqs = byte_positions(text.buf, 61)
    want = text_raw.split(text, eqs, np.searchsorted(eqs, ps), ps, pe, ["f0", "f1", "f2"])
    assert want is verdict if verdict is not None else isinstance(want, text_raw.Spans)
    _assert_same_fields(_format(kinds, [False, True, False]), payloads)


@pytest.mark.parametrize("data", [b"", b"\n", b"a", b"a\n", b"a\n\nb", b"\n\n", b"ab\ncd\n\n", b"x\r\ny"])
def test_line_bounds_kernel_is_line_bounds(data: bytes) -> None:
    from kvmtrace.ingest.text.bytetext import line_bounds

    lib = native.library()
    assert lib is not None
    buf = np.frombuffer(data, np.uint8)
    want, got = line_bounds(buf), text_native.line_bounds(lib, buf)
    assert [a.tolist() for a in got] == [a.tolist() for a in want]


def _prefix_rows(fast: Any) -> list[tuple[Any, ...]]:
    """The rows of a FastPrefixes with the interned codes decoded (the engines order the values apart)."""
    return list(zip(fast.rows.tolist(), fast.ts.tolist(), fast.frac_digits.tolist(), fast.cpu.tolist(),
                    fast.pid.tolist(), [fast.comm.values[c] for c in fast.comm.codes.tolist()],
                    [fast.event.values[c] for c in fast.event.codes.tolist()],
                    [fast.buffer.values[c] for c in fast.buffer.codes.tolist()],
                    fast.payload_start.tolist(), fast.payload_end.tolist(), strict=True))


@pytest.mark.parametrize("block", [text_modal.BLOCK, 4096], ids=["one-part", "two-parts"])
def test_modal_kernels_are_parse_layout(vhe_raw: Path, block: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """kt_text_layout + kt_text_modal_codes + kt_text_modal_fill take the lines, and give the values,
    of text_modal's numpy way: on damaged lines, long event names (payload found line by line, or not
    at all), an empty payload and an undecodable key; on one thread, and on two (from BLOCK lines)."""
    monkeypatch.setattr(text_modal, "BLOCK", block)
    lines = damaged(vhe_raw.read_bytes().split(b"\n")[:20_000])
    first = next(line for line in lines if b"irq_handler_entry:" in line)
    odd = [
        first.replace(b"irq_handler_entry:     ", b"irq_handler_entry_:" + b" " * 7),  # payload past KEY2
        first.replace(b"irq_handler_entry:     ", b"irq_handler_entry_:" + b" " * 30),  # and not found
        first.replace(b"irq_handler_entry:     ", b"irq_handler_entry_:" + b" " * 7 + b"\x01"),
        first.replace(b"irq_handler_entry:     ", b"a_very_long_event_name_of_the_test: "),
        first[: first.index(b"irq_handler_entry:") + len(b"irq_handler_entry:")],
        first.replace(b"-", b"\xff", 1),
    ]
    for k, line in enumerate(odd):
        lines[1000 + 37 * k] = line
    text = ByteText(np.frombuffer(b"\n".join(lines) + b"\n", np.uint8).copy())
    text.data = bytes(text.buf)
    starts, ends = text_native.line_bounds(native.library(), text.buf)  # type: ignore[arg-type]
    lay = text_modal._dominant_layout(text.data, starts, ends)
    assert lay is not None
    got = {}
    for engine in ("numpy", "native"):
        monkeypatch.setenv("KVMTRACE_ENGINE", engine)
        got[engine] = text_modal._parse_layout(text, starts, ends, lay)
    (want, want_ok), (have, have_ok) = got["numpy"], got["native"]
    assert want is not None and have is not None
    assert have_ok.tolist() == want_ok.tolist()
    assert _prefix_rows(have) == _prefix_rows(want)
    taken = set(have.rows.tolist())
    assert {1000, 1148} <= taken and not taken & {1037, 1074, 1111, 1185}
    empty = have.rows.tolist().index(1148)
    assert have.payload_start[empty] == have.payload_end[empty]
    assert len(taken) < starts.size - 10  # the damaged lines


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 6), st.integers(0, 5), st.booleans()), max_size=60))
def test_group_and_pack_kernels_are_argsort_and_pack_groups(rows: list[tuple[int, int, bool]]) -> None:
    """kt_text_group's groups are a stable argsort's, split by code; kt_text_pack_codes packs what
    pack_groups packs, for the groups with a span in every row (ps < 0: none)."""
    lib = native.library()
    assert lib is not None
    codes = np.array([c * 3 for c, _, _ in rows], np.uint32)  # codes with gaps
    data = bytes(range(32, 127)) * 4
    text = ByteText(np.frombuffer(data, np.uint8).copy())
    ps = np.array([-1 if not has else 7 * i % 300 for i, (_, _, has) in enumerate(rows)], np.int64)
    pe = np.where(ps < 0, -1, ps + np.array([n for _, n, _ in rows], np.int64))
    got = text_native.group_rows(lib, codes, ps, pe)
    assert got is not None
    order = np.argsort(codes, kind="stable")
    want = np.split(order, np.flatnonzero(np.diff(codes[order])) + 1) if order.size else []
    assert [r.tolist() for r in got.rows] == [r.tolist() for r in want]
    assert got.fast == [bool((ps[r] >= 0).all()) for r in want]
    assert got.size == [int((pe[r] - ps[r])[ps[r] >= 0].sum()) for r in want]
    assert got.code == [int(codes[r[0]]) for r in want]
    kinds = [k for k, fast in enumerate(got.fast) if fast][::-1]  # any order of the groups
    threaded = text_native.PACK_THREADED
    try:
        text_native.PACK_THREADED = 0 if len(rows) % 2 else threaded  # on two threads, or not
        packed = text_native.pack_codes(lib, text, ps, pe, codes, got, kinds)
    finally:
        text_native.PACK_THREADED = threaded
    wanted = text_native.pack_groups(lib, text, ps, pe, [got.rows[k] for k in kinds])
    assert len(packed) == len(wanted) == len(kinds)
    for (block, b, e), (w_block, w_b, w_e), k in zip(packed, wanted, kinds, strict=True):
        assert [block.buf[s:t].tobytes() for s, t in zip(b, e, strict=True)] == [
            w_block.buf[s:t].tobytes() for s, t in zip(w_b, w_e, strict=True)] == [
            data[s:t] for s, t in zip(ps[got.rows[k]], pe[got.rows[k]], strict=True)]
        assert block.buf.size == w_block.buf.size and not block.buf[-text_native.PACK_TAIL:].any()


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 40), st.lists(st.integers(0, 40), max_size=8), st.sampled_from([np.int64, np.int32, np.uint8]))
def test_open_gaps_kernel_is_insert(n: int, spots: list[int], dtype: type[np.generic]) -> None:
    """kt_text_open_gaps moves the rows as np.insert does, in place; no room: None."""
    lib = native.library()
    assert lib is not None
    at = np.sort(np.array([min(s, n) for s in spots], np.int64))
    m = at.size
    room = np.zeros(n + m + 3, dtype)
    room[:n] = np.arange(1, n + 1)
    grown = text_native.open_gaps(lib, [room[:n]], at + np.arange(m))
    assert grown is not None and grown[0].base is room
    want = np.insert(np.arange(1, n + 1).astype(dtype), at, 0)
    keep = np.ones(n + m, bool)
    keep[at + np.arange(m)] = False
    assert grown[0][keep].tolist() == want[keep].tolist()
    assert text_native.open_gaps(lib, [np.arange(n + m, dtype=dtype)[:n].copy()], at + np.arange(m)) is None


def test_damaged_text_merges_its_exact_rows_in_place(vhe_raw: Path, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The exact reader's rows of a damaged text go in between the fast ones in place (the same tables:
    test_damaged_text_gives_the_same_tables)."""
    import kvmtrace.ingest.text.reader as text_module

    taken = []

    def spy(fast: Any, slow: Any) -> Any:
        out = merged_in_place(fast, slow)
        taken.append((slow.height, out is not None))
        return out

    merged_in_place = text_module._merged_in_place
    monkeypatch.setattr(text_module, "_merged_in_place", spy)
    lines = vhe_raw.read_bytes().split(b"\n")[:60_000]
    path = tmp_path / "damaged.txt"
    path.write_bytes(b"\n".join(damaged(lines)))
    read_with(read_text, path, "native", monkeypatch)
    assert len(taken) == 1 and taken[0][0] > 5 and taken[0][1]


@settings(max_examples=100, deadline=None)
@given(st.lists(st.sampled_from([b"a", b"bc", b"\n", b"\n\n", b"x" * 40]), max_size=60))
def test_line_bounds_kernel_on_two_threads_is_line_bounds(pieces: list[bytes]) -> None:
    """Cut in two (kt_text_lines_part on two threads), the lines are still bytetext.line_bounds'."""
    from kvmtrace.ingest.text.bytetext import line_bounds

    lib = native.library()
    assert lib is not None
    buf = np.frombuffer(b"".join(pieces), np.uint8)
    want = line_bounds(buf)
    split = text_native.LINES_SPLIT
    try:
        text_native.LINES_SPLIT = 0
        got = text_native.line_bounds(lib, buf)
    finally:
        text_native.LINES_SPLIT = split
    assert [a.tolist() for a in got] == [a.tolist() for a in want]


@settings(max_examples=150, deadline=None)
@given(st.lists(st.binary(max_size=12).map(lambda b: b.replace(b"\n", b"")), min_size=1, max_size=40)
       .map(lambda vs: vs + vs[: len(vs) // 2] + [b"x" * 31, b"x" * 32, b"x" * 32]))
def test_intern_kernel_is_intern(values: list[bytes]) -> None:
    """kt_text_intern gives each row the value bytetext.intern gives it (repeats, empties, prefixes of
    each other, 32 bytes); values in order of first appearance."""
    from kvmtrace.ingest.text.bytetext import intern

    lib = native.library()
    assert lib is not None
    text, vs, ve = _text_of(values, head=b"")
    want = intern(text, vs, ve - vs, 32)
    got = text_native.intern(lib, text, vs, ve - vs)
    assert want is not None
    assert [got.values[c] for c in got.codes.tolist()] == [want.values[c] for c in want.codes.tolist()] == values
    assert got.values == list(dict.fromkeys(values)) and got.codes.dtype == np.int32
