"""Read a capture with the numpy engine and with the native kernels, and require the same result."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from polars.testing import assert_frame_equal

from kvmtrace.ingest import kernels
from kvmtrace.ingest.tables import EventTables

Reader = Callable[[Path], EventTables]


def read_with(reader: Reader, path: Path, engine: str, monkeypatch: pytest.MonkeyPatch) -> EventTables:
    with monkeypatch.context() as m:
        m.setenv("KVMTRACE_ENGINE", engine)
        assert kernels.engine().name == engine
        return reader(path)


def assert_same_tables(reader: Reader, path: Path, monkeypatch: pytest.MonkeyPatch) -> EventTables:
    """Both engines: the same common table, typed tables (in the same order), report, metadata
    and cmdlines. Returns the native engine's tables."""
    by_numpy = read_with(reader, path, "numpy", monkeypatch)
    by_native = read_with(reader, path, "native", monkeypatch)
    assert_frame_equal(by_numpy.events, by_native.events)
    assert list(by_numpy.by_event) == list(by_native.by_event)
    for name, table in by_numpy.by_event.items():
        assert_frame_equal(table, by_native.by_event[name])
    assert by_numpy.report == by_native.report
    assert by_numpy.meta == by_native.meta
    assert by_numpy.cmdlines == by_native.cmdlines
    return by_native
