"""The Parquet cache never lies (issue 11): what it serves is verified, it never writes through a link,
and any failure means reading the trace, with a one-line note."""

from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from kvmtrace.capture import open_capture
from kvmtrace.ingest import cache
from tests.test_cache import SOURCE, numpy_engine  # noqa: F401 - an autouse fixture: the numpy engine's cache


@pytest.fixture
def trace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("KVMTRACE_CACHE_DIR", str(tmp_path / "cache"))
    path = tmp_path / "capture" / "trace.dat"
    path.parent.mkdir()
    shutil.copyfile(SOURCE, path)
    return path


def entry_of(trace: Path) -> Path:
    return cache.cache_root(trace) / cache.content_key(trace)


def test_an_edit_with_the_mtime_put_back_is_read_again(trace: Path) -> None:
    first = open_capture(trace)
    st = trace.stat()
    data = bytearray(trace.read_bytes())
    data[-100] ^= 0xFF
    trace.write_bytes(bytes(data))
    os.utime(trace, ns=(st.st_atime_ns, st.st_mtime_ns))
    second = open_capture(trace)
    assert not second.from_cache
    assert first.tables.events.height >= 0


def test_a_damaged_table_is_not_served_and_is_replaced(trace: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = open_capture(trace).tables.events
    table = entry_of(trace) / "events.parquet"
    data = bytearray(table.read_bytes())
    data[len(data) // 2] ^= 0x01  # one bit: the parquet may still decode, to wrong timestamps
    table.write_bytes(bytes(data))
    again = open_capture(trace)
    assert not again.from_cache
    assert_frame_equal(again.tables.events, good)
    assert "kvmtrace: note: cache entry" in capsys.readouterr().err
    third = open_capture(trace)  # the entry was stored again: served, verified
    assert third.from_cache
    assert_frame_equal(third.tables.events, good)


def test_a_cache_shipped_with_a_copied_folder_is_not_trusted(trace: Path, capsys: pytest.CaptureFixture[str]) -> None:
    open_capture(trace)
    entry = entry_of(trace)
    seal = json.loads((entry / "seal.json").read_text())
    forged = pl.read_parquet(entry / "events.parquet").head(10)  # a consistent entry: hashes match...
    forged.write_parquet(entry / "events.parquet")
    seal["files"]["events.parquet"] = cache.hashlib.sha256((entry / "events.parquet").read_bytes()).hexdigest()
    seal["mac"] = "0" * 64  # ...but not sealed with this user's secret
    (entry / "seal.json").write_text(json.dumps(seal))
    cap = open_capture(trace)
    assert not cap.from_cache and cap.tables.events.height > 10
    assert "not made by this user" in capsys.readouterr().err


def test_a_planted_cache_link_is_never_written_through(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("KVMTRACE_CACHE_DIR", raising=False)
    folder = tmp_path / "capture"
    folder.mkdir()
    shutil.copyfile(SOURCE, folder / "trace.dat")
    victim = tmp_path / "victim"
    victim.mkdir()
    (folder / ".kvmtrace-cache").symlink_to(victim)
    for _ in range(2):
        cap = open_capture(folder)
        assert not cap.from_cache and cap.tables.events.height > 0
    assert list(victim.iterdir()) == []
    assert "cache not written" in capsys.readouterr().err


def test_a_folder_others_can_write_is_not_used(trace: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = cache.cache_root(trace)
    root.mkdir(parents=True)
    root.chmod(0o777)
    assert not open_capture(trace).from_cache
    assert not open_capture(trace).from_cache
    assert "not a folder of this user's alone" in capsys.readouterr().err


@pytest.mark.parametrize("failure", ["polars", "disk"])
def test_a_full_disk_is_a_note_and_leaves_nothing(trace: Path, monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str], failure: str) -> None:
    def full(*_args: object, **_kwargs: object) -> None:
        if failure == "polars":
            raise pl.exceptions.ComputeError("failed to write: No space left on device (os error 28)")
        raise OSError(errno.ENOSPC, "No space left on device")

    if failure == "polars":
        monkeypatch.setattr(pl.DataFrame, "write_parquet", full)
    else:
        monkeypatch.setattr(cache, "_write_new", full)
    cap = open_capture(trace)
    assert cap.tables.events.height > 0 and not cap.from_cache
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("kvmtrace: note: cache not written:"), err
    root = cache.cache_root(trace)
    assert not [p for p in root.iterdir() if p.name.startswith(".partial-")] if root.exists() else True
    assert not entry_of(trace).exists()


def test_partial_folders_of_gone_processes_are_removed(trace: Path) -> None:
    root = cache.cache_root(trace)
    root.mkdir(parents=True, mode=0o700)
    leftover = root / ".partial-999999999-abcd"
    leftover.mkdir()
    (leftover / "events.parquet").write_bytes(b"half")
    open_capture(trace)
    assert not leftover.exists()
    assert open_capture(trace).from_cache
