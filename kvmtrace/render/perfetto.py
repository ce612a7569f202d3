"""A :class:`~kvmtrace.render.timeline.Timeline` as a native Perfetto trace (TrackEvent protobuf).

Written with the protobuf bindings the ``perfetto`` package ships
(``perfetto.protos.perfetto.trace.perfetto_trace_pb2``): one ``TrackDescriptor`` packet per track,
then every slice as a ``TYPE_SLICE_BEGIN`` / ``TYPE_SLICE_END`` pair, instants as ``TYPE_INSTANT``,
counters as ``TYPE_COUNTER``, all on one packet sequence in time order. Event names, categories
and argument names are interned (sent once per sequence, then referred to by id). Packets are
serialised in chunks of ``Trace`` messages (concatenated ``Trace`` messages are one ``Trace``), so
memory stays bounded. Open the file at ui.perfetto.dev ("Open trace file"); docs/export.md.

Order at equal timestamps on a track: ends before begins (a slice ending where the next starts),
parents begin before their children and end after them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import polars as pl
from perfetto.protos.perfetto.trace import perfetto_trace_pb2 as pb

from kvmtrace.render.timeline import Timeline, Track

SEQUENCE_ID = 0x6B76  # any nonzero id: every packet is on this one sequence
CHUNK = 20_000  # packets per serialised Trace message
END, BEGIN, POINT = 0, 1, 2


@dataclass
class WriteStats:
    """What was written: packets, slices, instants, counter points, flows, bytes."""

    packets: int = 0
    slices: int = 0
    instants: int = 0
    counter_points: int = 0
    flows: int = 0
    bytes: int = 0


def write_perfetto(tl: Timeline, path: Path) -> WriteStats:
    """Write ``tl`` to ``path`` (``.pftrace``)."""
    stats = WriteStats()
    with path.open("wb") as out:
        w = _ChunkWriter(out, stats)
        for track in tl.tracks:
            _descriptor(w.packet(tl.start_ns), track)
        _events(w, tl, stats)
        w.flush()
    stats.bytes = path.stat().st_size
    return stats


class _ChunkWriter:
    """Packets on one sequence, serialised ``CHUNK`` at a time, with the sequence's interning tables."""

    def __init__(self, out: IO[bytes], stats: WriteStats) -> None:
        self.out, self.stats = out, stats
        self.trace = pb.Trace()
        self.first = True
        self.interned: dict[str, dict[str, int]] = {"event_names": {}, "event_categories": {},
                                                    "debug_annotation_names": {}}

    def packet(self, ts: int) -> pb.TracePacket:
        if len(self.trace.packet) >= CHUNK:
            self.flush()
        p = self.trace.packet.add()
        p.timestamp = ts
        p.trusted_packet_sequence_id = SEQUENCE_ID
        if self.first:
            p.first_packet_on_sequence = True
            p.sequence_flags = pb.TracePacket.SEQ_INCREMENTAL_STATE_CLEARED
            self.first = False
        else:
            p.sequence_flags = pb.TracePacket.SEQ_NEEDS_INCREMENTAL_STATE
        self.stats.packets += 1
        return p

    def iid(self, p: pb.TracePacket, table: str, text: str) -> int:
        """The id of ``text`` in an interning table, declared in ``p`` the first time it is used."""
        ids = self.interned[table]
        iid = ids.get(text)
        if iid is None:
            iid = ids[text] = len(ids) + 1
            entry = getattr(p.interned_data, table).add()
            entry.iid = iid
            entry.name = text
        return iid

    def flush(self) -> None:
        self.out.write(self.trace.SerializeToString())
        self.trace = pb.Trace()


def _descriptor(p: pb.TracePacket, t: Track) -> None:
    d = p.track_descriptor
    d.uuid = t.uid
    d.name = t.name
    if t.parent is not None:
        d.parent_uuid = t.parent
    if t.description:
        d.description = t.description
    d.sibling_order_rank = t.rank
    if t.kind == "group":
        d.child_ordering = pb.TrackDescriptor.EXPLICIT
    if t.merge_key is not None:
        d.sibling_merge_behavior = pb.TrackDescriptor.SIBLING_MERGE_BEHAVIOR_BY_SIBLING_MERGE_KEY
        d.sibling_merge_key = t.merge_key
    else:
        d.sibling_merge_behavior = pb.TrackDescriptor.SIBLING_MERGE_BEHAVIOR_NONE
    if t.kind == "counter":
        d.counter.unit_name = t.unit or ""


def event_order(tl: Timeline) -> pl.DataFrame:
    """Every event in writing order: ts, kind (END/BEGIN/POINT), layer (index into slices, then instants, then
    -1 for counters), row."""
    parts = []
    for li, layer in enumerate(tl.slices):
        f = layer.frame.with_row_index("row").select("row", "start_ns", "end_ns", pl.col("depth").cast(pl.Int64))
        parts.append(f.select(pl.col("start_ns").alias("ts"), pl.lit(BEGIN).alias("kind"), pl.col("depth").alias("o"),
                              pl.lit(li).alias("layer"), "row"))
        parts.append(f.select(pl.col("end_ns").alias("ts"), pl.lit(END).alias("kind"), (-pl.col("depth")).alias("o"),
                              pl.lit(li).alias("layer"), "row"))
    for li, layer in enumerate(tl.instants, len(tl.slices)):
        parts.append(layer.frame.with_row_index("row").select(
            "ts", pl.lit(POINT).alias("kind"), pl.lit(0, pl.Int64).alias("o"), pl.lit(li).alias("layer"), "row"))
    parts.append(tl.counters.with_row_index("row").select(
        "ts", pl.lit(POINT).alias("kind"), pl.lit(0, pl.Int64).alias("o"), pl.lit(-1).alias("layer"), "row"))
    schema = {"ts": pl.Int64(), "kind": pl.Int8(), "o": pl.Int64(), "layer": pl.Int32(), "row": pl.UInt32()}
    return pl.concat([p.cast(schema) for p in parts]).sort("ts", "kind", "o", maintain_order=True)  # type: ignore[arg-type]


def _flow_map(tl: Timeline) -> dict[tuple[int, int], tuple[list[int], list[int]]]:
    """(track, slice start) -> (flow ids passing or leaving, flow ids ending there)."""
    out: dict[tuple[int, int], tuple[list[int], list[int]]] = {}
    for fid, track, ts, step in tl.flows.iter_rows():
        ids = out.setdefault((track, ts), ([], []))
        ids[1 if step == 2 else 0].append(fid)
    return out


@dataclass
class _Columns:
    """One layer's columns as Python lists, for the packet loop."""

    category: str
    track: list[int]
    name: list[str]
    args: list[dict[str, Any]] | None
    start: list[int] | None = None
    depth: list[int] | None = None


def _columns(tl: Timeline) -> list[_Columns]:
    out = []
    for layer in [*tl.slices, *tl.instants]:
        f = layer.frame
        cols = _Columns(layer.category, f["track"].to_list(), f["name"].to_list(),
                        f.select(layer.args).to_dicts() if layer.args else None)
        if "start_ns" in f.columns:
            cols.start, cols.depth = f["start_ns"].to_list(), f["depth"].to_list()
        out.append(cols)
    return out


def _events(w: _ChunkWriter, tl: Timeline, stats: WriteStats) -> None:
    layers = _columns(tl)
    counters = tl.counters.select("track", "value").rows()
    flows = _flow_map(tl)
    for ts, kind, _, li, row in event_order(tl).iter_rows():
        p = w.packet(ts)
        if li < 0:
            _counter(p.track_event, *counters[row])
            stats.counter_points += 1
        elif kind == END:
            p.track_event.type = pb.TrackEvent.TYPE_SLICE_END
            p.track_event.track_uuid = layers[li].track[row]
        else:
            _begin(w, p, kind, layers[li], row, flows, stats)


def _counter(e: pb.TrackEvent, track: int, value: float) -> None:
    e.type = pb.TrackEvent.TYPE_COUNTER
    e.track_uuid = track
    e.double_counter_value = value


def _begin(w: _ChunkWriter, p: pb.TracePacket, kind: int, cols: _Columns, row: int,
           flows: dict[tuple[int, int], tuple[list[int], list[int]]], stats: WriteStats) -> None:
    """A slice begin or an instant: name, category, arguments, and the flows that leave or end at the slice."""
    e = p.track_event
    e.type = pb.TrackEvent.TYPE_INSTANT if kind == POINT else pb.TrackEvent.TYPE_SLICE_BEGIN
    e.track_uuid = cols.track[row]
    e.name_iid = w.iid(p, "event_names", cols.name[row])
    e.category_iids.append(w.iid(p, "event_categories", cols.category))
    if cols.args is not None:
        _annotate(w, p, cols.args[row])
    if kind == POINT:
        stats.instants += 1
        return
    stats.slices += 1
    if cols.depth is not None and cols.start is not None and cols.depth[row] == 0:
        ids = flows.get((cols.track[row], cols.start[row]))
        if ids:
            e.flow_ids.extend(ids[0])
            e.terminating_flow_ids.extend(ids[1])
            stats.flows += len(ids[1])


def _annotate(w: _ChunkWriter, p: pb.TracePacket, args: dict[str, Any]) -> None:
    for key, value in args.items():
        if value is None:
            continue
        a = p.track_event.debug_annotations.add()
        a.name_iid = w.iid(p, "debug_annotation_names", key)
        if isinstance(value, bool):
            a.bool_value = value
        elif isinstance(value, int):
            a.int_value = value
        elif isinstance(value, float):
            a.double_value = value
        else:
            a.string_value = str(value)


def read_perfetto(path: Path) -> tuple[list[pb.TrackDescriptor], pl.DataFrame]:
    """The trace back, parsed by the same bindings, interned names resolved (tests, and a quick look): the
    track descriptors, and one row per track event (ts, type, track, name, category, flow_ids, terminating,
    counter, args: a JSON object)."""
    trace = pb.Trace.FromString(path.read_bytes())
    names: dict[str, dict[int, str]] = {"event_names": {}, "event_categories": {}, "debug_annotation_names": {}}
    tracks, rows = [], []
    for p in trace.packet:
        for table, ids in names.items():
            ids.update((x.iid, x.name) for x in getattr(p.interned_data, table))
        if p.HasField("track_descriptor"):
            tracks.append(p.track_descriptor)
        if not p.HasField("track_event"):
            continue
        e = p.track_event
        args = {names["debug_annotation_names"][a.name_iid]: _value(a) for a in e.debug_annotations}
        rows.append((p.timestamp, pb.TrackEvent.Type.Name(e.type), e.track_uuid, names["event_names"].get(e.name_iid),
                     ",".join(names["event_categories"][i] for i in e.category_iids), list(e.flow_ids),
                     list(e.terminating_flow_ids), e.double_counter_value, json.dumps(args) if args else None))
    schema = {"ts": pl.Int64(), "type": pl.String(), "track": pl.UInt64(), "name": pl.String(),
              "category": pl.String(), "flow_ids": pl.List(pl.UInt64()), "terminating": pl.List(pl.UInt64()),
              "counter": pl.Float64(), "args": pl.String()}
    return tracks, pl.DataFrame(rows, schema=schema, orient="row")


def _value(a: pb.DebugAnnotation) -> Any:
    kind = a.WhichOneof("value")
    return getattr(a, kind) if kind else None
