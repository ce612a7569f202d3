"""What each tier of the text reader earns: lines/s with tiers switched off one at a time.

The text reader parses line prefixes in tiers (the file's column layouts: ``modal``, in C or numpy;
the exact regexes: ``exact``) and ``-R`` payloads in tiers (the C kernels: ``native``; numpy 8-byte
words: ``compact``; the exact polars parser: ``exact``). Each configuration runs in a fresh
interpreter (median of RUNS reads after one warm-up read) on the same file:

    native         KVMTRACE_ENGINE=native, every tier
    numpy          KVMTRACE_ENGINE=numpy, every numpy tier
    numpy-exact    numpy, prefixes by the exact reader only (no modal tier)
    numpy-payload  numpy without the compact payload tier (payloads by the exact parser)

A tier stays when switching it off costs time on the texts tried. A third prefix tier (a windowed
numpy parser between modal and exact) was measured this way and removed: 0.93-1.12x.

Usage: .venv/bin/python scripts/bench_text_tiers.py [FILE ...] [--runs N]
(default: the bundled VHE capture as ``trace-cmd report -N -t -R`` and as plain ``trace-cmd report``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CAPTURE = ROOT / "captures" / "arm64-vhe-cyclictest" / "trace.dat"
CONFIGS = ("native", "numpy", "numpy-exact", "numpy-payload")

CHILD = r"""
import json, sys, time
from kvmtrace.ingest.text import reader
off = set(sys.argv[2].split(",")) - {""}
if "prefixes" in off:
    reader._prefixes = lambda text, starts, ends: None
if "compact" in off:
    reader.fast_payload = lambda *args, **kwargs: None
times = []
for _ in range(int(sys.argv[3]) + 1):
    t = time.perf_counter()
    tables = reader.read_text(sys.argv[1])
    times.append(time.perf_counter() - t)
print(json.dumps({"events": tables.events.height, "times": times[1:]}))
"""
SWITCHES = {"native": ("native", ""), "numpy": ("numpy", ""), "numpy-exact": ("numpy", "prefixes"),
            "numpy-payload": ("numpy", "compact")}


def default_texts() -> list[Path]:
    out = []
    for name, args in (("R", ["-N", "-t", "-R"]), ("plain", [])):
        path = Path(f"/tmp/kvmtrace-tiers-vhe-{name}.txt")
        if not path.exists():
            with path.open("wb") as fh:
                subprocess.run(["trace-cmd", "report", *args, "-i", str(CAPTURE)], stdout=fh,
                               stderr=subprocess.DEVNULL, check=True)
        out.append(path)
    return out


def run(path: Path, config: str, runs: int) -> tuple[int, float]:
    engine, off = SWITCHES[config]
    env = {**os.environ, "KVMTRACE_ENGINE": engine, "PYTHONPATH": str(ROOT)}
    res = subprocess.run([sys.executable, "-c", CHILD, str(path), off, str(runs)], capture_output=True, text=True,
                         env=env, check=True)
    doc = json.loads(res.stdout.strip().splitlines()[-1])
    return int(doc["events"]), statistics.median(doc["times"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("files", nargs="*", type=Path)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    for path in args.files or default_texts():
        lines = path.read_bytes().count(b"\n")
        print(f"\n{path}: {lines:,} lines, median of {args.runs} reads after a warm-up, each in a fresh process")
        print(f"{'configuration':<15} {'events':>10} {'read s':>8} {'M lines/s':>10} {'vs numpy':>9}")
        base = None
        for config in CONFIGS:
            events, seconds = run(path, config, args.runs)
            base = seconds if config == "numpy" else base
            ratio = f"{seconds / base:.2f}x" if base else ""
            print(f"{config:<15} {events:>10,} {seconds:>8.3f} {lines / seconds / 1e6:>10.2f} {ratio:>9}")


if __name__ == "__main__":
    main()
