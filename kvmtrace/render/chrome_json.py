"""A :class:`~kvmtrace.render.timeline.Timeline` as Chrome trace-event JSON (chrome://tracing, Perfetto UI,
speedscope and other tools that read that format).

Each top-level group is a process (``pid`` 1, 2, ... in the timeline's order) and each of its slice
or instant tracks a thread (``tid`` = the track's id; lanes of one logical track share the first
lane's). Slices are complete events (``X``); guest interrupts and their stages are nestable async
events (``b``/``e``, ``id`` = the interrupt's ``irq_no``), so interrupts that overlap in time are all
kept; exits, faults and markers are thread-scoped instants (``i``); rates are counters (``C``);
the host IRQ -> switch-in -> guest entry flows are flow events (``s``/``t``/``f``). Times are
microseconds with nanosecond decimals (docs/export.md).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import polars as pl

from kvmtrace.render.timeline import Layer, Timeline, Track
from kvmtrace.units import us_value

FLOW_PHASES = {0: "s", 1: "t", 2: "f"}


def placement(tl: Timeline) -> dict[int, tuple[int, int]]:
    """Track uid -> (pid, tid): groups are processes, their tracks threads (lanes share one thread)."""
    out: dict[int, tuple[int, int]] = {}
    for pid, group in enumerate(tl.children(None), 1):
        out[group.uid] = (pid, 0)
        first_of: dict[str, int] = {}
        for t in tl.children(group.uid):
            tid = first_of.setdefault(t.merge_key, t.uid) if t.merge_key else t.uid
            out[t.uid] = (pid, tid)
    return out


def _metadata(tl: Timeline, where: dict[int, tuple[int, int]]) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    for group in tl.children(None):
        pid = where[group.uid][0]
        events += [{"ph": "M", "name": "process_name", "pid": pid, "args": {"name": group.name}},
                   {"ph": "M", "name": "process_sort_index", "pid": pid, "args": {"sort_index": pid}}]
        seen = set()
        for t in tl.children(group.uid):
            tid = where[t.uid][1]
            if t.kind == "counter" or tid in seen:
                continue
            seen.add(tid)
            events += [{"ph": "M", "name": "thread_name", "pid": pid, "tid": tid, "args": {"name": t.name}},
                       {"ph": "M", "name": "thread_sort_index", "pid": pid, "tid": tid, "args": {"sort_index": t.rank}}]
    return events


def _args(layer: Layer) -> list[dict[str, Any]]:
    if not layer.args:
        return [{} for _ in range(layer.frame.height)]
    return [{k: v for k, v in row.items() if v is not None} for row in layer.frame.select(layer.args).to_dicts()]


def _slices(layer: Layer, where: dict[int, tuple[int, int]]) -> list[dict[str, Any]]:
    f = layer.frame
    args = _args(layer)
    out: list[dict[str, Any]] = []
    if layer.async_id is None:
        for (track, s, e, name), a in zip(f.select("track", "start_ns", "end_ns", "name").iter_rows(), args,
                                          strict=True):
            pid, tid = where[track]
            out.append({"ph": "X", "name": name, "cat": layer.category, "ts": us_value(s), "dur": us_value(e - s),
                        "pid": pid, "tid": tid, "args": a})
        return out
    for (track, s, e, name, key), a in zip(f.select("track", "start_ns", "end_ns", "name", layer.async_id)
                                           .iter_rows(), args, strict=True):
        pid, tid = where[track]
        common = {"name": name, "cat": "interrupt", "id": str(key), "pid": pid, "tid": tid}
        out += [{**common, "ph": "b", "ts": us_value(s), "args": a}, {**common, "ph": "e", "ts": us_value(e)}]
    return out


def _instants(layer: Layer, where: dict[int, tuple[int, int]]) -> list[dict[str, Any]]:
    out = []
    for (track, ts, name), a in zip(layer.frame.select("track", "ts", "name").iter_rows(), _args(layer), strict=True):
        pid, tid = where[track]
        out.append({"ph": "i", "s": "t", "name": name, "cat": layer.category, "ts": us_value(ts), "pid": pid,
                    "tid": tid, "args": a})
    return out


def _counters(tl: Timeline, where: dict[int, tuple[int, int]]) -> list[dict[str, Any]]:
    by_uid: dict[int, Track] = {t.uid: t for t in tl.tracks}
    out = []
    for track, ts, value in tl.counters.select("track", "ts", "value").iter_rows():
        t = by_uid[track]
        out.append({"ph": "C", "name": t.name, "ts": us_value(ts), "pid": where[track][0],
                    "args": {t.unit or "value": round(value, 3)}})
    return out


def _flows(tl: Timeline, where: dict[int, tuple[int, int]]) -> list[dict[str, Any]]:
    out = []
    for fid, track, ts, step in tl.flows.select("flow_id", "track", "ts", "step").iter_rows():
        pid, tid = where[track]
        ev = {"ph": FLOW_PHASES[step], "name": "interrupt", "cat": "flow", "id": str(fid), "ts": us_value(ts),
              "pid": pid, "tid": tid}
        if step == 2:
            ev["bp"] = "e"
        out.append(ev)
    return out


def chrome_events(tl: Timeline) -> list[dict[str, Any]]:
    """Every trace event of ``tl``, metadata first."""
    where = placement(tl)
    events = _metadata(tl, where)
    for layer in tl.slices:
        events += _slices(layer, where)
    for layer in tl.instants:
        events += _instants(layer, where)
    return events + _counters(tl, where) + _flows(tl, where)


def write_chrome_json(tl: Timeline, path: Path, meta: dict[str, Any] | None = None) -> int:
    """Write ``tl`` as ``{"traceEvents": [...], "displayTimeUnit": "ns", "otherData": meta}``; returns the
    number of events."""
    events = chrome_events(tl)
    doc = {"traceEvents": events, "displayTimeUnit": "ns", "otherData": meta or {}}
    with path.open("w") as out:
        json.dump(doc, out, separators=(",", ":"), default=str)
    return len(events)


def read_chrome_json(path: Path) -> pl.DataFrame:
    """The events back as a frame (ph, name, cat, ts, dur, pid, tid, id), for tests and a quick look."""
    events = json.loads(path.read_text())["traceEvents"]
    cols = ("ph", "name", "cat", "ts", "dur", "pid", "tid", "id")
    return pl.DataFrame([{c: e.get(c) for c in cols} for e in events],
                        schema={"ph": pl.String, "name": pl.String, "cat": pl.String, "ts": pl.Float64,
                                "dur": pl.Float64, "pid": pl.Int64, "tid": pl.Int64, "id": pl.String})
