"""``kvmtrace record --from-raw RAW -o DIR``: the capture from a raw directory (scripts/record.sh output).

record.sh leaves ``raw/`` (see :mod:`kvmtrace.record.rawdir`) plus workload outputs; its
``raw/info`` key=value facts become capture.json. The same path rescues the ``raw/`` a Python
recording left behind when ``trace.dat`` could not be written.
"""

from __future__ import annotations

import os
import shutil
import sys
from typing import Any

from kvmtrace.fileformats.manifest import MANIFEST_NAME, write_manifest
from kvmtrace.record.assemble import assemble, cpu_stats, lost_from_stats, read_info
from kvmtrace.record.options import RecordOptions
from kvmtrace.record.tracefs import RecordError

_HOST_KEYS = ("kernel", "uname", "arch", "cpu_model", "cpus", "kvm_mode", "hostname")
_HOST_INT_KEYS = ("sched_rt_runtime_us", "sched_rt_period_us")


def _split(value: str) -> list[str]:
    return [x for x in value.replace(",", " ").split() if x]


def manifest_from_info(info: dict[str, str], raw: str) -> dict[str, Any]:
    """capture.json fields from record.sh's ``raw/info``."""
    host: dict[str, Any] = {k: info[k] for k in _HOST_KEYS if k in info}
    host.update({k: _int(info.get(k)) for k in _HOST_INT_KEYS if k in info})
    tracing = {"clock": info.get("clock"), "events": _split(info.get("events", "")),
               "missing_events": _split(info.get("missing_events", "")),
               "buffer_size_kb": int(info["buffer_size_kb"]) if info.get("buffer_size_kb", "").isdigit() else None,
               "instance": info.get("instance"), "recorder": info.get("recorder", "record.sh")}
    workloads = []
    if info.get("workload"):
        workloads.append({"kind": info["workload"], "phase": info.get("phase", info["workload"]),
                          "argv": info.get("workload_argv", ""), "exit_code": _int(info.get("exit_code")),
                          "output": info.get("workload_output")})
    record = {"status": info.get("status", "unknown"), "started": info.get("started"),
              "ended": info.get("ended"), "recorder": info.get("recorder", "record.sh"), "converted_from": raw}
    return {"side": info.get("side", "host"), "host": host, "tracing": tracing, "workloads": workloads,
            "lost_events": lost_from_stats(cpu_stats(raw)), "record": record}


def _int(value: str | None) -> int | None:
    return int(value) if value and value.lstrip("-").isdigit() else None


def convert(opts: RecordOptions) -> int:
    """Assemble trace.dat and capture.json into ``opts.output``; exit code 0 or 2."""
    raw = os.path.abspath(opts.from_raw or "")
    out = os.path.abspath(opts.output)
    try:
        if not os.path.exists(os.path.join(raw, "header_page")):
            raise RecordError(f"{raw}: not a raw capture directory (no header_page)")
        os.makedirs(out, exist_ok=True)
        assemble(raw, os.path.join(out, "trace.dat"))
        manifest_path = os.path.join(out, MANIFEST_NAME)
        if not os.path.exists(manifest_path):
            write_manifest(out, manifest_from_info(read_info(raw), raw))
        _copy_outputs(raw, out)
    except RecordError as exc:
        sys.stderr.write(f"kvmtrace record: {exc}\n")
        return 2
    except OSError as exc:
        sys.stderr.write(f"kvmtrace record: {out}: {exc.strerror or exc}\n")
        return 2
    if not opts.quiet:
        sys.stderr.write(f"kvmtrace record: wrote {out}/trace.dat and {MANIFEST_NAME}\n")
    return 0


def _copy_outputs(raw: str, out: str) -> None:
    """Workload outputs record.sh kept in raw/out/ go next to trace.dat."""
    src = os.path.join(raw, "out")
    if os.path.isdir(src):
        for name in os.listdir(src):
            shutil.copy(os.path.join(src, name), os.path.join(out, name))
