"""The event tables every reader produces: one common table in time order plus one typed table per event.

Contract (documented in docs/tables.md):

``EventTables.events`` (the common table), one row per event, in global time order
(``ts``, then ``cpu``, then position in that CPU's stream):

=========  ===========  ==========================================================
column     dtype        meaning
=========  ===========  ==========================================================
idx        UInt32       row number in this table; the join key of the typed tables
ts         Int64        timestamp in ns (after OFFSET / TSC2NSEC / TIME_SHIFT)
cpu        Int32        CPU the event was recorded on
pid        Int32        common_pid
comm       Categorical  task name from saved cmdlines (``<idle>`` for 0, ``<...>`` unknown)
event      Categorical  event name (``sched_switch``); ``system`` in ``EventTables.formats``
buffer     Categorical  ftrace instance ("" for the top-level buffer)
flags      UInt8        common_flags (irqs-off, need-resched, hardirq, softirq bits)
preempt    UInt8        common_preempt_count
=========  ===========  ==========================================================

``EventTables.by_event[name]``: ``idx``, ``ts``, ``cpu``, ``pid`` then every payload field of
the event's format (where the event has a field named ``cpu`` or ``pid`` itself, e.g.
``sched_wakeup.pid`` or ``ipi_send_cpu.cpu``, the key column is called ``common_cpu`` /
``common_pid`` in that table: see ``typed_key_names``), typed from the format file: integers
by size and signedness, ``bool`` as Boolean, char arrays and ``__data_loc char[]`` as String,
other arrays as List of integers.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import polars as pl

from kvmtrace.fileformats.formats import EventFormat
from kvmtrace.ingest.dtypes import field_dtype
from kvmtrace.ingest.readreport import ReadReport, SkippedRegion

COMMON_SCHEMA: dict[str, pl.DataType] = {
    "idx": pl.UInt32(),
    "ts": pl.Int64(),
    "cpu": pl.Int32(),
    "pid": pl.Int32(),
    "comm": pl.Categorical(),
    "event": pl.Categorical(),
    "buffer": pl.Categorical(),
    "flags": pl.UInt8(),
    "preempt": pl.UInt8(),
}
TYPED_KEY_COLUMNS = ("idx", "ts", "cpu", "pid")
MARKER_EVENTS = ("print", "tracing_mark_write")


def typed_key_names(field_names: list[str] | tuple[str, ...]) -> dict[str, str]:
    """Key column -> its name in a typed table whose payload fields are ``field_names``."""
    names = set(field_names)
    return {k: (f"common_{k}" if k in names else k) for k in TYPED_KEY_COLUMNS}


def pid_column(table: pl.DataFrame) -> str:
    """The column of a typed table holding the event's pid: ``common_pid`` when a payload field is
    itself named ``pid`` (e.g. sched_wakeup), else ``pid``."""
    return "common_pid" if "common_pid" in table.columns else "pid"


def cpu_column(table: pl.DataFrame) -> str:
    """The column of a typed table holding the CPU that recorded the event (``common_cpu`` when a
    payload field is named ``cpu``, as in sched_wakeup's target CPU)."""
    return "common_cpu" if "common_cpu" in table.columns else "cpu"


def known_format(name: str) -> EventFormat | None:
    """The newest bundled format of an event (kvmtrace/data/formats), if kvmtrace knows the event."""
    from kvmtrace.ingest.text.fields import bundled_catalog  # the catalog parses files: only when asked

    candidates = bundled_catalog().candidates(name)
    return candidates[0] if candidates else None


# The fields kvmtrace's models and analyses read from each event (kvmtrace/model, kvmtrace/analysis),
# among those every bundled format of the event has, and their kind. An event whose table lacks one,
# or holds it as another kind (a damaged or foreign format), counts as missing (EventTables.has):
# the analyses then say which events they need instead of failing on a column.
MODEL_FIELDS: dict[str, dict[str, str]] = {
    "hrtimer_expire_entry": {"hrtimer": "int", "now": "int"},
    "hrtimer_expire_exit": {"hrtimer": "int"},
    "hrtimer_start": {"expires": "int", "hrtimer": "int"},
    "irq_handler_entry": {"irq": "int", "name": "text"},
    "irq_handler_exit": {"irq": "int", "ret": "int"},
    "kvm_access_fault": {"ipa": "int"},
    "kvm_guest_fault": {"hsr": "int", "ipa": "int"},
    "kvm_irq_line": {"irq_num": "int", "level": "int", "type": "int", "vcpu_idx": "int"},
    "kvm_mmio": {"gpa": "int", "len": "int", "type": "int"},
    "kvm_timer_save_state": {"ctl": "int", "cval": "int", "timer_idx": "int"},
    "kvm_timer_update_irq": {"irq": "int", "level": "int", "vcpu_id": "int"},
    "kvm_userspace_exit": {"errno": "int", "reason": "int"},
    "kvm_vcpu_wakeup": {"ns": "int", "waited": "int"},
    "sched_switch": {"next_comm": "text", "next_pid": "int", "next_prio": "int", "prev_comm": "text",
                     "prev_pid": "int", "prev_prio": "int", "prev_state": "int"},
    "sys_exit": {"id": "int"},
    "sched_wakeup": {"comm": "text", "pid": "int", "target_cpu": "int"},
    "sched_waking": {"comm": "text", "pid": "int", "target_cpu": "int"},
    "softirq_entry": {"vec": "int"},
    "softirq_exit": {"vec": "int"},
    "vgic_update_irq_pending": {"irq": "int", "level": "int", "vcpu_id": "int"},
}


INT32 = (-(1 << 31), (1 << 31) - 1)
# Integer fields the analyses read as Int32 (irq numbers, levels, exit codes): a value outside that
# range can only come from a damaged record; it is read as null (and reported), never a cast error.
MODEL_RANGES: dict[str, dict[str, tuple[int, int]]] = {
    "kvm_timer_update_irq": {"irq": INT32, "level": INT32},
    "vgic_update_irq_pending": {"irq": INT32, "level": INT32},
    "kvm_irq_line": {"irq_num": INT32},
    "kvm_exit": {"ret": INT32, "esr_ec": INT32},
}


def _within_ranges(name: str, table: pl.DataFrame, report: ReadReport) -> pl.DataFrame:
    """``table`` with the values of MODEL_RANGES fields outside their range as null (reported)."""
    for field_name, (low, high) in MODEL_RANGES.get(name, {}).items():
        if field_name not in table.columns or not table.schema[field_name].is_integer():
            continue
        column = pl.col(field_name)
        outside = int(table.select(((column < low) | (column > high)).sum()).item() or 0)
        if outside:
            table = table.with_columns(pl.when((column >= low) & (column <= high)).then(column).alias(field_name))
            report.skipped.append(SkippedRegion(f"event {name}", f"{outside} values of field {field_name} outside "
                                                f"{low}..{high} (damaged records): read as null", 0))
    return table


def _known_dtypes(name: str, table: pl.DataFrame, own: EventFormat | None, report: ReadReport) -> pl.DataFrame:
    """MODEL_FIELDS integers whose size in the capture's format is not 1, 2, 4 or 8 (damaged: read as
    0, in a 64-bit column the analyses' joins refuse) in the dtype of the event's bundled format."""
    odd = [f.name for f in (own.fields if own is not None else []) if f.size not in (1, 2, 4, 8)]
    fmt = known_format(name) if any(f in MODEL_FIELDS.get(name, {}) for f in odd) else None
    for field_name in odd:
        known = fmt.field(field_name) if fmt is not None and field_name in MODEL_FIELDS[name] else None
        if known is None or field_name not in table.columns:
            continue
        dtype = field_dtype(known)
        if table.schema[field_name] != dtype and dtype.is_integer() and table.schema[field_name].is_integer():
            before = table[field_name].null_count()
            table = table.with_columns(pl.col(field_name).cast(dtype, strict=False))
            lost = table[field_name].null_count() - before
            report.skipped.append(SkippedRegion(f"event {name}", f"field {field_name} read as {dtype}, the type "
                                                f"kvmtrace knows it by ({lost} values did not fit: null)", 0))
    return table


def _kind(dtype: pl.DataType) -> str:
    if dtype == pl.String or dtype == pl.Categorical:
        return "text"
    if isinstance(dtype, pl.List):
        return "list"
    return "int" if dtype.is_integer() or dtype == pl.Boolean else str(dtype)


def _field_problems(name: str, table: pl.DataFrame) -> list[str]:
    """How a typed table differs from what the models read of its event (MODEL_FIELDS)."""
    problems = []
    for field_name, kind in MODEL_FIELDS.get(name, {}).items():
        if field_name not in table.columns:
            problems.append(f"has no field {field_name!r}")
        elif _kind(table.schema[field_name]) != kind:
            problems.append(f"gives field {field_name!r} as {_kind(table.schema[field_name])}, not {kind}")
    return problems


@dataclass
class CaptureMeta:
    """Facts about the input file itself."""

    path: str
    kind: str  # "trace.dat" or "text"
    version: str = ""  # "6", "7", or the text flavour ("report -R -t", "kernel trace")
    compression: str = "none"
    endian: str = "little"
    long_size: int | None = None
    page_size: int | None = None
    clock: str | None = None
    cpus: int | None = None
    uname: str | None = None
    tracer_version: str | None = None
    buffers: list[str] = field(default_factory=list)
    options: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class EventTables:
    """A capture's events as polars tables. See the module docstring for the columns."""

    events: pl.DataFrame
    by_event: dict[str, pl.DataFrame]
    formats: dict[str, EventFormat]
    meta: CaptureMeta
    report: ReadReport
    cmdlines: dict[int, str] = field(default_factory=dict)
    _conformance: dict[str, list[str]] = field(default_factory=dict, repr=False, compare=False)

    def at(self, idx: pl.Series | pl.Expr, column: str) -> pl.Expr:
        """``column`` of the common table at the rows ``idx`` (idx is the row number: a gather, not a join)."""
        values = self.events.get_column(column)
        idx_expr = pl.lit(idx) if isinstance(idx, pl.Series) else idx
        gathered = pl.lit(values).gather(idx_expr)
        # categories become strings after the gather: casting the whole column costs a string per event
        return gathered.cast(pl.String) if values.dtype == pl.Categorical else gathered

    def has(self, name: str) -> bool:
        return name in self.by_event and self.by_event[name].height > 0 and not self.nonconforming(name)

    def table(self, name: str) -> pl.DataFrame:
        """The typed table of one event; an empty, correctly typed frame when the capture has none, or
        when its format lacks (or retypes) a field kvmtrace knows the event by (``nonconforming``)."""
        if name in self.by_event and not self.nonconforming(name):
            return self.by_event[name]
        fmt = self.formats.get(name)
        if fmt is None or self.nonconforming(name):
            fmt = known_format(name) or fmt
        fields = fmt.payload_fields if fmt is not None else []
        keys = typed_key_names([f.name for f in fields])
        schema: dict[str, pl.DataType] = {keys[k]: COMMON_SCHEMA[k] for k in TYPED_KEY_COLUMNS}
        for f in fields:
            schema[f.name] = field_dtype(f)
        return pl.DataFrame(schema=schema)

    def nonconforming(self, name: str) -> list[str]:
        """The fields kvmtrace reads from event ``name`` that its table lacks or holds as another kind
        (a damaged or foreign format): such an event counts as missing for the analyses, which then
        say so (MissingEventsError) instead of failing on a column. Values of such fields outside
        the range the analyses read them in (MODEL_RANGES: damaged records) become null. Both are
        reported once in ``report``."""
        if name not in self._conformance:
            table = self.by_event.get(name)
            problems = [] if table is None else _field_problems(name, table)
            self._conformance[name] = problems
            if problems and table is not None:
                self.report.skipped.append(SkippedRegion(
                    f"event {name}", f"its format {'; '.join(problems)}: the event is treated as missing",
                    table.height))
            elif table is not None:
                table = _known_dtypes(name, table, self.formats.get(name), self.report)
                self.by_event[name] = _within_ranges(name, table, self.report)
        return self._conformance[name]

    def cut(self, start_ns: int | None, end_ns: int | None) -> EventTables:
        """The events with ``start_ns <= ts <= end_ns`` (None: open), renumbered from idx 0: what a full
        read gives, filtered by time. The common table is in time order, so they are one run of rows."""
        ts = self.events["ts"]
        first = int(ts.search_sorted(start_ns, side="left")) if start_ns is not None else 0
        last = int(ts.search_sorted(end_ns, side="right")) if end_ns is not None else ts.len()
        if first == 0 and last == ts.len():
            return replace(self, report=self.report.within(start_ns, end_ns, self.events))
        events = self.events.slice(first, max(0, last - first)).with_columns(
            pl.int_range(pl.len(), dtype=pl.UInt32).alias("idx"))
        by_event = {}
        for name, table in self.by_event.items():
            idx = "common_idx" if "common_idx" in table.columns else "idx"
            kept = table.filter(pl.col(idx).is_between(first, last - 1))
            if kept.height:  # as a read makes tables only for the events it met
                by_event[name] = kept.with_columns((pl.col(idx) - first).cast(pl.UInt32))
        return EventTables(events=events, by_event=by_event, formats=self.formats, meta=self.meta,
                           report=self.report.within(start_ns, end_ns, events), cmdlines=self.cmdlines)

    def markers(self) -> pl.DataFrame:
        """Marker events (``print`` / ``tracing_mark_write``): idx, ts, cpu, pid, comm, text."""
        frames = []
        for name in MARKER_EVENTS:
            if name not in self.by_event:
                continue
            t = self.by_event[name]
            text_col = next((c for c in ("buf", "str") if c in t.columns and t.schema[c] == pl.String), None)
            if text_col is None:  # a format without its text (damaged): no markers from it
                continue
            frames.append(t.select("idx", "ts", "cpu", "pid",
                                   pl.col(text_col).str.strip_chars_end("\r\n").alias("text")))
        if not frames:
            return pl.DataFrame(schema={"idx": pl.UInt32(), "ts": pl.Int64(), "cpu": pl.Int32(),
                                        "pid": pl.Int32(), "comm": pl.String(), "text": pl.String()})
        m = pl.concat(frames).sort("ts", "idx")
        return m.with_columns(self.at(pl.col("idx"), "comm").alias("comm")).select(
            "idx", "ts", "cpu", "pid", "comm", "text")
