"""Who held a CPU: exclusive ownership segments per CPU, and the blockers of a vCPU's wait.

A CPU's time is cut at every sched_switch, hard-IRQ entry/exit and softirq entry/exit. Each
segment has one owner: the hard-IRQ handler running (``irq:<name>``), else the softirq
(``softirq:<VEC>``), else the current task. Interrupt time is therefore never charged to the
task that happened to be current. The idle task (pid 0) is never a blocker (docs/stages.md).
"""

from __future__ import annotations

import polars as pl

from kvmtrace.ingest.tables import EventTables

SOFTIRQ_NAMES = ("HI", "TIMER", "NET_TX", "NET_RX", "BLOCK", "IRQ_POLL", "TASKLET", "SCHED", "HRTIMER", "RCU")
SEGMENT_SCHEMA = {"cpu": pl.Int32(), "seg_idx": pl.UInt32(), "start_ns": pl.Int64(), "end_ns": pl.Int64(),
                  "owner": pl.String(), "owner_pid": pl.Int32()}


BOUNDARY_SCHEMA = {"cpu": pl.Int32(), "idx": pl.UInt32(), "ts": pl.Int64(), "task_pid": pl.Int32(),
                   "task": pl.String(), "hard": pl.String(), "soft": pl.String(), "stall": pl.Boolean(),
                   "key": pl.Int64()}


def _stall_boundaries(t: EventTables, stalls: pl.DataFrame) -> pl.DataFrame:
    """On every CPU, a boundary where each stall starts (after its last event) and ends (before the next)."""
    cpus = t.events["cpu"].unique().sort()
    edges = pl.concat([
        stalls.select(pl.col("start_idx").alias("idx"), pl.col("start_ns").alias("ts"), pl.lit(True).alias("stall"),
                      (pl.col("start_idx").cast(pl.Int64) * 2 + 1).alias("sub")),
        stalls.select(pl.col("end_idx").alias("idx"), pl.col("end_ns").alias("ts"), pl.lit(False).alias("stall"),
                      (pl.col("end_idx").cast(pl.Int64) * 2 - 1).alias("sub")),
    ])
    return (edges.join(pl.DataFrame({"cpu": cpus}), how="cross")
            .select("cpu", "idx", "ts", pl.lit(None, pl.Int32).alias("task_pid"), pl.lit(None, pl.String).alias("task"),
                    pl.lit(None, pl.String).alias("hard"), pl.lit(None, pl.String).alias("soft"), "stall",
                    (pl.col("cpu").cast(pl.Int64) * (1 << 34) + pl.col("sub")).alias("key"))
            .cast(BOUNDARY_SCHEMA))  # type: ignore[arg-type]


def _boundaries(t: EventTables, stalls: pl.DataFrame | None = None) -> pl.DataFrame:
    parts = []
    cols = ("cpu", "idx", "ts")
    if t.has("sched_switch"):
        parts.append(t.table("sched_switch").select(
            *cols, pl.col("next_pid").alias("task_pid"), pl.col("next_comm").alias("task"),
            pl.lit(None, pl.String).alias("hard"), pl.lit(None, pl.String).alias("soft")))
    if t.has("irq_handler_entry"):
        parts.append(t.table("irq_handler_entry").select(
            *cols, pl.lit(None, pl.Int32).alias("task_pid"), pl.lit(None, pl.String).alias("task"),
            ("irq:" + pl.col("name")).alias("hard"), pl.lit(None, pl.String).alias("soft")))
    if t.has("irq_handler_exit"):
        parts.append(t.table("irq_handler_exit").select(
            *cols, pl.lit(None, pl.Int32).alias("task_pid"), pl.lit(None, pl.String).alias("task"),
            pl.lit("").alias("hard"), pl.lit(None, pl.String).alias("soft")))
    names = pl.Series(SOFTIRQ_NAMES)
    for name, entering in (("softirq_entry", True), ("softirq_exit", False)):
        if t.has(name):
            soft = ("softirq:" + pl.col("vec").cast(pl.Int64).replace_strict(
                list(range(len(names))), names.to_list(), default="?")) if entering else pl.lit("")
            parts.append(t.table(name).select(
                *cols, pl.lit(None, pl.Int32).alias("task_pid"), pl.lit(None, pl.String).alias("task"),
                pl.lit(None, pl.String).alias("hard"), soft.alias("soft")))
    if not parts:
        return pl.DataFrame(schema=BOUNDARY_SCHEMA)
    # one integer sort key (cpu, idx): much cheaper than a two-column sort with string payloads
    key = pl.col("cpu").cast(pl.Int64) * (1 << 34) + pl.col("idx").cast(pl.Int64) * 2
    events = pl.concat(parts, how="vertical_relaxed").with_columns(
        pl.lit(None, pl.Boolean).alias("stall"), key.alias("key"))
    events = events.with_columns(t.at(pl.col("idx"), "pid").alias("ev_pid"),
                                 t.at(pl.col("idx"), "comm").alias("ev_comm"))
    # outside a switch, the task is the event's own current task (common_pid)
    events = events.with_columns(pl.coalesce("task_pid", "ev_pid").alias("task_pid"),
                                 pl.coalesce("task", "ev_comm").alias("task")).drop("ev_pid", "ev_comm")
    if stalls is not None and stalls.height:
        events = pl.concat([events.cast(BOUNDARY_SCHEMA), _stall_boundaries(t, stalls)])  # type: ignore[arg-type]
    return events.cast(BOUNDARY_SCHEMA).sort("key")  # type: ignore[arg-type]


def _fill_within_cpu(name: str) -> pl.Expr:
    """Forward fill on rows sorted by (cpu, idx), never carrying a value from one CPU to the next."""
    row = pl.int_range(pl.len())
    last_set = pl.when(pl.col(name).is_not_null()).then(row).forward_fill()
    filled = pl.col(name).forward_fill()
    return pl.when(pl.col("cpu").gather(last_set.fill_null(0)) == pl.col("cpu")).then(filled).alias(name)


def cpu_segments(t: EventTables, stalls: pl.DataFrame | None = None) -> pl.DataFrame:
    """Per CPU, consecutive segments with one owner: cpu, seg_idx (start event), start_ns, end_ns, owner, owner_pid.

    With ``stalls`` (:func:`kvmtrace.model.stalls.stalls`), every CPU's time inside a stall belongs
    to the owner ``stall`` (pid null)."""
    b = _boundaries(t, stalls)
    if b.height == 0:
        return pl.DataFrame(schema=SEGMENT_SCHEMA)
    last_ts = int(t.events["ts"][-1])
    seg = b.with_columns(
        _fill_within_cpu("hard"), _fill_within_cpu("soft"), _fill_within_cpu("stall"),
        _fill_within_cpu("task"), _fill_within_cpu("task_pid"),
        pl.when(pl.col("cpu").shift(-1) == pl.col("cpu")).then(pl.col("ts").shift(-1))
          .otherwise(pl.lit(last_ts)).alias("end_ns"),
    ).with_columns(
        pl.when(pl.col("stall").fill_null(False)).then(pl.lit("stall"))
          .when(pl.col("hard").fill_null("") != "").then(pl.col("hard"))
          .when(pl.col("soft").fill_null("") != "").then(pl.col("soft"))
          .otherwise(pl.col("task")).alias("owner"),
        pl.when(pl.col("stall").fill_null(False)).then(None)
          .when(pl.col("hard").fill_null("") != "").then(None)
          .when(pl.col("soft").fill_null("") != "").then(None)
          .otherwise(pl.col("task_pid")).alias("owner_pid"),
    )
    return seg.select("cpu", pl.col("idx").alias("seg_idx"), pl.col("ts").alias("start_ns"), "end_ns",
                      "owner", "owner_pid").cast(SEGMENT_SCHEMA)  # type: ignore[arg-type]


def owners_during(segments: pl.DataFrame, cpu: int, start_ns: int, end_ns: int) -> pl.DataFrame:
    """Who owned ``cpu`` between two times (idle included): owner, owner_pid, share_ns, longest first."""
    seg = segments.filter(pl.col("cpu") == cpu, pl.col("end_ns") > start_ns, pl.col("start_ns") < end_ns)
    overlap = (pl.min_horizontal(pl.col("end_ns"), pl.lit(end_ns))
               - pl.max_horizontal(pl.col("start_ns"), pl.lit(start_ns)))
    return (seg.with_columns(overlap.alias("share_ns")).filter(pl.col("share_ns") > 0)
               .group_by("owner", "owner_pid").agg(pl.col("share_ns").sum())
               .sort(["share_ns", "owner"], descending=[True, False]))


def wait_shares(waits: pl.DataFrame, segments: pl.DataFrame) -> pl.DataFrame:
    """Owner shares of each wait window.

    ``waits``: key, cpu, start_idx, end_idx, start_ns, end_ns. Returns key, owner, owner_pid, share_ns
    (idle excluded), longest first within each key.
    """
    seg = segments.with_row_index("seg_no")
    first = waits.sort("start_idx").join_asof(
        seg.select("cpu", "seg_idx", pl.col("seg_no").alias("k0")), left_on="start_idx", right_on="seg_idx",
        by="cpu", strategy="backward", check_sortedness=False).drop("seg_idx")
    last = first.sort("end_idx").join_asof(
        seg.select("cpu", "seg_idx", pl.col("seg_no").alias("k1")), left_on="end_idx", right_on="seg_idx",
        by="cpu", strategy="backward", allow_exact_matches=False, check_sortedness=False).drop("seg_idx")
    rows = (last.filter(pl.col("k0").is_not_null(), pl.col("k1").is_not_null())
                .with_columns(pl.int_ranges("k0", pl.col("k1") + 1).alias("seg_no")).explode("seg_no"))
    at = rows["seg_no"]  # seg_no is the segment's row number: gather instead of joining
    rows = rows.with_columns(seg["start_ns"].gather(at).alias("s0"), seg["end_ns"].gather(at).alias("s1"),
                             seg["owner"].gather(at).alias("owner"), seg["owner_pid"].gather(at).alias("owner_pid"))
    overlap = pl.min_horizontal("s1", "end_ns") - pl.max_horizontal("s0", "start_ns")
    return (rows.with_columns(overlap.alias("share_ns"))
                .filter(pl.col("share_ns") > 0, pl.col("owner_pid").fill_null(-1) != 0)
                .group_by("key", "owner", "owner_pid").agg(pl.col("share_ns").sum())
                .sort(["key", "share_ns", "owner"], descending=[False, True, False]))


def sorted_by(df: pl.DataFrame, outer: str, inner: str) -> pl.DataFrame:
    """``df`` by ``outer`` then ``inner``: as it is when already so (models make their frames in that
    order), which costs one pass instead of a sort of every column."""
    outer_step = pl.col(outer).diff()
    steps_up = (outer_step > 0) | ((outer_step == 0) & (pl.col(inner).diff() >= 0))
    in_order = steps_up.slice(1).fill_null(False).all()  # a null anywhere: sorted the usual way
    return df if df.select(in_order).item() else df.sort(outer, inner)


def span_shares(spans: pl.DataFrame, segments: pl.DataFrame) -> pl.DataFrame:
    """Who owned each span's CPU, by time: ``spans`` has key, cpu, start_ns, end_ns (other columns are
    kept); returns one row per (span, owner segment) with owner, owner_pid and share_ns > 0."""
    seg = sorted_by(segments, "cpu", "start_ns").with_row_index("seg_no")
    keys = seg.select("cpu", "start_ns", "seg_no")
    s = spans.filter(pl.col("end_ns") > pl.col("start_ns"))
    s = s.sort("start_ns").join_asof(keys.rename({"start_ns": "s_at", "seg_no": "k0"}), left_on="start_ns",
                                     right_on="s_at", by="cpu", strategy="backward", check_sortedness=False)
    s = s.sort("end_ns").join_asof(keys.rename({"start_ns": "e_at", "seg_no": "k1"}), left_on="end_ns",
                                   right_on="e_at", by="cpu", strategy="backward", allow_exact_matches=False,
                                   check_sortedness=False)
    rows = (s.filter(pl.col("k0").is_not_null(), pl.col("k1").is_not_null())
            .drop("s_at", "e_at").with_columns(pl.int_ranges("k0", pl.col("k1") + 1).alias("seg_no"))
            .drop("k0", "k1").explode("seg_no"))
    at = rows["seg_no"]
    rows = rows.with_columns(seg["start_ns"].gather(at).alias("s0"), seg["end_ns"].gather(at).alias("s1"),
                             seg["owner"].gather(at).alias("owner"), seg["owner_pid"].gather(at).alias("owner_pid"))
    share = pl.min_horizontal("s1", "end_ns") - pl.max_horizontal("s0", "start_ns")
    return rows.with_columns(share.alias("share_ns")).filter(pl.col("share_ns") > 0).drop("seg_no", "s0", "s1")
