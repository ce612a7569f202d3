"""Open a capture: a trace.dat file, a text file, or a capture directory with a ``capture.json`` manifest.

A capture directory (what ``kvmtrace record`` writes) holds the trace file plus the manifest
(format in docs/capture.md, versioned by ``kvmtrace_capture``). Tables read from a capture are
cached as Parquet, keyed by the trace file's content, so the second open is cheap.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import polars as pl

import kvmtrace.ingest.cache as cache
from kvmtrace.errors import CaptureError
from kvmtrace.ingest.tables import EventTables
from kvmtrace.model.phases import cyclictest_results, phases_from_markers

MANIFEST_NAME = "capture.json"
MANIFEST_VERSION = 1
TRACE_NAMES = ("trace.dat", "trace.txt", "trace.txt.gz", "trace.txt.zst", "report.txt")
TRACEDAT_MAGIC = b"\x17\x08\x44tracing"


@dataclass
class Manifest:
    """capture.json: what the recorder knew about the target and the run (all keys optional but version)."""

    version: int = MANIFEST_VERSION
    trace: str = "trace.dat"
    side: str = "host"  # "host" or "guest"
    host: dict[str, Any] = field(default_factory=dict)  # kernel, uname, arch, cpu_model, kvm_mode
    tracing: dict[str, Any] = field(default_factory=dict)  # clock, events, missing_events, buffer_size_kb...
    workloads: list[dict[str, Any]] = field(default_factory=list)
    phases: list[dict[str, Any]] = field(default_factory=list)  # name, start_ns, end_ns
    lost_events: dict[str, int] = field(default_factory=dict)  # cpu -> kernel overrun count
    guest_memory: list[dict[str, Any]] = field(default_factory=list)  # name, start, size (IPA ranges)
    extra: dict[str, Any] = field(default_factory=dict)  # any other keys, kept as they are

    @classmethod
    def load(cls, path: Path) -> Manifest:
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise CaptureError(path, f"line {exc.lineno}", f"capture.json is not valid JSON: {exc.msg}") from None
        if not isinstance(data, dict) or "kvmtrace_capture" not in data:
            raise CaptureError(path, None, "expected a JSON object with a 'kvmtrace_capture' version key")
        version = data.pop("kvmtrace_capture")
        if not isinstance(version, int) or version > MANIFEST_VERSION:
            raise CaptureError(path, None, f"unsupported capture.json version {version!r}: "
                               f"this kvmtrace reads versions up to {MANIFEST_VERSION}")
        known = {k: data.pop(k) for k in list(data) if k in cls.__dataclass_fields__ and k != "extra"}
        return cls(version=version, extra=data, **known)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kvmtrace_capture": self.version}
        for k in self.__dataclass_fields__:
            if k not in ("version", "extra"):
                out[k] = getattr(self, k)
        out.update(self.extra)
        return out

    def write(self, directory: Path) -> Path:
        path = directory / MANIFEST_NAME
        path.write_text(json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n")
        return path


@dataclass
class Capture:
    """An opened capture: its tables, manifest, markers and phases."""

    path: Path  # what the user named (file or directory)
    trace_path: Path
    tables: EventTables
    manifest: Manifest | None
    from_cache: bool = False
    read_seconds: float = 0.0

    @cached_property
    def markers(self) -> pl.DataFrame:
        return self.tables.markers()

    @cached_property
    def phases(self) -> pl.DataFrame:
        """Phases from markers; the manifest's phases where the trace has no markers for them."""
        ev = self.tables.events
        first = int(ev["ts"][0]) if ev.height else None
        last = int(ev["ts"][-1]) if ev.height else None
        found = phases_from_markers(self.markers, first, last)
        if self.manifest and self.manifest.phases:
            have = set(found["name"].to_list())
            rows = [
                {"name": p["name"], "start_ns": p.get("start_ns"), "end_ns": p.get("end_ns"),
                 "start_marker": "capture.json", "end_marker": "capture.json"}
                for p in self.manifest.phases if p.get("name") not in have
            ]
            if rows:
                extra = pl.DataFrame(rows).with_columns(
                    (pl.col("end_ns") - pl.col("start_ns")).alias("duration_ns")).select(found.columns)
                found = pl.concat([found, extra.cast(found.schema)]).sort("start_ns")
        return found

    @cached_property
    def cyclictest(self) -> pl.DataFrame:
        return cyclictest_results(self.markers)

    def window(self, name: str) -> tuple[int, int]:
        """(start_ns, end_ns) of a phase, or a CaptureError naming the phases there are."""
        rows = self.phases.filter(pl.col("name") == name)
        if rows.height == 0:
            names = ", ".join(self.phases["name"].to_list()) or "none"
            raise CaptureError(self.path, None, f"no phase named {name!r} (phases: {names})")
        return int(rows["start_ns"][0]), int(rows["end_ns"][0])


def find_trace(path: Path) -> tuple[Path, Manifest | None]:
    """The trace file of a capture path, and its manifest when it is a capture directory."""
    if not path.exists():
        raise CaptureError(path, None, "no such file or directory")
    if path.is_file():
        manifest_path = path.parent / MANIFEST_NAME
        manifest = Manifest.load(manifest_path) if manifest_path.is_file() else None
        if manifest and (path.parent / manifest.trace).resolve() != path.resolve():
            manifest = None
        return path, manifest
    manifest_path = path / MANIFEST_NAME
    manifest = Manifest.load(manifest_path) if manifest_path.is_file() else None
    if manifest:
        trace = path / manifest.trace
        if not trace.is_file():
            raise CaptureError(manifest_path, None, f"names trace file {manifest.trace!r}, which is missing")
        return trace, manifest
    for name in TRACE_NAMES:
        if (path / name).is_file():
            return path / name, None
    dats = sorted(path.glob("*.dat"))
    if dats:
        return dats[0], None
    raise CaptureError(path, None, "expected a capture directory with capture.json, trace.dat or trace.txt")


def is_tracedat(path: Path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(10) == TRACEDAT_MAGIC


def read_tables(trace: Path, progress: Any = None) -> EventTables:
    """Read a trace file with the reader its content calls for."""
    if is_tracedat(trace):
        from kvmtrace.ingest.tracedat import read_tracedat

        return read_tracedat(trace, progress)
    from kvmtrace.ingest.text import read_text

    return read_text(trace)  # its own progress output is step timings, for benchmarks


def open_capture(path: str | Path, use_cache: bool = True, progress: Any = None) -> Capture:
    """Open a capture file or directory; tables come from the Parquet cache when it holds them."""
    p = Path(path)
    trace, manifest = find_trace(p)
    started = time.perf_counter()
    key = cache.content_key(trace) if use_cache else None
    tables = cache.load(trace, key) if key else None
    from_cache = tables is not None
    if tables is None:
        tables = read_tables(trace, progress)
        if key:
            cache.store(trace, key, tables)
    return Capture(path=p, trace_path=trace, tables=tables, manifest=manifest, from_cache=from_cache,
                   read_seconds=time.perf_counter() - started)
