"""One timeline of a capture for trace viewers: tracks, slices, instants, counters and flows.

Built from a :class:`~kvmtrace.analysis.latency.LatencyAnalysis` (vCPU states, CPU ownership
segments, interrupts and their stages, causes and verdicts), the exit and stage-2 fault tables,
phases and markers, and optionally a guest-side capture put on the host's clock
(:mod:`kvmtrace.model.align`). ``perfetto.py`` writes it as a native Perfetto trace and
``chrome_json.py`` as Chrome trace-event JSON: both writers take the same :class:`Timeline`, so a
track means the same thing in both (docs/export.md).

Tracks form a two-level tree: groups (``CPUs``, one per vCPU thread, ``Phases and markers``,
``Guest``) holding slice, instant and counter tracks. Interrupts of one vCPU that overlap in time
go to separate lanes: tracks of the same name and ``merge_key``, which Perfetto draws as one.
Intervals are clipped to the exported range; intervals of zero length and idle CPU time are not
drawn (an idle CPU is a gap on its track).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import polars as pl

from kvmtrace.analysis.latency import LatencyAnalysis
from kvmtrace.analysis.verdicts import dominant_stage, verdict
from kvmtrace.capture import Capture
from kvmtrace.model.exits import exit_table
from kvmtrace.model.faults import fault_table
from kvmtrace.model.interrupts import STAGES
from kvmtrace.render.analyze import STAGE_SPAN

RATE_BINS = 200  # counter points per track over the exported range, at most
INTERRUPT_ARGS = ("irq_no", "irq", "kind", "path", "cpu", "best_latency_ns", "latency_basis", "latency_ns",
                  "total_ns", "timer_ns", "deadline_ns", "deadline_source", "blocker_comm", "blocker_pid",
                  "blocker_ns", "cause_kind", "cause", "cause_pid", "cause_ns", "dominant_stage", "verdict")
EXIT_ARGS = ("exit_class", "cpu", "ret", "esr_ec", "handling_ns", "guest_run_ns", "userspace_reason", "mmio_gpa",
             "mmio_reads", "mmio_writes", "sysreg_traps", "guest_faults", "wakeup", "phase")
FAULT_ARGS = ("kind", "ipa", "esr", "ec_name", "level", "write", "s1ptw", "isv", "mmio", "region", "handling_ns",
              "phase")


@dataclass(frozen=True)
class Track:
    """A track: ``kind`` is ``group``, ``slices``, ``instants`` or ``counter``; ``rank`` orders siblings."""

    uid: int
    name: str
    kind: str
    parent: int | None = None
    rank: int = 0
    merge_key: str | None = None  # lanes of one logical track share it (and their name)
    unit: str | None = None       # counters
    description: str = ""


@dataclass
class Layer:
    """Slices (columns track, start_ns, end_ns, depth, name, args) or instants (track, ts, name, args) of one
    category. ``async_id``: the column that identifies an async event (interrupts: ``irq_no``)."""

    category: str
    frame: pl.DataFrame
    args: tuple[str, ...] = ()
    async_id: str | None = None


@dataclass
class Timeline:
    """Everything a trace viewer draws, on the trace clock (ns)."""

    start_ns: int
    end_ns: int
    tracks: list[Track] = field(default_factory=list)
    slices: list[Layer] = field(default_factory=list)
    instants: list[Layer] = field(default_factory=list)
    counters: pl.DataFrame = field(default_factory=lambda: pl.DataFrame(
        schema={"track": pl.UInt64(), "ts": pl.Int64(), "value": pl.Float64()}))
    flows: pl.DataFrame = field(default_factory=lambda: pl.DataFrame(
        schema={"flow_id": pl.UInt64(), "track": pl.UInt64(), "ts": pl.Int64(), "step": pl.Int8()}))
    notes: list[str] = field(default_factory=list)

    def add_track(self, name: str, kind: str, parent: int | None = None, **kw: Any) -> int:
        uid = len(self.tracks) + 1
        rank = sum(1 for t in self.tracks if t.parent == parent)
        self.tracks.append(Track(uid, name, kind, parent, rank, **kw))
        return uid

    def track_named(self, name: str, parent: int | None = None) -> Track:
        return next(t for t in self.tracks if t.name == name and t.parent == parent)

    def children(self, parent: int | None) -> list[Track]:
        return [t for t in self.tracks if t.parent == parent]


FLOW_STEPS = ("host IRQ", "switch-in", "guest entry")  # step 0 starts a flow, 1 continues it, 2 ends it


def clip(df: pl.DataFrame, lo: int, hi: int) -> pl.DataFrame:
    """Intervals (start_ns, end_ns) overlapping [lo, hi], cut to it; empty ones dropped."""
    return (df.filter(pl.col("end_ns") > lo, pl.col("start_ns") < hi)
            .with_columns(pl.col("start_ns").clip(lower_bound=lo), pl.col("end_ns").clip(upper_bound=hi))
            .filter(pl.col("end_ns") > pl.col("start_ns")))


def lanes(starts: list[int], ends: list[int]) -> list[int]:
    """Greedy interval partitioning of intervals sorted by start: each takes the lowest lane free at its start."""
    free_at: list[int] = []
    out = []
    for s, e in zip(starts, ends, strict=True):
        lane = next((i for i, f in enumerate(free_at) if f <= s), len(free_at))
        if lane == len(free_at):
            free_at.append(e)
        else:
            free_at[lane] = e
        out.append(lane)
    return out


def rate_bin_ns(span_ns: int, bins: int = RATE_BINS) -> int:
    """A round bin width (1, 2 or 5 x 10^k ns, at least 1 ms) giving at most ``bins`` bins over ``span_ns``."""
    want = max(1_000_000, -(-span_ns // bins))
    step = 1
    while True:
        for m in (1, 2, 5):
            if m * step >= want:
                return m * step
        step *= 10


def rates(ts: pl.DataFrame, key: str, lo: int, hi: int) -> pl.DataFrame:
    """Events per second in round bins over [lo, hi] per ``key``: key, ts (bin start), value; empty bins 0."""
    width = rate_bin_ns(hi - lo)
    n = (hi - lo) // width + 1
    counts = (ts.filter(pl.col("ts").is_between(lo, hi))
              .group_by(key, ((pl.col("ts") - lo) // width).alias("bin")).len())
    grid = (ts.select(key).unique().join(pl.DataFrame({"bin": pl.int_range(0, n, eager=True)}), how="cross"))
    return (grid.join(counts, on=[key, "bin"], how="left")
            .select(key, (pl.col("bin") * width + lo).alias("ts"),
                    (pl.col("len").fill_null(0) / (width / 1e9)).cast(pl.Float64).alias("value"))
            .sort(key, "ts"))


def causes_by_interrupt(shares: pl.DataFrame) -> dict[int, list[dict[str, Any]]]:
    """Every interrupt's causes, largest first, grouped by cause and CPU: ``LatencyAnalysis.causes`` for all
    interrupts at once (calling it per interrupt filters the whole share table each time)."""
    merged = (shares.sort(["irq_no", "share_ns"], descending=[False, True])
              .group_by("irq_no", "cause_kind", "cause", "cause_pid", "cpu", maintain_order=True)
              .agg(pl.col("state").first(), pl.col("share_ns").sum())
              .sort(["irq_no", "share_ns", "cause"], descending=[False, True, False]))
    out: dict[int, list[dict[str, Any]]] = {}
    for row in merged.iter_rows(named=True):
        out.setdefault(row.pop("irq_no"), []).append(row)
    return out


def interrupt_frame(a: LatencyAnalysis) -> pl.DataFrame:
    """The per-interrupt table with its span (start_ns: deadline or host IRQ, end_ns: kvm_entry), a name, the
    dominant stage and the verdict."""
    tab = a.table.with_columns(
        pl.min_horizontal(pl.coalesce("deadline_ns", "t_ns"), "t_ns").alias("start_ns"),
        pl.col("entry_at_ns").alias("end_ns"),
        pl.format("irq {} {}", "irq", "path").alias("name"))
    causes = causes_by_interrupt(a.shares)
    rows = tab.to_dicts()
    return tab.with_columns(
        pl.Series("dominant_stage", [dominant_stage(r) for r in rows], pl.String),
        pl.Series("verdict", [verdict(r, causes.get(r["irq_no"], []), a.throttling) for r in rows], pl.String))


def stage_frame(irqs: pl.DataFrame) -> pl.DataFrame:
    """One row per stage of each interrupt: irq_no, name (stage), start_ns, end_ns, span. ``timer`` runs from
    the deadline to the host IRQ (only when the deadline came first); the host stages follow each other from
    the host IRQ to kvm_entry."""
    host = [s for s in STAGES if s != "timer"]
    ends = [pl.col("t_ns") + pl.sum_horizontal([pl.col(f"{s}_ns").fill_null(0) for s in host[:i + 1]])
            for i in range(len(host))]
    parts = [irqs.filter(pl.col("timer_ns") > 0).select(
        "irq_no", pl.lit("timer").alias("name"), pl.col("deadline_ns").alias("start_ns"),
        pl.col("t_ns").alias("end_ns"))]
    for i, s in enumerate(host):
        parts.append(irqs.filter(pl.col(f"{s}_ns").is_not_null()).select(
            "irq_no", pl.lit(s).alias("name"), (ends[i] - pl.col(f"{s}_ns")).alias("start_ns"),
            ends[i].alias("end_ns")))
    spans = pl.DataFrame({"name": list(STAGE_SPAN), "span": list(STAGE_SPAN.values())})
    return (pl.concat(parts).filter(pl.col("end_ns") > pl.col("start_ns"))
            .join(spans, on="name", how="left").sort("irq_no", "start_ns"))


def export_range(a: LatencyAnalysis, irqs: pl.DataFrame) -> tuple[int, int]:
    """The analysis window, widened to hold every interrupt of it whole."""
    lo, hi = a.window.start_ns, a.window.end_ns
    if irqs.height:
        lo = min(lo, int(irqs["start_ns"].min()))  # type: ignore[arg-type]
        hi = max(hi, int(irqs["end_ns"].max()))  # type: ignore[arg-type]
    return lo, hi


def build_timeline(a: LatencyAnalysis, guest: Capture | None = None) -> Timeline:
    """The timeline of one analysis window (module docstring)."""
    irqs = interrupt_frame(a)
    lo, hi = export_range(a, irqs)
    tl = Timeline(lo, hi)
    cpu_tracks, cpu_layer = _cpus(tl, a)
    vcpu_tracks, state_layer = _vcpus(tl, a, irqs)
    _flows(tl, irqs, (cpu_tracks, cpu_layer), (vcpu_tracks, state_layer))
    _exits_and_faults(tl, a, vcpu_tracks)
    _phases_and_markers(tl, a.capture)
    if guest is not None:
        _guest(tl, a, guest)
    return tl


def _cpus(tl: Timeline, a: LatencyAnalysis) -> tuple[dict[int, int], Layer]:
    """A track per host CPU with who owned it (segments), idle left out: cpu -> track uid, and the layer."""
    group = tl.add_track("CPUs", "group", description="who ran on each host CPU: task, hard-IRQ or softirq handler")
    cpus = sorted(a.segments["cpu"].unique().to_list())
    tracks = {cpu: tl.add_track(f"CPU {cpu}", "slices", group) for cpu in cpus}
    seg = clip(a.segments.filter(pl.col("owner_pid").fill_null(-1) != 0), tl.start_ns, tl.end_ns)
    frame = seg.select(_track_of("cpu", tracks), "start_ns", "end_ns", pl.lit(0, pl.Int8).alias("depth"),
                       owner_name().alias("name"), pl.col("owner_pid").alias("pid"),
                       owner_kind(a.vcpus["vcpu_tid"]).alias("owner_kind"))
    layer = Layer("cpu", frame, ("pid", "owner_kind"))
    tl.slices.append(layer)
    return tracks, layer


def owner_kind(vcpus: pl.Series) -> pl.Expr:
    """What owned a CPU segment (``LatencyAnalysis.segments``): idle, stall, irq, softirq, vcpu or task."""
    return (pl.when(pl.col("owner_pid") == 0).then(pl.lit("idle"))
            .when(pl.col("owner") == "stall").then(pl.lit("stall"))
            .when(pl.col("owner").str.starts_with("irq:")).then(pl.lit("irq"))
            .when(pl.col("owner").str.starts_with("softirq:")).then(pl.lit("softirq"))
            .when(pl.col("owner_pid").is_in(vcpus.implode())).then(pl.lit("vcpu")).otherwise(pl.lit("task")))


def owner_name() -> pl.Expr:
    """A segment owner as shown: ``comm (pid)`` for tasks, the handler name for interrupts."""
    return (pl.when(pl.col("owner_pid").is_not_null())
            .then(pl.format("{} ({})", "owner", "owner_pid")).otherwise(pl.col("owner")))


def _track_of(column: str, tracks: dict[int, int]) -> pl.Expr:
    return pl.col(column).replace_strict(tracks, return_dtype=pl.UInt64).alias("track")


@dataclass(frozen=True)
class VcpuTracks:
    """The tracks of one vCPU thread."""

    group: int
    states: int
    exits: int
    faults: int
    exit_rate: int
    fault_rate: int


def _vcpus(tl: Timeline, a: LatencyAnalysis, irqs: pl.DataFrame) -> tuple[dict[int, VcpuTracks], Layer]:
    """Per vCPU thread: its states, its interrupts (in lanes) with their stages, exits, faults and their rates."""
    out: dict[int, VcpuTracks] = {}
    irq_parts, stage_parts = [], []
    stages = stage_frame(irqs)
    for tid, comm in a.vcpus.select("vcpu_tid", "comm").iter_rows():
        group = tl.add_track(f"vCPU {tid} ({comm})", "group",
                             description="a vCPU thread: its states, guest interrupts, exits and stage-2 faults")
        states = tl.add_track("states", "slices", group,
                              description="guest, host_handling, blocked, preempted, waking (docs/stages.md)")
        mine = irqs.filter(pl.col("vcpu_tid") == tid).sort("start_ns", "irq_no")
        lane = lanes(mine["start_ns"].to_list(), mine["end_ns"].to_list())
        lane_tracks = [tl.add_track("interrupts", "slices", group, merge_key=f"vcpu{tid}-interrupts",
                                    description="guest interrupts, deadline (or host IRQ) -> kvm_entry, with stages")
                       for _ in range(max(lane, default=0) + 1)]
        placed = mine.with_columns(pl.Series("track", [lane_tracks[i] for i in lane], pl.UInt64))
        irq_parts.append(placed)
        stage_parts.append(stages.join(placed.select("irq_no", "track"), on="irq_no"))
        out[tid] = VcpuTracks(group, states,
                              tl.add_track("exits", "instants", group, description="kvm_exit, by exit class"),
                              tl.add_track("stage-2 faults", "instants", group,
                                           description="kvm_guest_fault / kvm_access_fault, decoded"),
                              tl.add_track("exits per second", "counter", group, unit="1/s"),
                              tl.add_track("stage-2 faults per second", "counter", group, unit="1/s"))
    st = clip(a.states, tl.start_ns, tl.end_ns)
    state_layer = Layer("vcpu_state", st.select(
        _track_of("vcpu_tid", {t: v.states for t, v in out.items()}), "start_ns", "end_ns",
        pl.lit(0, pl.Int8).alias("depth"), pl.col("state").alias("name"), "cpu"), ("cpu",))
    tl.slices.append(state_layer)
    placed_irqs = pl.concat(irq_parts) if irq_parts else irqs.with_columns(pl.lit(None, pl.UInt64).alias("track"))
    tl.slices.append(Layer("interrupt", placed_irqs.select(
        "track", "start_ns", "end_ns", pl.lit(0, pl.Int8).alias("depth"), "name", *INTERRUPT_ARGS),
        INTERRUPT_ARGS, async_id="irq_no"))
    staged = pl.concat(stage_parts) if stage_parts else stages.with_columns(pl.lit(None, pl.UInt64).alias("track"))
    tl.slices.append(Layer("stage", staged.select("track", "start_ns", "end_ns", pl.lit(1, pl.Int8).alias("depth"),
                                                  "name", "span", "irq_no"), ("span", "irq_no"), async_id="irq_no"))
    return out, state_layer


def _flows(tl: Timeline, irqs: pl.DataFrame, cpus: tuple[dict[int, int], Layer],
           vcpus: tuple[dict[int, VcpuTracks], Layer]) -> None:
    """A flow per interrupt: the host IRQ's slice on its CPU -> the vCPU's switch-in (blocked path) -> its guest
    entry. Each step names the slice it leaves from or arrives at by (track, start)."""
    (cpu_tracks, cpu_layer), (vcpu_tracks, state_layer) = cpus, vcpus
    cpu = cpu_layer.frame.select("track", pl.col("start_ns").alias("s"), pl.col("end_ns").alias("e"))
    states = state_layer.frame.select("track", pl.col("start_ns").alias("s"), pl.col("end_ns").alias("e"))
    ids = irqs.select(pl.col("irq_no").cast(pl.UInt64) + 1, "t_ns", "switch_in_ns", "entry_at_ns",
                      _track_of("irq_cpu", cpu_tracks).alias("cpu_track"),
                      _track_of("vcpu_tid", {t: v.states for t, v in vcpu_tracks.items()}).alias("state_track"))
    steps = []
    for step, (at, track, slices) in enumerate((("t_ns", "cpu_track", cpu), ("switch_in_ns", "state_track", states),
                                               ("entry_at_ns", "state_track", states))):
        want = ids.filter(pl.col(at).is_not_null()).select(
            pl.col("irq_no").alias("flow_id"), pl.col(track).alias("track"), pl.col(at).alias("at"))
        hit = want.sort("at").join_asof(slices.sort("s"), left_on="at", right_on="s", by="track",
                                        strategy="backward", check_sortedness=False)
        steps.append(hit.filter(pl.col("e") > pl.col("at")).select(
            "flow_id", "track", pl.col("s").alias("ts"), pl.lit(step, pl.Int8).alias("step")))
    flows = pl.concat(steps)
    whole = flows.group_by("flow_id").agg(pl.col("step").n_unique().alias("n"), pl.col("step").max().alias("last"))
    keep = whole.filter(pl.col("n") >= 2, pl.col("last") == 2)["flow_id"].implode()
    tl.flows = flows.filter(pl.col("flow_id").is_in(keep)).sort("flow_id", "step").cast(tl.flows.schema)


def _exits_and_faults(tl: Timeline, a: LatencyAnalysis, vcpus: dict[int, VcpuTracks]) -> None:
    cap = a.capture
    lo, hi = tl.start_ns, tl.end_ns
    ex = exit_table(cap.tables, cap.phases).exits.filter(pl.col("t_ns").is_between(lo, hi),
                                                          pl.col("vcpu_tid").is_in(list(vcpus)))
    ex = ex.with_columns(_hex("mmio_gpa"))
    tl.instants.append(Layer("exit", ex.select(
        _track_of("vcpu_tid", {t: v.exits for t, v in vcpus.items()}), pl.col("t_ns").alias("ts"),
        pl.col("exit_class").alias("name"), *EXIT_ARGS), EXIT_ARGS))
    counters = [_rate_track(ex, {t: v.exit_rate for t, v in vcpus.items()}, lo, hi)]
    if cap.tables.has("kvm_guest_fault"):
        memory = cap.manifest.guest_memory if cap.manifest else None
        f = fault_table(cap.tables, cap.phases, memory).faults.filter(
            pl.col("t_ns").is_between(lo, hi), pl.col("vcpu_tid").is_in(list(vcpus)))
        f = f.with_columns(_hex("ipa"), _hex("esr"))
        tl.instants.append(Layer("fault", f.select(
            _track_of("vcpu_tid", {t: v.faults for t, v in vcpus.items()}), pl.col("t_ns").alias("ts"),
            pl.format("{} {}", "kind", "region").alias("name"), *FAULT_ARGS), FAULT_ARGS))
        counters.append(_rate_track(f, {t: v.fault_rate for t, v in vcpus.items()}, lo, hi))
    else:
        tl.notes.append("no kvm_guest_fault events: no stage-2 fault tracks")
    tl.counters = pl.concat(counters)


def _hex(column: str) -> pl.Expr:
    """An unsigned integer column as ``0x...`` text, one nibble per digit."""
    v = pl.col(column).cast(pl.UInt64)
    nibbles = [(v // (16 ** k) % 16).replace_strict(list(range(16)), list("0123456789abcdef"), return_dtype=pl.String)
               for k in reversed(range(16))]
    digits = pl.concat_str(nibbles).str.strip_chars_start("0")
    return (pl.lit("0x") + pl.when(digits == "").then(pl.lit("0")).otherwise(digits)).alias(column)


def _rate_track(events: pl.DataFrame, tracks: dict[int, int], lo: int, hi: int) -> pl.DataFrame:
    ts = events.select("vcpu_tid", pl.col("t_ns").alias("ts"))
    if not ts.height:
        ts = pl.DataFrame({"vcpu_tid": list(tracks), "ts": [lo - 1] * len(tracks)},
                          schema={"vcpu_tid": pl.Int32, "ts": pl.Int64})
    r = rates(ts, "vcpu_tid", lo, hi)
    return r.select(_track_of("vcpu_tid", tracks), "ts", "value")


def _phases_and_markers(tl: Timeline, cap: Capture) -> None:
    group = tl.add_track("Phases and markers", "group", description="phases cut by markers, and the markers")
    ph = clip(cap.phases.filter(pl.col("end_ns").is_not_null()), tl.start_ns, tl.end_ns).sort("start_ns")
    lane = lanes(ph["start_ns"].to_list(), ph["end_ns"].to_list())
    tracks = [tl.add_track("phases", "slices", group, merge_key="phases") for _ in range(max(lane, default=0) + 1)]
    tl.slices.append(Layer("phase", ph.select(
        pl.Series("track", [tracks[i] for i in lane], pl.UInt64), "start_ns", "end_ns",
        pl.lit(0, pl.Int8).alias("depth"), "name", "start_marker", "end_marker"), ("start_marker", "end_marker")))
    _markers(tl, cap.markers, tl.add_track("markers", "instants", group), 0)


def _markers(tl: Timeline, markers: pl.DataFrame, track: int, offset_ns: int) -> None:
    m = markers.with_columns(pl.col("ts") + offset_ns).filter(pl.col("ts").is_between(tl.start_ns, tl.end_ns))
    tl.instants.append(Layer("marker", m.select(
        pl.lit(track, pl.UInt64).alias("track"), "ts", pl.col("text").str.slice(0, 60).alias("name"), "text", "comm",
        "pid", "cpu"), ("text", "comm", "pid", "cpu")))


def _guest(tl: Timeline, a: LatencyAnalysis, guest: Capture) -> None:
    """The guest's own CPUs (who ran there) and markers, on the host's clock."""
    from kvmtrace.model.align import align
    from kvmtrace.model.blockers import cpu_segments

    al = align(a.capture.tables, guest.tables, a.vcpus["vcpu_tid"])
    group = tl.add_track(f"Guest ({guest.path})", "group",
                         description=f"the guest's own trace, shifted by {al.offset_ns} ns "
                                     f"(+/- {al.uncertainty_ns} ns) onto the host clock")
    seg = cpu_segments(guest.tables).with_columns(pl.col("start_ns") + al.offset_ns, pl.col("end_ns") + al.offset_ns)
    cpus = sorted(seg["cpu"].unique().to_list())
    tracks = {c: tl.add_track(f"guest CPU {c}" + (f" (vCPU {al.vcpu_of_cpu[c]})" if c in al.vcpu_of_cpu else ""),
                              "slices", group) for c in cpus}
    seg = clip(seg.filter(pl.col("owner_pid").fill_null(-1) != 0), tl.start_ns, tl.end_ns)
    tl.slices.append(Layer("guest_cpu", seg.select(_track_of("cpu", tracks), "start_ns", "end_ns",
                                                   pl.lit(0, pl.Int8).alias("depth"), owner_name().alias("name"),
                                                   pl.col("owner_pid").alias("pid")), ("pid",)))
    _markers(tl, guest.markers, tl.add_track("guest markers", "instants", group), al.offset_ns)
    tl.notes.append(f"guest clock aligned: host = guest + {al.offset_ns} ns (+/- {al.uncertainty_ns} ns, "
                    f"{100 * al.contained:.1f}% of guest events inside guest-run intervals)")
