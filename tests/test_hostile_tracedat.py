"""Hostile trace.dat files (issue 11): both engines read only a record's own bytes, say so, and give
the same tables; limits are one line naming the limit and how to raise it."""

from __future__ import annotations

import struct
import subprocess
import sys
from pathlib import Path

import pytest

from kvmtrace.errors import CaptureError
from kvmtrace.fileformats.writer import TraceDatWriter, ZlibCompressor
from kvmtrace.ingest.limits import LimitExceeded, describe
from kvmtrace.ingest.tracedat.reader import read_tracedat
from tests.engines import assert_same_tables

SHORTY = """name: shorty
ID: 600
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:unsigned char common_flags;\toffset:2;\tsize:1;\tsigned:0;
\tfield:unsigned char common_preempt_count;\toffset:3;\tsize:1;\tsigned:0;
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;

\tfield:int a;\toffset:8;\tsize:4;\tsigned:1;
\tfield:int b;\toffset:12;\tsize:4;\tsigned:1;
\tfield:char name[8];\toffset:16;\tsize:8;\tsigned:0;
\tfield:__data_loc char[] text;\toffset:24;\tsize:4;\tsigned:0;

print fmt: "a=%d"
"""


def _record(pid: int, *parts: bytes) -> bytes:
    return struct.pack("<HBBi", 600, 0, 0, pid) + b"".join(parts)


def shorty_capture(path: Path) -> Path:
    """Records of one type: whole ones, one that ends after field a, one whose text points past it."""
    whole = _record(7, struct.pack("<ii", 1, 2), b"abcdefgh", struct.pack("<I", (4 << 16) | 28), b"xyz\0")
    short = _record(8, struct.pack("<i", 3))
    wild = _record(9, struct.pack("<ii", 4, 5), b"ijklmnop", struct.pack("<I", (200 << 16) | 28), b"uvw\0")
    with TraceDatWriter(version=6) as w:
        w.add_event_format("test", SHORTY)
        w.add_events(0, [(1000, whole), (2000, short), (3000, wild), (4000, whole)])
        w.write(path)
    return path


def test_records_shorter_than_their_format_read_their_own_bytes(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    t = assert_same_tables(read_tracedat, shorty_capture(tmp_path / "short.dat"), monkeypatch)
    table = t.by_event["shorty"]
    assert table["a"].to_list() == [1, 3, 4, 1]
    assert table["b"].to_list() == [2, 0, 5, 2]  # past the short record's end: 0, not the next record's bytes
    assert table["name"].to_list() == ["abcdefgh", "", "ijklmnop", "abcdefgh"]
    assert table["text"].to_list()[1] == ""
    reasons = [s.reason for s in t.report.skipped if s.where == "event shorty"]
    assert any("1 records shorter than the format's fixed part" in r for r in reasons), reasons
    assert any("field text: 1 values point past their record" in r for r in reasons), reasons


@pytest.mark.parametrize("engine", ["native", "numpy"])
def test_the_decompressed_size_limit_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 engine: str) -> None:
    path = tmp_path / "v7.dat"
    with TraceDatWriter(version=7, compression=ZlibCompressor()) as w:
        w.add_event_format("test", SHORTY)
        w.add_events(0, [(1000 + k, _record(7, bytes(24))) for k in range(3000)])
        w.write(path)
    monkeypatch.setenv("KVMTRACE_ENGINE", engine)
    assert read_tracedat(path).events.height == 3000
    monkeypatch.setenv("KVMTRACE_MAX_INFLATE", "4096")
    with pytest.raises(LimitExceeded) as exc:
        read_tracedat(path)
    line = exc.value.one_line()
    assert line.startswith(f"{path}: ") and "needs" in line and "decompressed size limit of 4.0 KiB" in line
    assert "KVMTRACE_MAX_INFLATE" in line


def test_limits_are_described() -> None:
    limits = describe()
    assert set(limits) >= {"text line", "decompressed size", "table memory", "capture.json", "cpu ids"}


def test_cli_prints_the_limit_in_one_line_with_exit_2(tmp_path: Path) -> None:
    path = shorty_capture(tmp_path / "s.dat")
    proc = subprocess.run([sys.executable, "-m", "kvmtrace", "info", str(path), "--no-cache"],
                          capture_output=True, text=True, env={"KVMTRACE_MAX_TABLE_BYTES": "10", "PATH": ""},
                          check=False)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and "the table memory limit of 10 bytes" in proc.stderr, proc.stderr


@pytest.mark.parametrize("engine", ["native", "numpy"])
def test_a_data_loc_pointing_far_outside_is_cut(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, engine: str) -> None:
    monkeypatch.setenv("KVMTRACE_ENGINE", engine)
    t = read_tracedat(shorty_capture(tmp_path / "s.dat"))
    assert t.by_event["shorty"]["text"].to_list()[2] == "uvw"  # cut at its record's end, not 200 bytes


def test_an_impossible_header_page_is_one_error(tmp_path: Path) -> None:
    path = tmp_path / "hp.dat"
    with TraceDatWriter(version=6) as w:
        w.header_page = w.header_page.replace("size:8;\tsigned:1;", "size:16;\tsigned:1;", 1)
        w.write(path)
    with pytest.raises(CaptureError, match=r"header_page: commit at offset 8, size 16: expected offset 8, size 4 or 8"):
        read_tracedat(path)
