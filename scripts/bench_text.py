"""Benchmark the text reader: lines/s (median of 3 runs) and peak RSS on one report text file.

Usage: .venv/bin/python scripts/bench_text.py [FILE]
(default: trace-cmd report -N -t -R of captures/arm64-vhe-cyclictest/trace.dat, made in /tmp)
"""

from __future__ import annotations

import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

from kvmtrace.ingest.text import read_text

DEFAULT_CAPTURE = Path(__file__).resolve().parent.parent / "captures/arm64-vhe-cyclictest/trace.dat"


def default_text() -> Path:
    out = Path("/tmp/kvmtrace-bench-vhe.txt")
    if not out.exists():
        with out.open("wb") as fh:
            subprocess.run(
                ["trace-cmd", "report", "-N", "-t", "-R", "-i", str(DEFAULT_CAPTURE)],
                stdout=fh,
                stderr=subprocess.DEVNULL,
                check=True,
            )
    return out


def bench(path: Path, runs: int = 3) -> tuple[float, int]:
    """Median lines/s over ``runs`` reads, and the line count."""
    lines = path.read_bytes().count(b"\n")
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        read_text(path)
        times.append(time.perf_counter() - start)
    return lines / statistics.median(times), lines


def main() -> None:
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else default_text()
    rate, lines = bench(path)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{path}: {lines} lines, {rate / 1e6:.2f} M lines/s (median of 3)")
    print(f"peak RSS {peak_mb:.0f} MB")


if __name__ == "__main__":
    main()
