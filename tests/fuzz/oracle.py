"""Event counts of ``trace-cmd report`` for an input kvmtrace accepted, to find silent differences."""

from __future__ import annotations

import json
import re
import resource
import shutil
import subprocess
from collections import Counter
from dataclasses import dataclass

from tests.fuzz.runner import MEMORY_LIMIT

# a time with or without its dot: a clock trace-cmd does not know in ns prints raw counter values
_EVENT_RE = re.compile(rb"^(?:\S+: )?\s*.*-\d+\s+\[\d+\]\s+\d+(?:\.\d+)?: ([^:\s]+):", re.MULTILINE)


@dataclass
class Comparison:
    """kvmtrace's and trace-cmd's event counts of one input."""

    ours: Counter[str]
    theirs: Counter[str]
    explained: bool  # kvmtrace reported skipped regions or unknown events for the difference

    @property
    def differs(self) -> bool:
        return self.ours != self.theirs

    @property
    def silent(self) -> bool:
        return self.differs and not self.explained

    def describe(self) -> str:
        keys = sorted(set(self.ours) | set(self.theirs), key=lambda k: -abs(self.ours[k] - self.theirs[k]))
        parts = [f"{k}: {self.ours[k]} vs {self.theirs[k]}" for k in keys if self.ours[k] != self.theirs[k]]
        return f"kvmtrace {sum(self.ours.values())} vs trace-cmd {sum(self.theirs.values())} events; " + \
            ", ".join(parts[:4])


def have_trace_cmd() -> bool:
    return shutil.which("trace-cmd") is not None


def trace_cmd_counts(path: str, timeout: float = 60.0) -> Counter[str] | None:
    """Events per name as ``trace-cmd report`` prints them, or None when it does not read the file (an
    error, or not one event printed: a damaged metadata section can make it print nothing, exit 0)."""
    try:
        proc = subprocess.run(["trace-cmd", "report", "-N", "-t", "-R", "-i", path], capture_output=True,
                              timeout=timeout, check=False, stdin=subprocess.DEVNULL,
                              preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT)))
    except subprocess.TimeoutExpired:
        return None
    if proc.returncode != 0:
        return None
    counts: Counter[str] = Counter()
    for m in _EVENT_RE.finditer(proc.stdout):
        name = m.group(1).decode("utf-8", "replace")
        counts[name] += 1
    return counts or None  # no event at all: trace-cmd did not read it (it can fail with exit code 0)


def our_counts(info_json: str) -> tuple[Counter[str], bool] | None:
    """Events per name from ``kvmtrace info --json``, and whether its read report notes damage."""
    try:
        doc = json.loads(info_json)
    except ValueError:
        return None
    if doc.get("format", {}).get("kind") != "trace.dat":
        return None
    counts: Counter[str] = Counter()
    for name, n in doc["events"]["per_type"].items():
        m = re.fullmatch(r"unknown_type_(\d+)", name)
        counts["[UNKNOWN" if m else name] += int(n)
    read = doc.get("read", {})
    explained = bool(read.get("skipped") or read.get("unknown_events"))
    return counts, explained


def compare(path: str, info_json: str) -> Comparison | None:
    """The comparison for an accepted trace.dat, or None when trace-cmd does not read it."""
    ours = our_counts(info_json)
    if ours is None:
        return None
    theirs = trace_cmd_counts(path)
    if theirs is None:
        return None
    return Comparison(ours[0], theirs, ours[1])
