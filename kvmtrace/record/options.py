"""The options of ``kvmtrace record`` and their argparse parser (standard library only)."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field

from kvmtrace.record.events import PRESETS
from kvmtrace.record.workloads import KINDS, WorkloadParams

DEFAULT_BUFFER_KB = 8192


@dataclass
class RecordOptions(WorkloadParams):
    """Everything one recording needs to know (the workload tunables come from WorkloadParams)."""

    output: str = ""
    workloads: list[str] = field(default_factory=list)
    args: list[str] = field(default_factory=list)
    presets: list[str] = field(default_factory=lambda: ["latency"])
    events: list[str] = field(default_factory=list)
    filters: list[str] = field(default_factory=list)  # "EVENT=EXPR"
    vcpu_pids: list[int] = field(default_factory=list)
    buffer_kb: int = DEFAULT_BUFFER_KB
    clock: str = "mono"
    cpus: list[int] | None = None
    duration: float | None = None
    side: str = "auto"
    load: bool = False
    load_tool: str = "auto"
    load_workers: int = 0
    kallsyms: bool = True
    keep_raw: bool = False
    tracefs: str | None = None
    from_raw: str | None = None
    cleanup_stale: bool = False
    quiet: bool = False
    command_line: list[str] = field(default_factory=list)


def _cpu_list(text: str) -> list[int]:
    """``0,2-3`` -> [0, 2, 3]."""
    cpus: list[int] = []
    for part in text.split(","):
        lo, _, hi = part.strip().partition("-")
        cpus.extend(range(int(lo), int(hi or lo) + 1))
    return sorted(set(cpus))


def _pid_list(text: str) -> list[int]:
    return [int(p) for p in text.replace(" ", ",").split(",") if p]


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="kvmtrace record",
        description="Record an ftrace capture (trace.dat + capture.json) in a private tracefs instance, "
                    "optionally around a workload. Arguments after -- go to the cmd or cyclictest workload.")
    p.add_argument("-o", "--output", required=True, help="capture directory to create (must be new or empty)")
    p.add_argument("--workload", action="append", choices=KINDS, default=[],
                   help="run this workload as a phase (repeatable, run in order)")
    p.add_argument("-p", "--preset", default="latency",
                   help=f"event presets, comma separated: {', '.join(PRESETS)} (default latency)")
    p.add_argument("-e", "--event", action="append", default=[], help="also enable SYSTEM:EVENT, EVENT or SYSTEM")
    p.add_argument("--filter", dest="filters", action="append", default=[], metavar="EVENT=EXPR",
                   help="ftrace filter for an event, e.g. 'kvm:kvm_exit=common_pid==1234'")
    p.add_argument("--vcpu-pids", type=_pid_list, default=[], help="keep kvm:* events of these threads only")
    p.add_argument("-b", "--buffer-kb", type=int, default=DEFAULT_BUFFER_KB, help="ring buffer per CPU, KB")
    p.add_argument("-C", "--clock", default="mono", help="trace clock (default mono: matches hrtimer fields)")
    p.add_argument("--cpus", type=_cpu_list, help="trace these CPUs only, e.g. 0,2-3")
    p.add_argument("--duration", type=float, help="stop after this many seconds")
    p.add_argument("--side", choices=("auto", "host", "guest"), default="auto", help="host or guest view")
    _workload_args(p)
    p.add_argument("--no-kallsyms", dest="kallsyms", action="store_false", help="do not store /proc/kallsyms")
    p.add_argument("--keep-raw", action="store_true", help="keep raw/ (per-CPU pages and metadata) as well")
    p.add_argument("--tracefs", help="tracefs mount point (default: find or mount it)")
    p.add_argument("--from-raw", metavar="RAW_DIR",
                   help="do not record: build the capture from a raw directory (scripts/record.sh output)")
    p.add_argument("--cleanup-stale", action="store_true",
                   help="(the default now) instances left by recorders that no longer run are removed at start")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress lines, no workload echo")
    return p


def _workload_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("workloads")
    g.add_argument("--loops", type=int, default=1000, help="cyclictest loops (the study: 120000)")
    g.add_argument("--interval-us", type=int, default=30000, help="cyclictest interval (default 30000)")
    g.add_argument("--priority", type=int, default=99, help="cyclictest SCHED_FIFO priority (default 99)")
    g.add_argument("--histogram-us", type=int, default=10000, help="cyclictest -h buckets (default 10000)")
    g.add_argument("--breaktrace-us", type=int, help="cyclictest -b US --tracemark (marker when exceeded)")
    g.add_argument("--phase", help="phase name for the cmd or cyclictest workload")
    g.add_argument("--load", action="store_true", help="add host CPU load during the run")
    g.add_argument("--load-tool", choices=("auto", "stress-ng", "builtin"), default="auto")
    g.add_argument("--load-workers", type=int, default=0, help="load processes (default: one per CPU)")
    g.add_argument("--bench-dir", help="directory with prebuilt kvmtrace-lat_mem_rd / kvmtrace-lat_pagefault")
    g.add_argument("--bench-size-mb", type=float, default=256, help="lat_mem_rd region (default 256)")
    g.add_argument("--pagefault-mb", type=float, default=64, help="lat_pagefault file size (default 64)")
    g.add_argument("--no-lmbench", dest="prefer_lmbench", action="store_false",
                   help="use kvmtrace's programs even when LMbench is installed")


def parse(argv: list[str]) -> RecordOptions:
    """Parse a command line; everything after ``--`` is the workload's own arguments."""
    if "--" in argv:
        cut = argv.index("--")
        own, rest = argv[:cut], argv[cut + 1:]
    else:
        own, rest = argv, []
    ns = parser().parse_args(own)
    presets = [x.strip() for x in ns.preset.split(",") if x.strip()]
    values = {k: v for k, v in vars(ns).items() if k not in ("preset", "event", "workload")}
    return RecordOptions(presets=presets, events=ns.event, workloads=ns.workload, args=rest,
                         command_line=list(argv), **values)
