"""Write event tables (and analysis tables) as Parquet files."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import polars as pl

from kvmtrace.errors import CaptureError
from kvmtrace.ingest.tables import EventTables


def write_tables(tables: EventTables, outdir: Path) -> list[Path]:
    """``events.parquet`` (the common table), ``events/<name>.parquet`` per event type, ``read.json``."""
    outdir.mkdir(parents=True, exist_ok=True)
    (outdir / "events").mkdir(exist_ok=True)
    written = [outdir / "events.parquet"]
    tables.events.write_parquet(written[0])
    for name, df in sorted(tables.by_event.items()):
        path = outdir / "events" / f"{name}.parquet"
        df.write_parquet(path)
        written.append(path)
    doc = {"meta": tables.meta.to_dict(), "read": tables.report.to_dict(),
           "formats": {n: {"system": f.system, "id": f.id} for n, f in tables.formats.items()
                       if n in tables.by_event}}
    (outdir / "read.json").write_text(json.dumps(doc, indent=2, default=str) + "\n")
    written.append(outdir / "read.json")
    return written


def write_frame(df: pl.DataFrame, path: Path) -> None:
    """One table to a file, the format chosen by its suffix: .parquet, .csv or .json (records); ``-``
    writes JSON records to standard output. A folder that does not exist is one clear error."""
    if str(path) == "-":
        sys.stdout.write(json.dumps(df.to_dicts(), default=str) + "\n")
        return
    suffix = path.suffix.lower()
    if suffix not in (".parquet", ".csv", ".json"):
        raise CaptureError(path, None, "unknown output type: expected a .parquet, .csv or .json file name (or -)")
    if not path.parent.is_dir():
        raise CaptureError(path, None, f"cannot write: folder {str(path.parent)!r} does not exist")
    try:
        if suffix == ".parquet":
            df.write_parquet(path)
        elif suffix == ".csv":
            df.write_csv(path)
        else:
            path.write_text(json.dumps(df.to_dicts(), default=str) + "\n")
    except OSError as exc:
        raise CaptureError(path, None, f"cannot write: {exc.strerror}") from None
