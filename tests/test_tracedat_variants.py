"""The trace.dat reader on every file variant the writer makes: v6/v7, none/zlib/zstd, LE/BE,
4/8-byte longs, two buffers, timestamp options and missed events; checked against the
events written and against `trace-cmd report`."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from kvmtrace.fileformats.writer import TimeShiftSample
from kvmtrace.ingest.tracedat.reader import read_tracedat
from tests.test_tracedat_writer import BASE, COMBOS, Expected, events_of, new_writer, scenario


def ours(path: Path) -> list[tuple[str, int, int, str, str]]:
    t = read_tracedat(path)
    ev = t.events
    return [(r["buffer"], r["cpu"], r["ts"], f"{r['comm']}-{r['pid']}", r["event"])
            for r in ev.with_columns(pl.col("comm", "event", "buffer").cast(pl.String)).iter_rows(named=True)]


def key(e: Expected) -> tuple[str, int, int, str, str]:
    return (e.buffer, e.cpu, e.ts, e.comm_pid, e.event)


@pytest.mark.parametrize(("version", "compression", "big_endian", "long_size"),
                         [*COMBOS, (7, "zlib", False, 8), (7, "zlib", True, 4)])
def test_reader_matches_written_events_and_trace_cmd(tmp_path: Path, version: int, compression: str | None,
                                                     big_endian: bool, long_size: int) -> None:
    path = tmp_path / "trace.dat"
    w, enc = new_writer(version, compression, big_endian, long_size)
    with w:
        expected = scenario(w, enc)
        w.write(path)
    got = ours(path)
    assert sorted(got) == sorted(key(e) for e in expected)
    if compression != "zlib":  # this trace-cmd build reads zstd only
        assert got == [key(e) for e in events_of(path)]
    t = read_tracedat(path)
    assert t.meta.version == str(version)
    assert t.meta.endian == ("big" if big_endian else "little")
    assert t.meta.long_size == long_size
    assert t.meta.compression == (compression or "none")
    assert t.report.lost_events[""][1] == 17
    assert t.report.lost_events[""][0] == 0
    assert set(t.meta.buffers) == {"", "guest"}


def test_field_values_of_written_events(tmp_path: Path) -> None:
    path = tmp_path / "trace.dat"
    w, enc = new_writer(6, None, True, 4)
    with w:
        scenario(w, enc)
        w.write(path)
    t = read_tracedat(path)
    ex = t.table("kvm_exit").row(0, named=True)
    # the format file (not the page header's long size) decides field sizes: vcpu_pc stays 8 bytes
    assert (ex["ret"], ex["esr_ec"], ex["vcpu_pc"]) == (1, 0x16, 0xFFFF800008001234)
    sw = t.table("sched_switch").row(0, named=True)
    assert (sw["prev_comm"], sw["prev_pid"], sw["prev_state"], sw["next_comm"]) == ("vcpu0", 42, 1, "swapper/1")
    irq = t.table("irq_handler_entry").row(0, named=True)
    assert (irq["irq"], irq["name"], irq["ts"]) == (27, "arch_timer", BASE + (1 << 28))
    texts = t.markers()["text"].to_list()
    assert texts == ["guest marker " + "x" * 150, "hello marker"]  # time order: BASE+20, BASE+2**28+7


def test_missed_events_without_a_count_are_flagged(tmp_path: Path) -> None:
    path = tmp_path / "trace.dat"
    w, enc = new_writer(7, None, False, 8)
    with w:
        scenario(w, enc, missed=0)
        w.write(path)
    t = read_tracedat(path)
    assert t.report.lost_unknown_pages[""][1] == 1
    assert t.report.lost_events[""][1] == 0


@pytest.mark.parametrize("version", [6, 7])
def test_offset_and_tsc2nsec_options(tmp_path: Path, version: int) -> None:
    path = tmp_path / "trace.dat"
    w, enc = new_writer(version, None, False, 8)
    w.offset = 5000
    w.set_tsc2nsec(3, 1)
    with w:
        expected = scenario(w, enc)
        w.write(path)
    got = ours(path)
    assert got == [key(e) for e in events_of(path)]
    assert sorted(g[2] for g in got) == sorted((e.ts * 3 >> 1) + 5000 for e in expected)


def test_time_shift_option(tmp_path: Path) -> None:
    path = tmp_path / "trace.dat"
    w, enc = new_writer(7, None, False, 8)
    samples = [TimeShiftSample(BASE, 1000), TimeShiftSample(BASE + (1 << 29), 3000)]
    w.set_time_shift(0xABC, 1, [samples, samples])
    with w:
        scenario(w, enc)
        w.write(path)
    got = ours(path)
    assert got == [key(e) for e in events_of(path)]


@pytest.mark.parametrize("signed", [False, True])
@pytest.mark.parametrize("lengths", [[6] * 50, [0, 3, 6, 1, 6, 0, 2] * 7, [0] * 5 + [400] + [1] * 40, [0, 0]])
def test_array_lists_match_a_record_by_record_reading(lengths: list[int], signed: bool) -> None:
    """Both ways _int_lists builds lists (the padded rectangle for even lengths, the grouped gather
    for very uneven ones) give what reading each record's elements one by one gives."""
    import numpy as np

    from kvmtrace.fileformats.formats import FieldFormat
    from kvmtrace.ingest.tracedat.fields import Blob, _int_lists

    rng = np.random.default_rng(len(lengths))
    data = rng.integers(0, 256, 16 + 4 * sum(lengths), dtype=np.uint8)  # the last record ends the data
    spans = np.array(lengths, np.int64) * 4
    starts = np.concatenate([[0], np.cumsum(spans)[:-1]]) + 16
    f = FieldFormat("vals", "int[]" if signed else "u32[]", 0, 0, signed, array_len=0)
    assert f.element_size == 4
    got = _int_lists(Blob(data, "<"), starts, spans, f).to_list()
    want = [[int.from_bytes(data[s + 4 * i:s + 4 * i + 4].tobytes(), "little", signed=signed) for i in range(n)]
            for s, n in zip(starts.tolist(), lengths, strict=True)]
    assert got == want
