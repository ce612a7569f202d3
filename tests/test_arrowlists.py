"""List columns built from flat buffers through the Arrow C data interface (ingest/arrowlists.py): the
lists numpy slicing gives, for every integer width, with empty rows, and nothing kept once polars lets go."""

from __future__ import annotations

import gc

import numpy as np
import polars as pl
import pytest

from kvmtrace.ingest import arrowlists
from kvmtrace.ingest.arrowlists import list_series
from kvmtrace.ingest.dtypes import lists_of

DTYPES = [np.uint8, np.int8, np.uint16, np.int16, np.uint32, np.int32, np.uint64, np.int64]


@pytest.mark.parametrize("dtype", DTYPES)
def test_lists_are_the_slices_of_the_values(dtype: type) -> None:
    rng = np.random.default_rng(7)
    counts = rng.integers(0, 6, 1000)
    info = np.iinfo(dtype)
    values = rng.integers(info.min, info.max, int(counts.sum()), dtype=dtype, endpoint=True)
    ends = np.cumsum(counts)
    expected = [values[end - k:end].tolist() for k, end in zip(counts.tolist(), ends.tolist(), strict=True)]
    series = list_series("v", values, counts)
    assert series.dtype == pl.List(pl.from_numpy(values).to_series().dtype)
    assert series.to_list() == expected


def test_no_rows_and_only_empty_rows() -> None:
    assert list_series("v", np.zeros(0, np.uint32), np.zeros(0, np.int64)).to_list() == []
    assert list_series("v", np.zeros(0, np.uint32), np.zeros(3, np.int64)).to_list() == [[], [], []]


def test_a_count_that_does_not_add_up_is_refused() -> None:
    with pytest.raises(ValueError, match="3 values for lists of 4"):
        list_series("v", np.arange(3, dtype=np.uint32), np.array([2, 2]))


def test_buffers_are_let_go_when_polars_is_done() -> None:
    gc.collect()
    before = len(arrowlists._ALIVE)
    frame = pl.DataFrame({"v": list_series("v", np.arange(10, dtype=np.int64), np.array([4, 0, 6]))})
    assert len(arrowlists._ALIVE) == before + 1
    assert frame.select(pl.col("v").list.sum())["v"].to_list() == [6, 0, 39]
    del frame
    gc.collect()
    assert len(arrowlists._ALIVE) == before


def test_lists_of_takes_the_flat_path_and_keeps_its_dtype() -> None:
    values = pl.Series("v", [1, 2, 3, 4, 5], dtype=pl.UInt16)
    out = lists_of(values, np.array([2, 0, 3]), pl.List(pl.UInt16))
    assert out.dtype == pl.List(pl.UInt16) and out.to_list() == [[1, 2], [], [3, 4, 5]]
