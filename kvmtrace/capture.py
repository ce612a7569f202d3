"""Open a capture: a trace.dat file, a text file, or a capture directory with a ``capture.json`` manifest.

A capture directory (what ``kvmtrace record`` writes) holds the trace file plus the manifest
(format in docs/capture.md, versioned by ``kvmtrace_capture``). Tables read from a text capture (or
a trace.dat read without the native kernels) are cached as Parquet, keyed by the trace file's
content, so the second open is cheap (kvmtrace.ingest.cache.pays_for).
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import polars as pl

import kvmtrace.ingest.cache as cache
from kvmtrace.errors import CaptureError
from kvmtrace.fileformats.manifest import MANIFEST_NAME, MANIFEST_VERSION
from kvmtrace.fileformats.manifest_schema import MAX_MANIFEST_BYTES, SCHEMA, validate
from kvmtrace.fileformats.tracedat import MAGIC
from kvmtrace.ingest.files import check_regular, inside, read_head, read_limited
from kvmtrace.ingest.tables import EventTables
from kvmtrace.model.phases import compile_pattern, cyclictest_results, phases_from_markers

TRACE_NAMES = ("trace.dat", "trace.txt", "trace.txt.gz", "trace.txt.zst", "report.txt")


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
    phase_pattern: str | None = None  # a user's phase-marker regex (groups name, edge); docs/capture.md
    extra: dict[str, Any] = field(default_factory=dict)  # any other keys, kept as they are

    @classmethod
    def load(cls, path: Path) -> Manifest:
        """Read and validate capture.json (manifest_schema): one CaptureError naming the wrong key."""
        raw = read_limited(path, MAX_MANIFEST_BYTES, "capture.json")
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise CaptureError(path, f"byte {exc.start}", "expected UTF-8 JSON text") from None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise CaptureError(path, f"line {exc.lineno}", f"capture.json is not valid JSON: {exc.msg}") from None
        except (RecursionError, ValueError) as exc:  # nesting too deep, an integer of thousands of digits
            raise CaptureError(path, None, f"capture.json cannot be read: {str(exc)[:80]}") from None
        version = data.get("kvmtrace_capture") if isinstance(data, dict) else None
        if isinstance(version, int) and not isinstance(version, bool) and version > MANIFEST_VERSION:
            raise CaptureError(path, None, f"unsupported capture.json version {version!r}: "
                               f"this kvmtrace reads versions up to {MANIFEST_VERSION}")
        problem = validate(data)
        if problem is not None:
            raise CaptureError(path, f"key {problem[0]!r}", problem[1])
        known = {k: data.pop(k) for k in list(data) if k in SCHEMA and k != "kvmtrace_capture"}
        version = data.pop("kvmtrace_capture")
        return cls(version=version, extra=data, **known)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kvmtrace_capture": self.version}
        for k in self.__dataclass_fields__:
            if k not in ("version", "extra") and not (k == "phase_pattern" and self.phase_pattern is None):
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
    phase_pattern: str | None = None  # --phase-pattern; else capture.json's phase_pattern
    read_window: tuple[int | None, int | None] | None = None  # only these times were read (start_ns, end_ns)

    def marker_pattern(self) -> re.Pattern[str] | None:
        """The user's phase-marker pattern (option first, then capture.json), compiled, or None."""
        text = self.phase_pattern or (self.manifest.phase_pattern if self.manifest else None)
        return compile_pattern(text) if text else None

    @cached_property
    def markers(self) -> pl.DataFrame:
        return self.tables.markers()

    @cached_property
    def phases(self) -> pl.DataFrame:
        """Phases from markers; the manifest's phases where the trace has no markers for them."""
        ev = self.tables.events
        first = int(ev["ts"][0]) if ev.height else None
        last = int(ev["ts"][-1]) if ev.height else None
        return phases_with_manifest(phases_from_markers(self.markers, first, last, self.marker_pattern()),
                                    self.manifest)

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


def phases_with_manifest(found: pl.DataFrame, manifest: Manifest | None) -> pl.DataFrame:
    """Phases from markers (``found``), plus the manifest's phases the trace has no markers for."""
    if not (manifest and manifest.phases):
        return found
    have = set(found["name"].to_list())
    rows = [
        {"name": p["name"], "start_ns": p.get("start_ns"), "end_ns": p.get("end_ns"),
         "start_marker": "capture.json", "end_marker": "capture.json"}
        for p in manifest.phases if p.get("name") not in have
    ]
    if not rows:
        return found
    extra = pl.DataFrame(rows).with_columns(
        (pl.col("end_ns") - pl.col("start_ns")).alias("duration_ns")).select(found.columns)
    return pl.concat([found, extra.cast(found.schema)]).sort("start_ns")


def find_trace(path: Path) -> tuple[Path, Manifest | None]:
    """The trace file of a capture path, and its manifest when it is a capture directory. A folder's
    trace (named by capture.json or found by name) must be a regular file inside the folder."""
    if not _exists(path):
        raise CaptureError(path, None, "no such file or directory")
    if not path.is_dir():
        check_regular(path)
        manifest_path = path.parent / MANIFEST_NAME
        manifest = Manifest.load(manifest_path) if manifest_path.is_file() else None
        if manifest and not _same_file(path.parent / manifest.trace, path):
            manifest = None
        return path, manifest
    manifest_path = path / MANIFEST_NAME
    manifest = Manifest.load(manifest_path) if _exists(manifest_path) else None
    if manifest:
        trace = path / manifest.trace
        if not _exists(trace):
            raise CaptureError(manifest_path, "key 'trace'", f"names trace file {manifest.trace!r}, which is missing")
        return _inside(path, trace), manifest
    for name in TRACE_NAMES:
        if _exists(path / name):
            return _inside(path, path / name), None
    dats = sorted(p for p in path.glob("*.dat") if _exists(p))
    if dats:
        return _inside(path, dats[0]), None
    raise CaptureError(path, None, "expected a capture directory with capture.json, trace.dat or trace.txt")


def _exists(path: Path) -> bool:
    """Something is there (a symlink counts, even a broken or looping one: opening it says what is wrong)."""
    return os.path.lexists(path)


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except (OSError, ValueError):
        return False


def _inside(folder: Path, trace: Path) -> Path:
    """A capture folder's trace: a regular file inside the folder (never a file elsewhere, through
    a symlink or a path, whose lines an error would quote)."""
    check_regular(trace)
    if not inside(folder, trace):
        raise CaptureError(trace, None, f"resolves outside the capture folder {str(folder)!r}: expected the trace "
                           "inside it (name the file itself to read it)")
    return trace


def is_tracedat(path: Path) -> bool:
    return read_head(path, 10) == MAGIC


def read_tables(trace: Path, progress: Any = None, window: tuple[int | None, int | None] | None = None
                ) -> EventTables:
    """Read a trace file with the reader its content calls for; with ``window`` (start_ns, end_ns),
    only the events in it (a trace.dat is cut at the page level before decoding)."""
    if is_tracedat(trace):
        from kvmtrace.ingest.tracedat.reader import read_tracedat

        return read_tracedat(trace, progress, window)
    from kvmtrace.ingest.text.reader import read_text

    tables = read_text(trace)  # its own progress output is step timings, for benchmarks
    return tables.cut(*window) if window is not None else tables


def open_capture(path: str | Path, use_cache: bool = True, progress: Any = None,
                 phase_pattern: str | None = None, window: tuple[int | None, int | None] | None = None) -> Capture:
    """Open a capture file or directory; tables come from the Parquet cache when it holds them
    (verified: kvmtrace.ingest.cache); a cache that cannot be used is a note, never an error.
    ``phase_pattern``: the user's phase-marker regex (model.phases), checked before reading.
    ``window`` (start_ns, end_ns): only the events in it are read (read_tables; never cached)."""
    p = Path(path)
    trace, manifest = find_trace(p)
    pattern = phase_pattern or (manifest.phase_pattern if manifest else None)
    if pattern:
        _check_pattern(pattern, manifest_path(p, trace) if not phase_pattern else None)
    started = time.perf_counter()
    if window is not None:
        part = with_manifest_clock(read_tables(trace, progress, window), manifest)
        return Capture(path=p, trace_path=trace, tables=part, manifest=manifest,
                       read_seconds=time.perf_counter() - started, phase_pattern=phase_pattern, read_window=window)
    key = _content_key(trace) if use_cache and cache.pays_for(is_tracedat(trace)) else None
    tables, note = cache.load(trace, key) if key else (None, None)
    _note(note)
    from_cache = tables is not None
    if tables is None:
        tables = read_tables(trace, progress)
        if key:
            _note(cache.store(trace, key, tables))
    return Capture(path=p, trace_path=trace, tables=with_manifest_clock(tables, manifest), manifest=manifest,
                   from_cache=from_cache, read_seconds=time.perf_counter() - started, phase_pattern=phase_pattern)


def with_manifest_clock(tables: EventTables, manifest: Manifest | None) -> EventTables:
    """The trace clock the recorder names in capture.json where the trace file says ``local`` or
    nothing: tools that rewrite a trace.dat can drop its clock option (``trace-cmd split`` does, and the
    converted file then says local), while the timestamps were taken with the recorder's clock. Where
    the clock came from is kept in ``meta.options['clock_source']``."""
    said = manifest.tracing.get("clock") if manifest else None
    if not isinstance(said, str) or not said or said == tables.meta.clock:
        return tables
    if tables.meta.clock not in (None, "local"):
        tables.meta.options["clock_source"] = f"the trace file (capture.json says {said!r})"
        return tables
    tables.meta.options["clock_source"] = (f"capture.json (the trace file says {tables.meta.clock or 'nothing'}: "
                                           "a rewrite such as trace-cmd split drops the clock option)")
    tables.meta.clock = said
    return tables


def manifest_path(path: Path, trace: Path) -> Path:
    """Where the capture.json of a capture path lies (the folder's, or beside the trace file)."""
    return (path if path.is_dir() else trace.parent) / MANIFEST_NAME


def _check_pattern(pattern: str, source: Path | None) -> None:
    """A bad phase pattern is one line naming where it came from (capture.json or the option)."""
    try:
        compile_pattern(pattern)
    except CaptureError as exc:
        raise CaptureError(source, "key 'phase_pattern'" if source else "--phase-pattern", exc.message) from None


def _content_key(trace: Path) -> str | None:
    try:
        return cache.content_key(trace)
    except OSError as exc:
        _note(f"cache not used: cannot hash {trace}: {exc.strerror or exc}")
        return None


def _note(text: str | None) -> None:
    """One line on stderr about something that did not stop the command (the cache)."""
    if text:
        sys.stderr.write(f"kvmtrace: note: {text}\n")
