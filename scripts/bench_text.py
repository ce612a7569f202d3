"""Benchmark the text reader: lines/s by wall and by CPU time (medians) and peak RSS on one text file.

Usage: .venv/bin/python scripts/bench_text.py [FILE] [RUNS]
(default: trace-cmd report -N -t -R of captures/arm64-vhe-cyclictest/trace.dat, made in /tmp; 3 runs)

The machine may be shared: CPU time (``time.process_time``, all threads of this process) is the
steadier figure. Peak RSS is that of this process over all runs, a fresh interpreter's first read
included (run it alone in a fresh process for a clean figure).
"""

from __future__ import annotations

import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

from kvmtrace.ingest.text.reader import read_text

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


def bench(path: Path, runs: int = 3) -> tuple[float, int, float]:
    """Median lines/s by wall time over ``runs`` reads, the line count, and median lines/s by CPU time."""
    lines = path.read_bytes().count(b"\n")
    walls = []
    cpus = []
    for _ in range(runs):
        start, cpu = time.perf_counter(), time.process_time()
        read_text(path)
        walls.append(time.perf_counter() - start)
        cpus.append(time.process_time() - cpu)
    return lines / statistics.median(walls), lines, lines / statistics.median(cpus)


def main() -> None:
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else default_text()
    runs = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    rate, lines, cpu_rate = bench(path, runs)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{path}: {lines} lines, {rate / 1e6:.2f} M lines/s wall, {cpu_rate / 1e6:.2f} M lines/s CPU "
          f"(medians of {runs})")
    print(f"peak RSS {peak_mb:.0f} MB")


if __name__ == "__main__":
    main()
