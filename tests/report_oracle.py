"""Test oracle: `trace-cmd report -N -t -R` output, parsed line by line in plain Python (slow, simple)."""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

LINE_RE = re.compile(
    r"^(?:(?P<buffer>[^\s:]+): )?\s*(?P<comm>.*)-(?P<pid>\d+)\s+\[(?P<cpu>\d+)\]\s+"
    r"(?P<sec>\d+)\.(?P<ns>\d{9}): (?P<event>[^:\s]+):\s*(?P<rest>.*)$"
)
FIELD_RE = re.compile(r"(\w+)=\s*(\S*)")


@dataclass
class Report:
    ts: list[int] = field(default_factory=list)
    cpu: list[int] = field(default_factory=list)
    pid: list[int] = field(default_factory=list)
    comm: list[str] = field(default_factory=list)
    event: list[str] = field(default_factory=list)
    buffer: list[str] = field(default_factory=list)
    rest: list[str] = field(default_factory=list)
    lost_lines: list[str] = field(default_factory=list)


@lru_cache(maxsize=8)
def report(path: str) -> Report:
    out = subprocess.run(["trace-cmd", "report", "-N", "-t", "-R", "-i", path],
                         check=True, capture_output=True, text=True, errors="replace").stdout
    rep = Report()
    for line in out.splitlines():
        m = LINE_RE.match(line)
        if not m:
            if "LOST" in line:
                rep.lost_lines.append(line)
            continue
        rep.ts.append(int(m["sec"]) * 1_000_000_000 + int(m["ns"]))
        rep.cpu.append(int(m["cpu"]))
        rep.pid.append(int(m["pid"]))
        rep.comm.append(m["comm"].strip())
        rep.event.append(m["event"])
        rep.buffer.append(m["buffer"] or "")
        rep.rest.append(m["rest"])
    return rep


def parse_fields(rest: str) -> dict[str, str]:
    """name=value pairs of a -R line; values may be padded (`cval=      0x1721b0e8`)."""
    return {k: v for k, v in FIELD_RE.findall(rest)}


def as_int(text: str) -> int:
    return int(text, 0) if text.lower().startswith(("0x", "-0x")) else int(text)


def have_trace_cmd() -> bool:
    try:
        subprocess.run(["trace-cmd", "--version"], capture_output=True, check=False)
    except FileNotFoundError:
        return False
    return True


CAPTURES = Path(__file__).resolve().parent.parent / "captures"
