"""Benchmark results found in a capture's markers, each tied to the phase it was measured in.

Recognised lines (``print`` events, or any text file of them):

- ``kvmtrace result lat_mem_rd pattern=random size_mb=32 stride=64 latency_ns=273.75`` and
  ``kvmtrace result lat_pagefault kind=file pages=8192 faults=16384 us_per_fault=2.38`` (written by
  ``kvmtrace record`` and the board's guest; ``key=value`` pairs, the measure is the last number);
- LMbench's own output: ``lat_mem_rd``'s ``size latency`` lines (``256.00000 122.300``: MB and ns;
  the largest size is the result), ``lat_pagefault``'s ``Pagefaults on FILE: 2.4000 microseconds``;
- the same lines behind a ``LMB`` prefix (the study's guest copied LMbench output that way).
"""

from __future__ import annotations

import re

import polars as pl

from kvmtrace.model.phases import phase_of

KV_RE = re.compile(r"(\w+)=([^\s]+)")
RESULT_RE = re.compile(r"kvmtrace result (\w+)\s+(.*)$")
LMB_PAGEFAULT_RE = re.compile(r"Pagefaults on (\S+):\s*([\d.]+)\s*microseconds")
LMB_MEM_RE = re.compile(r"^(?:LMB\S*\s+)?(\d+\.\d+)\s+(\d+\.\d+)\s*$")
RESULT_SCHEMA = {"ts": pl.Int64(), "bench": pl.String(), "variant": pl.String(), "measure": pl.String(),
                 "value": pl.Float64(), "unit": pl.String(), "phase": pl.String(), "text": pl.String()}
UNITS = {"latency_ns": "ns", "us_per_fault": "us"}


def _kvmtrace_line(text: str) -> dict[str, object] | None:
    m = RESULT_RE.search(text)
    if not m:
        return None
    kv = dict(KV_RE.findall(m[2]))
    measure = next((k for k in ("latency_ns", "us_per_fault") if k in kv), None)
    if measure is None:
        return None
    try:
        value = float(kv[measure])
    except ValueError:
        return None
    variant = kv.get("pattern") or kv.get("kind") or ("file" if m[1] == "lat_pagefault" else "")
    return {"bench": m[1], "variant": variant, "measure": measure, "value": value, "unit": UNITS[measure]}


def _lmbench_line(text: str) -> dict[str, object] | None:
    m = LMB_PAGEFAULT_RE.search(text)
    if m:
        return {"bench": "lat_pagefault", "variant": "file", "measure": "us_per_fault", "value": float(m[2]),
                "unit": "us"}
    m = LMB_MEM_RE.match(text.strip())
    if m:
        return {"bench": "lat_mem_rd", "variant": f"{m[1]}MB", "measure": "latency_ns", "value": float(m[2]),
                "unit": "ns", "size_mb": float(m[1])}
    return None


def benchmark_results(markers: pl.DataFrame, phases: pl.DataFrame) -> pl.DataFrame:
    """One row per result line (RESULT_SCHEMA); of LMbench's lat_mem_rd size lines only the largest size
    of each run is kept (the study's figure: 256 MB, beyond every cache)."""
    rows = []
    for ts, text in zip(markers["ts"].to_list(), markers["text"].to_list(), strict=True):  # markers: a handful
        found = _kvmtrace_line(text or "") or _lmbench_line(text or "")
        if found:
            rows.append({"ts": ts, "text": text, **{k: v for k, v in found.items() if k != "size_mb"},
                         "_size": found.get("size_mb")})
    if not rows:
        return pl.DataFrame(schema=RESULT_SCHEMA)
    df = pl.DataFrame(rows).with_columns(phase_of(pl.col("ts"), phases).alias("phase"))
    sized = df.filter(pl.col("_size").is_not_null())
    if sized.height:  # LMbench lat_mem_rd: the largest size per phase
        top = sized.sort("_size").group_by("phase", maintain_order=True).last()
        df = pl.concat([df.filter(pl.col("_size").is_null()), top], how="vertical_relaxed")
    return df.drop("_size").select(list(RESULT_SCHEMA)).cast(RESULT_SCHEMA).sort("ts")  # type: ignore[arg-type]
