"""Workloads run under recording: cyclictest, any command, the microbenchmarks, and host load.

Each :class:`Workload` is one phase: its command line, the file its output goes to, and after it
ran, its exit code, parsed results and the result markers written into the trace
(``kvmtrace result ...`` lines and cyclictest's own ``T: 0 ( tid) P:..`` summary line).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
from dataclasses import dataclass, field, fields
from typing import Any

from kvmtrace.record.bench import find_program
from kvmtrace.record.tracefs import RecordError

KINDS = ("cyclictest", "cmd", "lat_mem_rd", "lat_pagefault")
_T_RE = re.compile(r"T:\s*\d+\s*\(\s*\d+\)\s*P:\s*\d+\s*I:\s*\d+\s*C:\s*\d+\s*Min:\s*\d+\s*Act:\s*\d+\s*"
                   r"Avg:\s*\d+\s*Max:\s*\d+")
_VERBOSE_RE = re.compile(r"^\s*(\d+):\s*(\d+):\s*(\d+)\s*$", re.MULTILINE)
_ANSI_RE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_MEM_RE = re.compile(r"^\s*([\d.]+)\s+([\d.]+)\s*$", re.MULTILINE)
_PF_RE = re.compile(r"Pagefaults on .*?:\s*([\d.]+)\s*microseconds")
# A CPU hog that also ends when its recorder is gone (even killed with SIGKILL): it spins
# while its parent is still the recorder whose pid is its last argument.
_BUILTIN_HOG = ("import os, sys\nrecorder = int(sys.argv[-1])\nwhile os.getppid() == recorder:\n"
                "    for _ in range(200000):\n        pass\n")


@dataclass
class Workload:
    """One workload run = one phase of the capture."""

    kind: str
    phase: str
    argv: list[str]
    output: str  # file name in the capture directory
    params: dict[str, Any] = field(default_factory=dict)
    echo: bool = False
    exit_code: int | None = None
    start_ns: int | None = None
    end_ns: int | None = None
    results: dict[str, Any] = field(default_factory=dict)
    markers: list[str] = field(default_factory=list)
    tids: list[int] = field(default_factory=list)
    cleanup: list[str] = field(default_factory=list)

    def manifest(self) -> dict[str, Any]:
        return {"kind": self.kind, "phase": self.phase, "argv": self.argv, "params": self.params,
                "output": self.output, "exit_code": self.exit_code, "start_ns": self.start_ns,
                "end_ns": self.end_ns, "results": self.results}


@dataclass
class WorkloadParams:
    """The tunables of the built-in workloads (``kvmtrace record`` options carry them too)."""

    loops: int = 1000
    interval_us: int = 30000
    priority: int = 99
    histogram_us: int = 10000
    breaktrace_us: int | None = None
    phase: str | None = None
    bench_dir: str | None = None
    bench_size_mb: float = 256
    bench_stride: int = 64
    pagefault_mb: float = 64
    prefer_lmbench: bool = True

    def params(self) -> dict[str, Any]:
        """These tunables as keyword arguments (e.g. from RecordOptions into WorkloadConfig)."""
        return {f.name: getattr(self, f.name) for f in fields(WorkloadParams)}


@dataclass
class WorkloadConfig(WorkloadParams):
    """The workloads of one recording: which, their arguments, where their output goes."""

    kinds: list[str] = field(default_factory=list)
    args: list[str] = field(default_factory=list)
    capture_dir: str = ""


def build(cfg: WorkloadConfig) -> list[Workload]:
    """The workloads in run order; RecordError when one cannot run here."""
    owner = "cmd" if "cmd" in cfg.kinds else "cyclictest"
    out: list[Workload] = []
    for kind in cfg.kinds:
        args = cfg.args if kind == owner else []
        if kind == "cyclictest":
            out.append(_cyclictest(cfg, args))
        elif kind == "cmd":
            out.append(_cmd(cfg, args))
        elif kind == "lat_mem_rd":
            out.extend(_mem(cfg, pattern) for pattern in ("seq", "random"))
        elif kind == "lat_pagefault":
            out.append(_pagefault(cfg))
        else:
            raise RecordError(f"unknown workload {kind!r}: expected one of {', '.join(KINDS)}")
    if cfg.args and owner not in cfg.kinds:
        raise RecordError("arguments after -- need --workload cmd or --workload cyclictest")
    return out


def _need(tool: str, package: str) -> str:
    path = shutil.which(tool)
    if not path:
        raise RecordError(f"{tool} not found on PATH (install {package})")
    return path


def _cyclictest(cfg: WorkloadConfig, args: list[str]) -> Workload:
    exe = _need("cyclictest", "rt-tests")
    json_path = os.path.join(cfg.capture_dir, "cyclictest.json")
    if args:
        argv = [exe, *args]
        params: dict[str, Any] = {"args": args}
    else:
        argv = [exe, "-m", "-p", str(cfg.priority), "-i", str(cfg.interval_us), "-l", str(cfg.loops),
                "-h", str(cfg.histogram_us), "-v"]
        params = {"policy": "SCHED_FIFO", "priority": cfg.priority, "interval_us": cfg.interval_us,
                  "loops": cfg.loops, "mlockall": True, "histogram_us": cfg.histogram_us, "verbose": True}
        if cfg.breaktrace_us:
            argv += ["-b", str(cfg.breaktrace_us), "--tracemark"]
            params["breaktrace_us"] = cfg.breaktrace_us
    if not any(a.startswith("--json") for a in argv):
        argv.append(f"--json={json_path}")
    return Workload("cyclictest", cfg.phase or "cyclictest", argv, "cyclictest.txt", params)


def _cmd(cfg: WorkloadConfig, args: list[str]) -> Workload:
    if not args:
        raise RecordError("--workload cmd needs a command after --")
    return Workload("cmd", cfg.phase or "cmd", list(args), "cmd.txt", {"command": list(args)}, echo=True)


def _mem(cfg: WorkloadConfig, pattern: str) -> Workload:
    path, provider = find_program("lat_mem_rd", cfg.bench_dir, os.path.join(cfg.capture_dir, "bench"),
                                  cfg.prefer_lmbench)
    size = f"{cfg.bench_size_mb:g}"
    if provider == "lmbench":
        argv = [path, *(["-t"] if pattern == "random" else []), "-P", "1", size, str(cfg.bench_stride)]
    else:
        argv = [path, *(["-r"] if pattern == "random" else []), "-s", str(cfg.bench_stride), size]
    params = {"pattern": pattern, "size_mb": cfg.bench_size_mb, "stride": cfg.bench_stride, "provider": provider}
    return Workload("lat_mem_rd", f"lat_mem_rd_{pattern}", argv, f"lat_mem_rd_{pattern}.txt", params)


def _pagefault(cfg: WorkloadConfig) -> Workload:
    path, provider = find_program("lat_pagefault", cfg.bench_dir, os.path.join(cfg.capture_dir, "bench"),
                                  cfg.prefer_lmbench)
    data = os.path.join(cfg.capture_dir, "lat_pagefault.data")
    argv = [path, "-P", "1", data] if provider == "lmbench" else [path, "-s", f"{cfg.pagefault_mb:g}", data]
    wl = Workload("lat_pagefault", "lat_pagefault", argv, "lat_pagefault.txt",
                  {"file_mb": cfg.pagefault_mb, "provider": provider})
    wl.cleanup.append(data)
    if provider == "lmbench":  # LMbench maps an existing file
        with open(data, "wb") as fh:
            fh.truncate(int(cfg.pagefault_mb * 1024 * 1024))
    return wl


# --------------------------------------------------------------------------- results


def finish(wl: Workload, text: str) -> None:
    """Fill ``results`` and ``markers`` from the workload's output."""
    if wl.kind == "cyclictest":
        _cyclictest_results(wl, text)
    elif wl.kind == "lat_mem_rd":
        rows = _MEM_RE.findall(text)
        if rows:
            wl.results = {"size_mb": float(rows[-1][0]), "latency_ns": float(rows[-1][1])}
            wl.markers.append(f"kvmtrace result lat_mem_rd pattern={wl.params['pattern']} "
                              f"size_mb={rows[-1][0]} stride={wl.params['stride']} latency_ns={rows[-1][1]}")
    elif wl.kind == "lat_pagefault":
        m = _PF_RE.search(text)
        if m:
            wl.results = {"us_per_fault": float(m.group(1))}
            wl.markers.append(f"kvmtrace result lat_pagefault kind=file us_per_fault={m.group(1)}")
    for path in wl.cleanup:
        if os.path.exists(path):
            os.unlink(path)


def _cyclictest_results(wl: Workload, text: str) -> None:
    clean = _ANSI_RE.sub("", text)
    lines = [m.group(0) for line in re.split(r"[\r\n]", clean) for m in [_T_RE.search(line)] if m]
    json_arg = next((a.split("=", 1)[1] for a in wl.argv if a.startswith("--json=")), None)
    data = _load_json(json_arg)
    if data:
        wl.results = {"threads": data.get("thread", {}), "return_code": data.get("return_code")}
    if lines:
        last: dict[str, str] = {}
        for line in lines:
            last[line.split("(")[0]] = line
        wl.markers.extend(last.values())
    elif data:
        wl.markers.extend(_summary_from_json(wl, data, clean))
    hist = re.search(r"^# Max Latencies:.*$", clean, re.MULTILINE)
    if hist:
        wl.results["histogram_max_line"] = hist.group(0)


def _load_json(path: str | None) -> dict[str, Any] | None:
    if not path or not os.path.exists(path):
        return None
    try:
        with open(path) as fh:
            data = json.load(fh)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _option(argv: list[str], short: str, long: str, default: int) -> int:
    for i, arg in enumerate(argv):
        value = None
        if arg in (short, long) and i + 1 < len(argv):
            value = argv[i + 1]
        elif arg.startswith(long + "="):
            value = arg.split("=", 1)[1]
        elif arg.startswith(short) and len(arg) > 2 and not arg.startswith("--"):
            value = arg[2:]
        if value is not None and value.isdigit():
            return int(value)
    return default


def _summary_from_json(wl: Workload, data: dict[str, Any], text: str) -> list[str]:
    """cyclictest's ``T:`` line rebuilt from --json (it prints none with -h)."""
    prio = _option(wl.argv, "-p", "--priority", 0)
    interval = _option(wl.argv, "-i", "--interval", 1000)
    act: dict[int, int] = {}
    for thread, _loop, value in _VERBOSE_RE.findall(text):
        act[int(thread)] = int(value)
    out = []
    for key, t in sorted(data.get("thread", {}).items(), key=lambda kv: int(kv[0])):
        n = int(key)
        tid = wl.tids[n] if n < len(wl.tids) else 0
        out.append(f"T:{n:2d} ({tid:5d}) P:{prio:2d} I:{interval} C:{int(t.get('cycles', 0)):7d} "
                   f"Min:{int(t.get('min', 0)):7d} Act:{act.get(n, 0):5d} Avg:{round(float(t.get('avg', 0))):5d} "
                   f"Max:{int(t.get('max', 0)):8d}")
    return out


# --------------------------------------------------------------------------- host load


def load_commands(tool: str, workers: int) -> tuple[list[list[str]], dict[str, Any]]:
    """Processes that load every CPU (or ``workers`` of them): stress-ng, else built-in CPU hogs."""
    ncpu = os.cpu_count() or 1
    stress = shutil.which("stress-ng") if tool in ("auto", "stress-ng") else None
    if tool == "stress-ng" and not stress:
        raise RecordError("--load-tool stress-ng: stress-ng not found (apt-get install stress-ng)")
    if stress:
        argv = [stress, "--cpu", str(workers or 0), "--quiet"]
        return [argv], {"tool": "stress-ng", "argv": argv, "workers": workers or ncpu}
    n = workers or ncpu
    # The trailing arguments name the hog and its recorder in `ps`, and let a check find the
    # hogs of one recording even after they were re-parented.
    argv = [sys.executable, "-c", _BUILTIN_HOG, "kvmtrace-load", str(os.getpid())]
    return [argv] * n, {"tool": "builtin", "argv": argv, "workers": n}
