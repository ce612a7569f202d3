"""Caches that pay for themselves: tables are cached where a read is slow (text, the numpy engine),
not for a trace.dat the native kernels read as fast as the cache loads it; compiled kernels of
other sources are removed when new ones are built."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from kvmtrace.capture import open_capture
from kvmtrace.ingest import kernels
from tests.report_oracle import CAPTURES

TRACE = CAPTURES / "board-vhe-hog" / "trace.dat"
TEXT = Path(__file__).parent / "fixtures" / "text"


def _entries(cache_dir: Path) -> list[str]:
    return sorted(p.name for p in cache_dir.iterdir() if not p.name.startswith(".")) if cache_dir.exists() else []


def test_tracedat_is_cached_only_without_the_native_kernels(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if kernels.engine().name != "native":
        pytest.skip("needs the native kernels")
    cache_dir = tmp_path / "cache"
    monkeypatch.setenv("KVMTRACE_CACHE_DIR", str(cache_dir))
    trace = tmp_path / "trace.dat"
    shutil.copyfile(TRACE, trace)
    assert not open_capture(trace).from_cache and not open_capture(trace).from_cache
    assert _entries(cache_dir) == []
    monkeypatch.setenv("KVMTRACE_ENGINE", "numpy")
    assert not open_capture(trace).from_cache and open_capture(trace).from_cache
    assert len(_entries(cache_dir)) == 1


def test_text_is_cached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KVMTRACE_CACHE_DIR", str(tmp_path / "cache"))
    source = next(p for p in sorted(TEXT.iterdir()) if p.suffix == ".txt")
    text = tmp_path / source.name
    shutil.copyfile(source, text)
    first, second = open_capture(text), open_capture(text)
    assert not first.from_cache and second.from_cache
    assert second.tables.events.equals(first.tables.events)


def test_kernels_of_other_sources_are_removed_when_new_ones_are_built(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    if shutil.which(os.environ.get("CC", "cc")) is None:
        pytest.skip("needs a C compiler")
    monkeypatch.setenv("KVMTRACE_NATIVE_DIR", str(tmp_path))
    machine = kernels.platform.machine()
    stale = tmp_path / f"kvmtrace-native-0123456789abcdef-{machine}.so"
    other_variant = tmp_path / f"kvmtrace-native-0123456789abcdef-{machine}-asan.so"
    dead_build = tmp_path / f"kvmtrace-native-fedcba9876543210-{machine}.soab12cd.tmp"
    fresh_build = tmp_path / f"kvmtrace-native-fedcba9876543210-{machine}.soef34gh.tmp"
    unrelated = tmp_path / "secret"
    for path in (stale, other_variant, dead_build, fresh_build, unrelated):
        path.write_bytes(b"x")
    old = time.time() - 2 * kernels.STALE_BUILD_S
    os.utime(dead_build, (old, old))
    target = kernels._build()
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == sorted([target.name, other_variant.name, fresh_build.name, unrelated.name])
