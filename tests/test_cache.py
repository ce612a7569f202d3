"""The Parquet cache beside a capture: a second open gives the same tables from the cache, a changed
file is read again, and entries made by other reader code are removed when a new one is stored."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from polars.testing import assert_frame_equal

from kvmtrace.capture import open_capture
from kvmtrace.ingest import cache
from tests.report_oracle import CAPTURES

SOURCE = CAPTURES / "board-vhe-hog" / "trace.dat"


@pytest.fixture(autouse=True)
def numpy_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    """A trace.dat is cached only where the numpy engine reads it (cache.pays_for)."""
    monkeypatch.setenv("KVMTRACE_ENGINE", "numpy")


@pytest.fixture
def trace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("KVMTRACE_CACHE_DIR", str(tmp_path / "cache"))
    path = tmp_path / "trace.dat"
    shutil.copyfile(SOURCE, path)
    return path


def test_second_open_comes_from_the_cache_with_the_same_tables(trace: Path) -> None:
    first = open_capture(trace)
    second = open_capture(trace)
    assert not first.from_cache and second.from_cache
    assert_frame_equal(first.tables.events, second.tables.events)
    assert first.tables.by_event.keys() == second.tables.by_event.keys()
    for name, table in first.tables.by_event.items():
        assert_frame_equal(table, second.tables.by_event[name])
    assert first.tables.report == second.tables.report
    assert first.tables.cmdlines == second.tables.cmdlines


def test_a_changed_file_is_read_again(trace: Path) -> None:
    open_capture(trace)
    data = bytearray(trace.read_bytes())
    data[-1] ^= 0xFF  # the last byte of the last page: padding or data, the content changed
    trace.write_bytes(bytes(data))
    assert not open_capture(trace).from_cache


def test_entries_of_other_reader_code_are_dropped(trace: Path) -> None:
    key = cache.content_key(trace)
    content = key.rsplit("-", 1)[0]
    root = cache.cache_root(trace)
    stale = root / f"{content}-000000000000"
    other = root / "0123456789abcdef0123456789abcdef-000000000000"  # another file's entry stays
    for entry in (stale, other):
        entry.mkdir(parents=True)
        (entry / "meta.json").write_text("{}")
    open_capture(trace)
    assert sorted(p.name for p in root.iterdir() if p.is_dir()) == sorted([key, other.name])
