"""Write event tables (and analysis tables) as Parquet files."""

from __future__ import annotations

import json
from pathlib import Path

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
