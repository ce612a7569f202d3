#!/usr/bin/env python3
"""Run the structure-aware fuzzing campaign (tests/fuzz/campaign.py) and print its figures.

    scripts/fuzz/campaign.py --minutes 3                 # the short CI run
    nice -n 19 scripts/fuzz/campaign.py --minutes 40 --seed 7 --keep /tmp/failures   # a long run

Exit code 1 when any input crashed, hung, blew up memory, printed a traceback, was rejected without
the one-line message, or was read with event counts silently different from trace-cmd report.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.fuzz.campaign import Campaign, by_mutation, table
from tests.fuzz.runner import ForkExecutor, SubprocessExecutor


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, help="stop after this many minutes")
    ap.add_argument("--count", type=int, help="stop after this many inputs")
    ap.add_argument("--seed", type=int, default=1, help="campaign seed (same seed, same inputs)")
    ap.add_argument("--parallel", type=int, default=2, help="runs at a time")
    ap.add_argument("--numpy-share", type=float, default=0.25, help="share of inputs read with the numpy engine")
    ap.add_argument("--exec", choices=("fork", "subprocess"), default="fork",
                    help="fork from one process that imported kvmtrace (fast) or start python each run")
    ap.add_argument("--keep", type=Path, help="copy failing inputs (and their result.json) here")
    ap.add_argument("--json", type=Path, help="write every result here")
    args = ap.parse_args()
    if args.minutes is None and args.count is None:
        ap.error("give --minutes or --count")
    work = Path(tempfile.mkdtemp(prefix="kvmtrace-campaign-"))
    executor = ForkExecutor() if args.exec == "fork" else SubprocessExecutor()
    started = time.monotonic()
    campaign = Campaign(work, args.seed, executor, args.parallel, args.numpy_share, keep=args.keep)
    results = campaign.run(args.count, args.minutes, log=lambda line: print(line, flush=True))
    print(f"\n{len(results)} inputs in {time.monotonic() - started:.0f} s (seed {args.seed})\n")
    print(table(results))
    print()
    print(by_mutation(results))
    if args.json:
        args.json.write_text(json.dumps([r.__dict__ for r in results], indent=1) + "\n")
    shutil.rmtree(work, ignore_errors=True)
    if isinstance(executor, ForkExecutor):
        shutil.rmtree(executor.tmp, ignore_errors=True)
    return 1 if any(r.outcome not in ("exit2", "accepted") for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
