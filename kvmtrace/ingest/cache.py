"""Parquet cache of event tables, keyed by the trace file's content.

Where: ``$KVMTRACE_CACHE_DIR``, else ``.kvmtrace-cache/`` beside the trace when that folder is
writable, else ``~/.cache/kvmtrace``. The key is a BLAKE2b hash of the file's bytes plus the
cache layout version; a small stat index (path, size, mtime, inode -> key) spares re-hashing a
file that has not changed. A cache that cannot be written is simply not used.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import polars as pl

from kvmtrace import __version__
from kvmtrace.ingest.formats import parse_event_format
from kvmtrace.ingest.tables import CaptureMeta, EventTables, ReadReport, SkippedRegion

CACHE_LAYOUT = 1
_INDEX = "index.json"


def cache_root(trace: Path) -> Path:
    env = os.environ.get("KVMTRACE_CACHE_DIR")
    if env:
        return Path(env)
    beside = trace.resolve().parent / ".kvmtrace-cache"
    if os.access(trace.resolve().parent, os.W_OK) or (beside.is_dir() and os.access(beside, os.W_OK)):
        return beside
    return Path.home() / ".cache" / "kvmtrace"


def content_key(trace: Path) -> str:
    root = cache_root(trace)
    st = trace.stat()
    ident = [st.st_size, st.st_mtime_ns, st.st_ino]
    index = _read_index(root)
    entry = index.get(str(trace.resolve()))
    if entry and entry.get("stat") == ident and str(entry.get("key", "")).endswith(reader_fingerprint()):
        return str(entry["key"])
    h = hashlib.sha256()  # hardware-accelerated on current CPUs: about 3x blake2b here
    with open(trace, "rb") as fh:
        while chunk := fh.read(8 << 20):
            h.update(chunk)
    key = f"{h.hexdigest()[:32]}-{reader_fingerprint()}"
    index[str(trace.resolve())] = {"stat": ident, "key": key}
    _write_index(root, index)
    return key


@functools.cache
def reader_fingerprint() -> str:
    """Changes whenever the readers' code (or the cache layout) changes: stale caches are not used."""
    h = hashlib.blake2b(f"{CACHE_LAYOUT}-{__version__}".encode(), digest_size=6)
    for src in sorted([*Path(__file__).parent.glob("*.py"), *Path(__file__).parent.glob("*.c")]):
        h.update(src.read_bytes())
    return h.hexdigest()


def _read_index(root: Path) -> dict[str, Any]:
    try:
        data = json.loads((root / _INDEX).read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _write_index(root: Path, index: dict[str, Any]) -> None:
    try:
        root.mkdir(parents=True, exist_ok=True)
        tmp = root / f".{_INDEX}.{os.getpid()}"
        tmp.write_text(json.dumps(index))
        tmp.replace(root / _INDEX)
    except OSError:
        pass


def store(trace: Path, key: str, tables: EventTables) -> None:
    root = cache_root(trace)
    final = root / key
    if final.exists():
        return
    try:
        root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".partial-", dir=root))
        (tmp / "by_event").mkdir()
        ordered = sorted(tables.by_event.items())
        names = {str(n): name for n, (name, _df) in enumerate(ordered)}
        jobs = [(tables.events, tmp / "events.parquet")]
        jobs += [(df, tmp / "by_event" / f"{n}.parquet") for n, (_name, df) in enumerate(ordered)]
        with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:  # polars releases the GIL
            list(pool.map(lambda job: job[0].write_parquet(job[1], compression="lz4", statistics=False), jobs))
        (tmp / "meta.json").write_text(json.dumps(_meta_doc(tables, names)))
        tmp.rename(final)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True) if "tmp" in locals() else None
        return
    _drop_older_readers(root, key)


def _drop_older_readers(root: Path, key: str) -> None:
    """Remove the entries of the same content made by other reader code (``<content>-<reader>``):
    no reader of this version will use them, and each holds a full copy of the tables."""
    content = key.rsplit("-", 1)[0]
    for entry in root.glob(f"{content}-*"):
        if entry.name != key and entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)


def _meta_doc(tables: EventTables, names: dict[str, str]) -> dict[str, Any]:
    return {
        "meta": tables.meta.to_dict(),
        "report": tables.report.to_dict(),
        "formats": [{"system": f.system, "text": f.source} for f in tables.formats.values()],
        "cmdlines": {str(k): v for k, v in tables.cmdlines.items()},
        "tables": names,
    }


def load(trace: Path, key: str) -> EventTables | None:
    folder = cache_root(trace) / key
    if not (folder / "meta.json").is_file():
        return None
    try:
        doc = json.loads((folder / "meta.json").read_text())
        paths = [folder / "events.parquet", *(folder / "by_event" / f"{n}.parquet" for n in doc["tables"])]
        with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
            frames = list(pool.map(pl.read_parquet, paths))
        events = frames[0]
        by_event = dict(zip(doc["tables"].values(), frames[1:], strict=True))
    except (OSError, ValueError, pl.exceptions.PolarsError):
        return None
    formats = {}
    for f in doc["formats"]:
        fmt = parse_event_format(f["text"], f["system"])
        formats[fmt.name] = fmt
    meta = CaptureMeta(**{**doc["meta"], "path": str(trace)})
    return EventTables(events=events, by_event=by_event, formats=formats, meta=meta,
                       report=_report(doc["report"]),
                       cmdlines={int(k): v for k, v in doc["cmdlines"].items()})


def _report(d: dict[str, Any]) -> ReadReport:
    def per_cpu(x: dict[str, dict[str, int]]) -> dict[str, dict[int, int]]:
        return {b: {int(c): n for c, n in v.items()} for b, v in x.items()}

    return ReadReport(
        lost_events=per_cpu(d["lost_events"]), lost_unknown_pages=per_cpu(d["lost_unknown_pages"]),
        kernel_overruns=per_cpu(d["kernel_overruns"]),
        skipped=[SkippedRegion(**s) for s in d["skipped"]],
        unknown_events=dict(d["unknown_events"]), unparsed_lines=int(d["unparsed_lines"]),
    )
