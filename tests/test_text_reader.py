"""The text reader on trace-cmd report output of the bundled captures and a tracefs trace sample."""

from __future__ import annotations

import gzip
import re
import shutil
import subprocess
from collections import Counter
from pathlib import Path

import polars as pl
import pytest
import zstandard

from kvmtrace.errors import CaptureError
from kvmtrace.ingest.tables import COMMON_SCHEMA, EventTables
from kvmtrace.ingest.text.reader import read_text

ROOT = Path(__file__).resolve().parent.parent
CAPTURES = ROOT / "captures"
VHE = CAPTURES / "arm64-vhe-cyclictest" / "trace.dat"
X86 = CAPTURES / "x86-host-cyclictest-stress" / "trace.dat"
KERNEL_FIXTURE = Path(__file__).parent / "fixtures" / "text" / "kernel_trace.txt"

needs_trace_cmd = pytest.mark.skipif(
    shutil.which("trace-cmd") is None, reason="trace-cmd not installed"
)


def report_text(dat: Path, out: Path, *options: str) -> Path:
    """Write ``trace-cmd report OPTIONS -i dat`` to ``out``."""
    with out.open("wb") as fh:
        subprocess.run(
            ["trace-cmd", "report", *options, "-i", str(dat)],
            stdout=fh,
            check=True,
            stderr=subprocess.DEVNULL,
        )
    return out


@pytest.fixture(scope="module")
def x86_raw(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return report_text(X86, tmp_path_factory.mktemp("x86") / "raw.txt", "-N", "-t", "-R")


@pytest.fixture(scope="module")
def x86_tables(x86_raw: Path) -> EventTables:
    return read_text(x86_raw)


def event_line_counts(text: Path) -> Counter[str]:
    """Count event names straight from the report text (the word after the timestamp)."""
    counts: Counter[str] = Counter()
    for line in text.read_text(errors="replace").splitlines():
        parts = line.split("]", 1)
        if len(parts) == 2 and ": " in parts[1]:
            counts[parts[1].split(": ", 2)[1].strip().rstrip(":")] += 1
    return counts


@needs_trace_cmd
def test_x86_event_counts_match_the_report_lines(x86_raw: Path, x86_tables: EventTables) -> None:
    expected = event_line_counts(x86_raw)
    got = dict(
        x86_tables.events.group_by("event")
        .len()
        .select(pl.col("event").cast(pl.String), "len")
        .iter_rows()
    )
    assert got == dict(expected)
    assert sum(expected.values()) == 41903
    assert got["sched_switch"] == 12755 and got["hrtimer_expire_entry"] == 8277


@needs_trace_cmd
def test_x86_common_columns_and_meta(x86_tables: EventTables) -> None:
    ev = x86_tables.events
    assert dict(ev.schema) == COMMON_SCHEMA
    assert ev["idx"].to_list() == list(range(ev.height))
    assert ev["ts"].is_sorted()
    first = ev.row(0, named=True)
    assert first["ts"] == 677_536_803_493 and first["cpu"] == 0 and first["pid"] == 19650
    assert (
        first["comm"] == "run_ct.sh"
        and first["event"] == "sched_switch"
        and first["buffer"] == "x86ct"
    )
    assert x86_tables.meta.kind == "text"
    assert x86_tables.meta.version == "trace-cmd report -t -R"
    assert x86_tables.meta.cpus == 2 and x86_tables.meta.buffers == ["x86ct"]
    assert x86_tables.report.unparsed_lines == 0 and x86_tables.report.total_lost() == 0


@needs_trace_cmd
def test_x86_typed_sched_switch_first_row(x86_tables: EventTables) -> None:
    sw = x86_tables.table("sched_switch")
    assert sw.schema["prev_pid"] == pl.Int32 and sw.schema["prev_state"] == pl.Int64
    row = sw.row(0, named=True)
    assert row == {
        "idx": 0,
        "ts": 677_536_803_493,
        "cpu": 0,
        "pid": 19650,
        "prev_comm": "run_ct.sh",
        "prev_pid": 19650,
        "prev_prio": 120,
        "prev_state": 0,
        "next_comm": "run_ct.sh",
        "next_pid": 19667,
        "next_prio": 120,
    }
    timer = x86_tables.table("hrtimer_expire_entry").row(0, named=True)
    assert timer["hrtimer"] == 0xFFFF888627C1C6F8 and timer["now"] == 677512012643
    assert timer["function"] == 0xFFFFFFFF814332E0


@needs_trace_cmd
def test_default_form_gives_the_same_common_columns_as_raw(
    tmp_path: Path, x86_tables: EventTables
) -> None:
    pretty = read_text(report_text(X86, tmp_path / "pretty.txt", "-t"))
    cols = ["ts", "cpu", "pid", "comm", "event", "buffer"]
    assert pretty.events.select(cols).equals(x86_tables.events.select(cols))
    wake = pretty.table("sched_wakeup").drop("idx")
    assert wake.equals(x86_tables.table("sched_wakeup").drop("idx"))


@needs_trace_cmd
def test_microsecond_form_rounds_timestamps(tmp_path: Path, x86_tables: EventTables) -> None:
    micro = read_text(report_text(X86, tmp_path / "us.txt", "-R"))
    ns = x86_tables.events["ts"]
    rounded = ((ns + 500) // 1000) * 1000
    assert (micro.events["ts"] - rounded).abs().max() == 0
    assert micro.meta.version == "trace-cmd report -R"


@needs_trace_cmd
def test_latency_form_fills_flags_and_preempt(tmp_path: Path) -> None:
    lat = read_text(report_text(X86, tmp_path / "lat.txt", "-l", "-t"))
    first = lat.events.row(0, named=True)
    # "x86ct: run_ct.s-19650   0d..2.   677.536803493: sched_switch:" -> irqs off, preempt depth 2
    assert (
        first["flags"] == 0x01
        and first["preempt"] == 2
        and first["cpu"] == 0
        and first["pid"] == 19650
    )
    assert lat.events["flags"].null_count() == 0


@needs_trace_cmd
def test_compressed_copies_read_the_same(
    tmp_path: Path, x86_raw: Path, x86_tables: EventTables
) -> None:
    data = x86_raw.read_bytes()
    gz = tmp_path / "trace.txt.data"
    gz.write_bytes(gzip.compress(data))
    zst = tmp_path / "other_name"
    zst.write_bytes(zstandard.ZstdCompressor().compress(data))
    for path, kind in ((gz, "gzip"), (zst, "zstd")):
        tables = read_text(path)
        assert tables.meta.compression == kind
        assert tables.events.equals(x86_tables.events)
        assert tables.table("sched_switch").equals(x86_tables.table("sched_switch"))


@needs_trace_cmd
def test_arm64_raw_kvm_fields_and_markers(tmp_path: Path) -> None:
    tables = read_text(report_text(VHE, tmp_path / "vhe.txt", "-N", "-t", "-R"))
    assert tables.events.height == 1_054_913
    exit_row = tables.table("kvm_exit").row(0, named=True)
    assert (exit_row["ret"], exit_row["esr_ec"], exit_row["vcpu_pc"]) == (2, 0x20, 0x40000000)
    save = tables.table("kvm_timer_save_state").row(0, named=True)
    assert save["ctl"] == 0 and save["cval"] == 0 and save["timer_idx"] == 1
    dreg = tables.table("kvm_arm_set_dreg32").row(0, named=True)
    assert dreg["name"] == 0xFFFFCC1058DEFF18 and dreg["value"] == 0x84E66
    texts = [t.strip() for t in tables.markers()["text"].to_list()]
    assert texts[0] == "L2_SHELL uptime=7.26" and texts[1] == "L2_CYCLICTEST_START dur=10"


@needs_trace_cmd
def test_arm64_default_form_decodes_the_broken_kvm_exit(tmp_path: Path) -> None:
    tables = read_text(report_text(VHE, tmp_path / "vhe_default.txt"))
    exit_row = tables.table("kvm_exit").row(0, named=True)
    # "<CANT FIND FIELD exit_reason>TRAP: HSR_EC: 0x0020 (IABT_LOW), PC: 0x0000000040000000"
    assert (exit_row["ret"], exit_row["esr_ec"], exit_row["vcpu_pc"]) == (2, 0x20, 0x40000000)
    assert tables.table("kvm_exit")["esr_ec"].null_count() == 0
    assert tables.table("sched_switch").row(0, named=True)["next_comm"] == "kworker/0:1"
    assert tables.markers()["text"][0].strip() == "L2_SHELL uptime=7.26"


def test_kernel_trace_fixture() -> None:
    tables = read_text(KERNEL_FIXTURE)
    assert tables.meta.version == "tracefs trace" and tables.report.unparsed_lines == 0
    ev = tables.events
    assert ev.height == 1288
    first = ev.row(0, named=True)
    # "kdamond.0-77      [001] d..2.   457.501218: sched_switch: prev_comm=kdamond.0 ..."
    assert first == {
        "idx": 0,
        "ts": 457_501_218_000,
        "cpu": 1,
        "pid": 77,
        "comm": "kdamond.0",
        "event": "sched_switch",
        "buffer": "",
        "flags": 0x01,
        "preempt": 2,
    }
    sw = tables.table("sched_switch").row(0, named=True)
    assert (sw["prev_comm"], sw["prev_pid"], sw["next_comm"], sw["next_pid"]) == (
        "kdamond.0",
        77,
        "swapper/1",
        0,
    )
    memfd = ev.filter(pl.col("comm") == "memfd:sealed-91")
    assert memfd.height > 0 and set(memfd["pid"].to_list()) == {3103}
    wake = tables.table("sched_wakeup").row(0, named=True)
    assert wake["target_cpu"] == 0 and wake["comm"] == "migration/0" and wake["prio"] == 0
    soft = tables.table("softirq_raise").row(0, named=True)
    assert soft["vec"] == 9
    assert tables.table("irq_handler_exit")["ret"].drop_nulls().unique().to_list() == [1]


def test_lost_event_lines_are_counted(tmp_path: Path) -> None:
    lines = KERNEL_FIXTURE.read_text().splitlines()
    body = [
        *lines[:20],
        "CPU:1 [LOST 17 EVENTS]",
        *lines[20:40],
        "CPU:0 [LOST 3 EVENTS]",
        "CPU:0 [LOST 2 EVENTS]",
        *lines[40:],
    ]
    path = tmp_path / "lost.txt"
    path.write_text("\n".join(body) + "\n")
    tables = read_text(path)
    assert tables.report.lost_events == {"": {1: 17, 0: 5}}
    assert tables.report.unparsed_lines == 0


def test_values_that_do_not_read_are_said_not_silently_null(tmp_path: Path) -> None:
    """A sched_switch line whose priority is damaged: its fields are null, and the report says how many
    rows of which fields; the undamaged capture says nothing."""
    default = report_text(X86, tmp_path / "x86.txt")
    text = default.read_text()
    damaged = re.sub(r"(sched_switch: .*?) \[(\d+)\] ([RSD]\+?) ==>", r"\1 [1x\2] \3 ==>", text, count=2)
    assert damaged != text
    path = tmp_path / "damaged.txt"
    path.write_text(damaged)
    reasons = [s.reason for s in read_text(path).report.skipped if s.where == "event sched_switch"]
    height = read_text(default).by_event["sched_switch"].height
    assert reasons == [f"2 of {height:,} rows: fields prev_comm, prev_pid, prev_prio, next_comm, next_pid, "
                       "next_prio could not be read from the text (null)"]
    assert [s for s in read_text(default).report.skipped if s.where.startswith("event")] == []


def test_an_unreadable_array_is_said(tmp_path: Path) -> None:
    """sys_enter's ``args=ARRAY[...]`` with a byte that is not hex: that row's args is null, and said."""
    raw = report_text(CAPTURES / "x86-raw-syscalls" / "trace.dat", tmp_path / "raw.txt", "-R")
    text = raw.read_text()
    assert "args=ARRAY[" in text
    damaged = tmp_path / "damaged.txt"
    damaged.write_text(text.replace("args=ARRAY[", "args=ARRAY[zz, ", 1))
    height = read_text(raw).by_event["sys_enter"].height
    reasons = [s.reason for s in read_text(damaged).report.skipped if s.where == "event sys_enter"]
    assert reasons == [f"1 of {height:,} rows: field args could not be read from the text (null)"]


def test_unknown_events_keep_their_payload_text_and_are_counted(tmp_path: Path) -> None:
    """Event names no format knows, with a printed (not -R) payload: no traceback, each counted in
    unknown_events, and the payload text kept in the typed table's ``payload`` column."""
    default = report_text(X86, tmp_path / "x86.txt")
    renamed = re.sub(r": (sched_switch|sched_wakeup): ", r": \1_x: ", default.read_text())
    path = tmp_path / "unknown.txt"
    path.write_text(renamed)
    tables = read_text(path)
    reference = read_text(default)
    for name in ("sched_switch", "sched_wakeup"):
        count = reference.by_event[name].height
        assert tables.report.unknown_events[f"{name}_x"] == count > 0
        table = tables.by_event[f"{name}_x"]
        assert table.columns == ["idx", "ts", "cpu", "pid", "payload"] and table.height == count
        assert table["payload"].null_count() == 0
    assert tables.events.height == reference.events.height


def test_unparsed_line_in_the_middle_is_reported(tmp_path: Path) -> None:
    lines = KERNEL_FIXTURE.read_text().splitlines()
    path = tmp_path / "bad_middle.txt"
    path.write_text("\n".join([*lines[:100], "this is not a trace line", *lines[100:]]) + "\n")
    tables = read_text(path)
    assert tables.report.unparsed_lines == 1
    assert tables.report.skipped[0].where == "line 101"


@pytest.mark.parametrize(
    "content, where",
    [
        (b"", None),
        (bytes(range(256)) * 8, "line 1"),
        (b"hello\nworld\n", "line 1"),
    ],
)
def test_bad_input_raises_capture_error(tmp_path: Path, content: bytes, where: str | None) -> None:
    path = tmp_path / "bad.txt"
    path.write_bytes(content)
    with pytest.raises(CaptureError) as err:
        read_text(path)
    assert err.value.path == str(path) and err.value.where == where
    if content:
        assert "expected a trace-cmd report or tracefs trace line" in str(err.value)


def _binary_reader() -> object | None:
    try:
        from kvmtrace.ingest.tracedat.reader import read_tracedat
    except ImportError:
        return None
    return read_tracedat


# fields whose value text cannot carry the binary value: %ps symbols, and print's buf newline
TEXT_ONLY_GAPS = {("print", "ip"), ("hrtimer_start", "function")}


@needs_trace_cmd
@pytest.mark.slow
@pytest.mark.parametrize("dat", [X86, VHE], ids=["x86", "arm64-vhe"])
def test_text_equals_binary_reader(tmp_path: Path, dat: Path) -> None:
    read_tracedat = _binary_reader()
    if read_tracedat is None:
        pytest.skip("binary reader not available")
    binary = read_tracedat(dat)  # type: ignore[operator]
    text = read_text(report_text(dat, tmp_path / "ref.txt", "-N", "-t", "-R"))
    cols = ["idx", "ts", "cpu", "pid", "comm", "event", "buffer"]
    assert text.events.select(cols).equals(binary.events.select(cols))
    assert set(text.by_event) == {k for k, v in binary.by_event.items() if v.height}
    for name, table in text.by_event.items():
        other = binary.by_event[name]
        assert table.schema == other.schema, name
        for column in table.columns:
            if (name, column) in TEXT_ONLY_GAPS:
                continue
            left, right = table[column], other[column]
            if name == "print" and column == "buf":
                left, right = left.str.strip_chars_end(), right.str.strip_chars_end()
            assert left.equals(right), f"{name}.{column}"


def _report_line(comm: bytes, pid: int, cpu: int, ts_ns: int, event: str, payload: bytes) -> bytes:
    """One ``trace-cmd report -N -t -R`` line, padded by bytes as trace-cmd pads it."""
    head = comm.rjust(16) + b"-" + str(pid).encode().ljust(5)
    stamp = f"{ts_ns // 10**9:5d}.{ts_ns % 10**9:09d}".encode()
    return head + f" [{cpu:03d}] ".encode() + stamp + b": " + (event + ":").encode().ljust(22) + b" " + payload


def _synthetic_report(odd: list[tuple[bytes, int]]) -> bytes:
    """A -R report (large enough for the fast path) with the ``odd`` (comm, pid) tasks in it."""
    lines = [b"cpus=2"]
    tasks = [(b"qemu-system-aar", 466), (b"<idle>", 0), *odd]
    ts = 6_574_997_632
    for i in range(300):
        comm, pid = tasks[(i // 3) % len(tasks)]
        other, other_pid = tasks[(i // 3 + 1) % len(tasks)]
        ts += 1_000 + i
        if i % 3 == 0:
            payload = (b"prev_comm=" + comm + b" prev_pid=" + str(pid).encode() + b" prev_prio=120 prev_state=1"
                       b" next_comm=" + other + b" next_pid=" + str(other_pid).encode() + b" next_prio=-1")
            lines.append(_report_line(comm, pid, i % 2, ts, "sched_switch", payload))
        elif i % 3 == 1:
            payload = b"comm=" + other + b" pid=" + str(other_pid).encode() + b" prio=120 target_cpu=001"
            lines.append(_report_line(comm, pid, i % 2, ts, "sched_wakeup", payload))
        else:
            lines.append(_report_line(comm, pid, i % 2, ts, "irq_handler_entry", b"irq=13 name=arch_timer"))
    return b"\n".join(lines) + b"\n"


def _exact(path: Path, monkeypatch: pytest.MonkeyPatch) -> EventTables:
    """The tables of the exact (regex) reader alone."""
    import kvmtrace.ingest.text.reader as text_module

    with monkeypatch.context() as m:
        m.setattr(text_module, "FAST_MIN_BYTES", 1 << 62)
        return read_text(path)


def _same_tables(a: EventTables, b: EventTables) -> None:
    assert a.events.equals(b.events)
    assert set(a.by_event) == set(b.by_event)
    for name, table in a.by_event.items():
        assert table.schema == b.by_event[name].schema, name
        assert table.equals(b.by_event[name]), name
    assert a.report.unparsed_lines == b.report.unparsed_lines
    assert a.cmdlines == b.cmdlines


@pytest.mark.parametrize(
    "comm",
    [b"a b-c:d", b"x-1 [2] y", b"k:w-7 8"],
    ids=["spaces-dash-colon", "bracket", "dash-digits"],
)
def test_comm_with_spaces_dashes_and_colons(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, comm: bytes
) -> None:
    path = tmp_path / "odd_comm.txt"
    path.write_bytes(_synthetic_report([(comm, 77)]))
    tables = read_text(path)
    assert tables.report.unparsed_lines == 0
    odd = tables.events.filter(pl.col("pid") == 77)
    assert odd.height == 99 and set(odd["comm"].cast(pl.String).to_list()) == {comm.decode()}
    sw = tables.table("sched_switch").filter(pl.col("prev_pid") == 77)
    assert set(sw["prev_comm"].to_list()) == {comm.decode()}
    first = tables.events.row(0, named=True)
    assert (first["ts"], first["cpu"], first["pid"], first["comm"]) == (6_574_998_632, 0, 466, "qemu-system-aar")
    assert tables.table("sched_switch")["next_prio"].unique().to_list() == [-1]
    assert tables.table("sched_wakeup")["target_cpu"].unique().to_list() == [1]
    _same_tables(tables, _exact(path, monkeypatch))


def test_non_ascii_comm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    comm = "kwörker/ü:1".encode()
    path = tmp_path / "utf8_comm.txt"
    path.write_bytes(_synthetic_report([(comm, 4242)]))
    tables = read_text(path)
    assert tables.report.unparsed_lines == 0 and tables.events.height == 300
    odd = tables.events.filter(pl.col("pid") == 4242)
    assert odd.height == 99 and set(odd["comm"].cast(pl.String).to_list()) == {"kwörker/ü:1"}
    wake = tables.table("sched_wakeup").filter(pl.col("pid") == 4242)
    assert wake.height > 0 and set(wake["comm"].to_list()) == {"kwörker/ü:1"}
    assert tables.cmdlines[4242] == "kwörker/ü:1"
    _same_tables(tables, _exact(path, monkeypatch))


def test_unreadable_lines_go_to_the_exact_reader(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Lines the fast tiers do not take (a CR, a tab, a lost-event notice) are read and counted exactly."""
    lines = _synthetic_report([(b"init", 463)]).split(b"\n")
    lines[10] = lines[10] + b"\r"
    lines[20] = lines[20].replace(b"irq=13 ", b"irq=13\t")
    lines.insert(30, b"CPU:1 [LOST 17 EVENTS]")
    lines.insert(40, b"garbage line")
    path = tmp_path / "mixed.txt"
    path.write_bytes(b"\n".join(lines))
    tables = read_text(path)
    assert tables.report.unparsed_lines == 1 and tables.report.skipped[0].where == "line 41"
    assert tables.report.lost_events == {"": {1: 17}}
    assert tables.events.height == 300
    _same_tables(tables, _exact(path, monkeypatch))


def test_integer_arrays_read_as_in_tracedat(tmp_path: Path) -> None:
    """``trace-cmd report -R`` prints sys_enter's ``unsigned long args[6]`` as its 48 bytes
    (``args=ARRAY[08, 00, ...]``); the text reader gives the same List(UInt64) as the trace.dat reader."""
    from kvmtrace.ingest.tracedat.reader import read_tracedat

    dat = Path(__file__).parent.parent / "captures" / "x86-raw-syscalls" / "trace.dat"
    text = tmp_path / "report.txt"
    with text.open("wb") as fh:
        subprocess.run(["trace-cmd", "report", "-R", "-i", str(dat)], stdout=fh, stderr=subprocess.DEVNULL, check=True)
    ours, theirs = read_text(text).table("sys_enter"), read_tracedat(dat).table("sys_enter")
    assert ours.schema["args"] == pl.List(pl.UInt64) and ours.height == theirs.height > 5000
    assert ours["args"].equals(theirs["args"]) and ours["id"].equals(theirs["id"])


def test_malformed_arrays_are_null() -> None:
    from kvmtrace.fileformats.formats import FieldFormat
    from kvmtrace.ingest.text.fields import array_values

    f = FieldFormat("insn", "__u8", 16, 4, False, array_len=4)
    u16 = FieldFormat("v", "u16", 16, 4, False, array_len=2)
    texts = pl.Series(["ARRAY[0f, 01, 44, 00]", "ARRAY[]", "ARRAY[zz, 01]", "[01]", None, "ARRAY[01, 02, 03]"])
    assert array_values(texts, f).to_list() == [[15, 1, 68, 0], [], None, None, None, [1, 2, 3]]
    assert array_values(texts, u16).to_list() == [[0x010F, 0x0044], [], None, None, None, None]
