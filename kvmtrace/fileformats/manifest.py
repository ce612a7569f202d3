"""capture.json (version 1) written with the standard library, in the layout kvmtrace.capture.Manifest reads.

Keys: ``kvmtrace_capture`` (the version), ``trace``, ``side``, ``host``, ``tracing``, ``workloads``,
``phases``, ``lost_events``, ``guest_memory``; anything else (the recorder's ``record`` block)
is appended after them and kept by the reader as ``Manifest.extra``.
"""

from __future__ import annotations

import json
import os
from typing import Any

MANIFEST_NAME = "capture.json"
MANIFEST_VERSION = 1
_ORDER = ("trace", "side", "host", "tracing", "workloads", "phases", "lost_events", "guest_memory")


def manifest_dict(fields: dict[str, Any]) -> dict[str, Any]:
    """The manifest with known keys first (defaults filled in), extra keys after them."""
    out: dict[str, Any] = {"kvmtrace_capture": MANIFEST_VERSION}
    defaults: dict[str, Any] = {"trace": "trace.dat", "side": "host", "host": {}, "tracing": {},
                                "workloads": [], "phases": [], "lost_events": {}, "guest_memory": []}
    for key in _ORDER:
        out[key] = fields.get(key, defaults[key])
    for key, value in fields.items():
        if key not in out:
            out[key] = value
    return out


def write_manifest(directory: str, fields: dict[str, Any]) -> str:
    """Write ``capture.json`` atomically; returns its path."""
    path = os.path.join(directory, MANIFEST_NAME)
    tmp = path + ".part"
    try:
        with open(tmp, "w") as fh:
            fh.write(json.dumps(manifest_dict(fields), indent=2) + "\n")
        os.replace(tmp, path)
    except OSError:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path
