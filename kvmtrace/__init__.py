"""kvmtrace: explain where a KVM guest's latency comes from, from ftrace captures.

From Python: ``cap = kvmtrace.open(path)``; ``cap.interrupts()``, ``cap.blame()``, ``cap.exits()``,
``cap.faults()``, ``cap.vcpus()``, ``cap.wakeups()``, ``cap.events(name)`` return polars DataFrames
(kvmtrace/api.py, docs/api.md).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from kvmtrace.api import OpenCapture


def open(path: Any, use_cache: bool = True) -> OpenCapture:
    """Open a capture for analysis from Python (kvmtrace/api.py)."""
    from kvmtrace.api import open as open_api

    return open_api(path, use_cache)
