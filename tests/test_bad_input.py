"""Bad input: one clear CaptureError (file, place, what was expected), exit code 2 from the CLI,
local damage skipped and reported, never a traceback. Uses mutated copies of a real capture."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kvmtrace.errors import CaptureError
from kvmtrace.fileformats.writer import TraceDatWriter
from kvmtrace.ingest.tracedat.reader import read_structure, read_tracedat
from tests.real_pages import write_real_pages
from tests.report_oracle import CAPTURES

PAGES_PER_CPU = 12


@pytest.fixture(scope="module")
def small_real(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A v6 uncompressed file holding the first pages of the real capture, formats and cmdlines."""
    return write_real_pages(tmp_path_factory.mktemp("real") / "small-v6.dat", PAGES_PER_CPU)


def cpu0_data_offset(path: Path) -> int:
    f = read_structure(path)
    return f.buffers[0].cpus[0].file_offset


def test_small_real_reads_cleanly(small_real: Path) -> None:
    t = read_tracedat(small_real)
    assert t.events.height > 1000
    assert t.report.skipped == []


@pytest.mark.parametrize(("mutate", "expected"), [
    (lambda b: b"\x17\x08\x44nottrace" + b[10:], "not a trace.dat file"),
    (lambda b: b[:10] + b"9\0" + b[12:], "unsupported trace.dat version '9'"),
    (lambda b: b[:200], "file ends early"),
    (lambda b: b"", "empty file"),
])
def test_header_damage_is_one_clear_error(small_real: Path, tmp_path: Path, mutate, expected: str) -> None:
    bad = tmp_path / "bad.dat"
    bad.write_bytes(mutate(small_real.read_bytes()))
    with pytest.raises(CaptureError) as exc:
        read_tracedat(bad)
    assert expected in str(exc.value)
    assert str(bad) in str(exc.value)


def test_truncated_cpu_data_names_the_offset(small_real: Path, tmp_path: Path) -> None:
    data = small_real.read_bytes()
    bad = tmp_path / "truncated.dat"
    bad.write_bytes(data[: len(data) - 5000])
    with pytest.raises(CaptureError, match=r"offset 0x[0-9a-f]+: file truncated: cpu \d data needs"):
        read_tracedat(bad)


def test_unknown_compression(tmp_path: Path) -> None:
    good = tmp_path / "v7.dat"
    with TraceDatWriter(version=7, compression="zlib") as w:
        w.write(good)
    raw = good.read_bytes().replace(b"zlib\0", b"lz4x\0", 1)
    bad = tmp_path / "lz4.dat"
    bad.write_bytes(raw)
    with pytest.raises(CaptureError, match="unsupported compression 'lz4x': expected none, zstd or zlib"):
        read_tracedat(bad)


def test_a_corrupt_page_is_skipped_and_reported(small_real: Path, tmp_path: Path) -> None:
    data = bytearray(small_real.read_bytes())
    base = cpu0_data_offset(small_real)
    page = 3
    # commit word of page 3: a length beyond the page
    data[base + page * 4096 + 8: base + page * 4096 + 16] = (9000).to_bytes(8, "little")
    bad = tmp_path / "corrupt.dat"
    bad.write_bytes(bytes(data))
    good = read_tracedat(small_real)
    t = read_tracedat(bad)
    assert len(t.report.skipped) == 1
    skipped = t.report.skipped[0]
    assert skipped.where.startswith("buffer '' cpu 0 page 3 (file offset")
    assert "commit length 9000 exceeds" in skipped.reason
    lost_rows = good.events.height - t.events.height
    assert 0 < lost_rows < 300  # one page's records, and only those


def test_an_impossible_record_stops_its_page_only(small_real: Path, tmp_path: Path) -> None:
    data = bytearray(small_real.read_bytes())
    base = cpu0_data_offset(small_real)
    rec = base + 5 * 4096 + 16  # first record header of page 5
    data[rec:rec + 4] = (0).to_bytes(4, "little")  # type_len 0 ...
    data[rec + 4:rec + 8] = (60000).to_bytes(4, "little")  # ... with a length beyond the page
    bad = tmp_path / "record.dat"
    bad.write_bytes(bytes(data))
    t = read_tracedat(bad)
    assert [s.where.split(" (")[0] for s in t.report.skipped] == ["buffer '' cpu 0 page 5"]
    assert "runs past the page's" in t.report.skipped[0].reason


def test_cli_bad_input_exit_code_and_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "garbage.dat"
    bad.write_bytes(b"\x17\x08\x44tracing" + b"\xff" * 50)
    proc = subprocess.run([sys.executable, "-m", "kvmtrace", "info", str(bad)],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 2
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"kvmtrace: {bad}: ")
    assert "Traceback" not in proc.stderr


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(flips=st.lists(st.tuples(st.floats(0, 1), st.integers(0, 255)), min_size=1, max_size=6))
def test_random_damage_never_escapes_as_a_traceback(small_real: Path, flips: list[tuple[float, int]]) -> None:
    data = bytearray(small_real.read_bytes())
    for where, value in flips:
        data[int(where * (len(data) - 1))] = value
    path = small_real.parent / "fuzz.dat"
    path.write_bytes(bytes(data))
    try:
        t = read_tracedat(path)
    except CaptureError as exc:
        assert str(path) in str(exc)
        return
    assert t.events.height >= 0


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(flips=st.lists(st.tuples(st.integers(0, 1 << 20), st.integers(0, 255)), min_size=1, max_size=4),
       version=st.sampled_from([6, 7]))
def test_random_damage_to_metadata_never_escapes(small_real: Path, tmp_path_factory: pytest.TempPathFactory,
                                                 flips: list[tuple[int, int]], version: int) -> None:
    source = small_real if version == 6 else _v7_copy(small_real, tmp_path_factory)
    data = bytearray(source.read_bytes())
    limit = cpu0_data_offset(source)  # everything before the CPU data: headers, formats, options
    for where, value in flips:
        data[where % limit] = value
    path = source.parent / f"fuzz-meta-{version}.dat"
    path.write_bytes(bytes(data))
    try:
        read_tracedat(path)
    except CaptureError as exc:
        assert str(path) in str(exc)


_V7: dict[str, Path] = {}


def _v7_copy(small_real: Path, factory: pytest.TempPathFactory) -> Path:
    """The same content as trace.dat v7 with zstd sections (via trace-cmd's own reader-writer)."""
    if "path" not in _V7:
        out = factory.mktemp("v7") / "small-v7.dat"
        subprocess.run(["trace-cmd", "convert", "--file-version", "7", "--compression", "zstd",
                        "-i", str(small_real), "-o", str(out)], check=True, capture_output=True)
        _V7["path"] = out
    return _V7["path"]


def test_a_format_with_a_field_declared_twice_is_one_clear_error(tmp_path: Path) -> None:
    # found by the metadata fuzzing above: one flipped byte turned a field's name into its neighbour's
    text = (CAPTURES.parent / "kvmtrace" / "data" / "formats" / "arm64-6.1" / "kvm_exit.format").read_text()
    broken = text.replace("int ret;", "int esr_ec;")
    with TraceDatWriter(version=6) as w:
        w.add_event_format("kvm", broken)
        w.write(tmp_path / "dup.dat")
    with pytest.raises(CaptureError, match=r"dup\.dat: event format kvm:kvm_exit declares field 'esr_ec' twice"):
        read_tracedat(tmp_path / "dup.dat")
