"""The text reader's native kernels (kvmtrace/ingest/native_text.c) against the numpy engine: the
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

from kvmtrace.ingest import native, text_modal, text_native, text_raw
from kvmtrace.ingest.tables import EventTables
from kvmtrace.ingest.text import read_text
from kvmtrace.ingest.text_fast import ByteText, byte_positions
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

    monkeypatch.setattr(text_modal, "_native_codes", counted("codes", text_modal._native_codes))
    monkeypatch.setattr(text_modal, "_codes", counted("numpy_codes", text_modal._codes))
    import kvmtrace.ingest.text as text_module

    monkeypatch.setattr(text_module, "pack_groups", counted("pack", text_module.pack_groups))
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


def _assert_same_ints(values: list[bytes], hex_default: bool) -> None:
    lib = native.library()
    assert lib is not None
    text, vs, ve = _text_of(values)
    want = text_raw.parse_ints(text, vs, ve, hex_default)
    got = text_native.parse_ints(lib, text, vs, ve, hex_default)
    assert got.ok.tolist() == want.ok.tolist(), [v for v, a, b in zip(values, got.ok, want.ok, strict=True) if a != b]
    assert got.value[got.ok].tolist() == want.value[want.ok].tolist()
    assert got.negative[got.ok].tolist() == want.negative[want.ok].tolist()


@pytest.mark.parametrize("hex_default", [False, True])
def test_parse_ints_kernel_is_parse_ints(hex_default: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KVMTRACE_ENGINE", "native")
    _assert_same_ints(VALUES, hex_default)
    _assert_same_ints([v for v in VALUES if 1 <= len(v) <= 8], hex_default)  # numpy's short way


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(alphabet="0123456789abcdefxX- +", max_size=20).map(str.encode), min_size=1, max_size=20),
       st.booleans())
def test_parse_ints_kernel_on_random_values(values: list[bytes], hex_default: bool) -> None:
    _assert_same_ints(values, hex_default)


PAYLOADS = [
    [b"a=1 bb=2 c=3", b"a=10 bb=20 c=30  "],  # spans (trailing spaces dropped)
    [b"a=1 bb=2 c=3", b"a=1 bb=2"],  # too few '=': no match
    [b"a=1 bb=2 c=3", b"x=1 bb=2 c=3"],  # another first key: no match
    [b"a=1 bb=2 c=3", b"CAN'T FIND FIELD a=1 bb=2 c=3"],  # plugin garbage first: unsure
    [b"a=1 bb=2 c=3", b"a=1 xb=2 c=3"],  # another second key: unsure
    [b"a=1 bb=2 c=3", b"a=1 bb=x=y c=3"],  # an '=' in a value: unsure
    [b"a= bb= c=", b"a=1 bb=2 c=\t"],
]
VERDICTS: list[bool | None] = [None, False, False, True, True, True, None]  # None: spans


@pytest.mark.parametrize(("payloads", "verdict"), list(zip(PAYLOADS, VERDICTS, strict=True)))
def test_split_kernel_is_split(payloads: list[bytes], verdict: bool | None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KVMTRACE_ENGINE", "native")
    lib = native.library()
    assert lib is not None
    text, ps, pe = _text_of(payloads, head=b"")
    eqs = byte_positions(text.buf, 61)
    keys = ["a", "bb", "c"]
    want = text_raw.split(text, eqs, np.searchsorted(eqs, ps), ps, pe, keys)
    got = text_native.split(lib, text, ps, pe, keys)
    assert want is verdict if verdict is not None else isinstance(want, text_raw.Spans)
    if isinstance(want, bool):
        assert got is want
    else:
        assert isinstance(got, text_raw.Spans)
        assert [s.tolist() for s in got.starts] == [s.tolist() for s in want.starts]
        assert [e.tolist() for e in got.ends] == [e.tolist() for e in want.ends]


@pytest.mark.parametrize("data", [b"", b"\n", b"a", b"a\n", b"a\n\nb", b"\n\n", b"ab\ncd\n\n", b"x\r\ny"])
def test_line_bounds_kernel_is_line_bounds(data: bytes) -> None:
    from kvmtrace.ingest.text_fast import line_bounds

    lib = native.library()
    assert lib is not None
    buf = np.frombuffer(data, np.uint8)
    want, got = line_bounds(buf), text_native.line_bounds(lib, buf)
    assert [a.tolist() for a in got] == [a.tolist() for a in want]
