"""A notebook-style tour of kvmtrace's Python API on a bundled real capture (docs/api.md).

    .venv/bin/python docs/examples/explore.py [CAPTURE]
"""

from __future__ import annotations

import sys

import polars as pl

import kvmtrace

cap = kvmtrace.open(sys.argv[1] if len(sys.argv) > 1 else "captures/board-vhe-rt-throttle")

irqs = cap.interrupts()  # the cyclictest phase by default; window="all" or "START:END" otherwise
print(f"{irqs.height:,} guest interrupts;", irqs.group_by("path").len().sort("path").rows())

# the five slowest, by the best latency the host can know, and what held them up
worst = irqs.sort("best_latency_ns", descending=True).head(5)
print(worst.select("t_ns", "path", "latency_basis", (pl.col("best_latency_ns") / 1e6).alias("ms"),
                   "cause_kind", "cause"))

# who caused the latency over all interrupts
print(cap.blame().head(5).select("cause_kind", "cause", (pl.col("total_ns") / 1e6).alias("ms"), "share"))

# exits per class per second over the whole capture
exits = cap.exits(window="all")
print(exits.group_by("exit_class").len().sort("len", descending=True).head(5))

# the vCPU thread's time per state
print(cap.vcpus().with_columns((pl.col("end_ns") - pl.col("start_ns")).alias("ns"))
      .group_by("vcpu_tid", "state").agg(pl.col("ns").sum()).sort("vcpu_tid", "state"))
