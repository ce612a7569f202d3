"""The schema of ``capture.json`` (version 1, docs/capture.md): what type each known key holds.

``validate`` returns the first problem as ``(key path, what was expected)``, e.g.
``("phases[0].start_ns", "expected an integer number of ns, got 'abc'")``. Unknown keys are allowed
(kept as they are); known keys must have their type; nesting is limited.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import PurePosixPath
from typing import Any

from kvmtrace.fileformats.manifest import MANIFEST_VERSION

MAX_MANIFEST_BYTES = 1 << 20  # the largest capture.json read
MAX_MANIFEST_DEPTH = 32  # the deepest nesting accepted
INT64 = (-(1 << 63), (1 << 63) - 1)
UINT64 = (0, (1 << 64) - 1)
Problem = tuple[str, str]
Check = Callable[[str, Any], Problem | None]


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def integer(low: int, high: int, what: str = "an integer", nullable: bool = False) -> Check:
    def check(key: str, value: Any) -> Problem | None:
        if value is None and nullable:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            return key, f"expected {what} from {low} to {high}, got {_shown(value)}"
        return None

    return check


def address(what: str) -> Check:
    """A 64-bit unsigned number, or its text ("0x40000000"), as the faults model reads it."""
    def check(key: str, value: Any) -> Problem | None:
        number = value
        if isinstance(value, str) and len(value) <= 24:
            with contextlib.suppress(ValueError):
                number = int(value, 0)
        return integer(*UINT64, what)(key, number) and (key, f"expected {what} (a number or its text, 0 to "
                                                               f"{UINT64[1]}), got {_shown(value)}")

    return check


def text(choices: tuple[str, ...] = (), nonempty: bool = True) -> Check:
    def check(key: str, value: Any) -> Problem | None:
        if not isinstance(value, str) or (nonempty and not value) or "\0" in value:
            return key, f"expected a non-empty string, got {_shown(value)}"
        if choices and value not in choices:
            return key, f"expected one of {', '.join(choices)}, got {_shown(value)}"
        return None

    return check


def relative_path(key: str, value: Any) -> Problem | None:
    problem = text()(key, value)
    if problem:
        return problem
    parts = PurePosixPath(value).parts
    if PurePosixPath(value).is_absolute() or ".." in parts:
        return key, f"expected a file name inside the capture folder, got {_shown(value)}"
    return None


def obj(fields: dict[str, Check] | None = None, required: tuple[str, ...] = ()) -> Check:
    def check(key: str, value: Any) -> Problem | None:
        if not isinstance(value, dict):
            return key, f"expected an object, got {_shown(value)}"
        for name in required:
            if name not in value:
                return key, f"expected a '{name}' key"
        for name, sub in (fields or {}).items():
            if name in value:
                problem = sub(f"{key}.{name}", value[name])
                if problem:
                    return problem
        return None

    return check


def array(item: Check) -> Check:
    def check(key: str, value: Any) -> Problem | None:
        if not isinstance(value, list):
            return key, f"expected an array, got {_shown(value)}"
        for k, element in enumerate(value):
            problem = item(f"{key}[{k}]", element)
            if problem:
                return problem
        return None

    return check


def counts(key: str, value: Any) -> Problem | None:
    """{"<cpu>": count}: decimal CPU numbers to counts."""
    if not isinstance(value, dict):
        return key, f"expected an object of CPU -> count, got {_shown(value)}"
    for cpu, n in value.items():
        if not (cpu.isascii() and cpu.isdigit() and len(cpu) <= 5):
            return f"{key}.{cpu}", "expected a CPU number as the key"
        problem = integer(0, INT64[1], "a count")(f"{key}.{cpu}", n)
        if problem:
            return problem
    return None


SCHEMA: dict[str, Check] = {
    "kvmtrace_capture": integer(1, MANIFEST_VERSION, "the capture.json version"),
    "trace": relative_path,
    "side": text(("host", "guest")),
    "host": obj(),
    "tracing": obj(),
    "workloads": array(obj()),
    "phases": array(obj({"name": text(), "start_ns": integer(*INT64, "a time in ns", nullable=True),
                         "end_ns": integer(*INT64, "a time in ns", nullable=True)}, required=("name",))),
    "phase_pattern": text(),
    "lost_events": counts,
    "guest_memory": array(obj({"name": text(), "start": address("an address"),
                               "size": address("a size in bytes")}, required=("start", "size"))),
}


def depth(value: Any, limit: int = MAX_MANIFEST_DEPTH) -> bool:
    """``value`` nests at most ``limit`` levels of arrays and objects (iteratively: no recursion)."""
    todo = [(value, 1)]
    while todo:
        item, level = todo.pop()
        if isinstance(item, (dict, list)):
            if level > limit:
                return False
            todo.extend((v, level + 1) for v in (item.values() if isinstance(item, dict) else item))
    return True


def validate(doc: Any) -> Problem | None:
    """The first problem of a parsed capture.json, or None."""
    if not isinstance(doc, dict):
        return "top level", f"expected a JSON object, got {_shown(doc)}"
    if "kvmtrace_capture" not in doc:
        return "kvmtrace_capture", "expected this version key (a capture.json of kvmtrace)"
    if not depth(doc):
        return "top level", f"expected at most {MAX_MANIFEST_DEPTH} levels of nesting"
    for key, check in SCHEMA.items():
        if key in doc:
            problem = check(key, doc[key])
            if problem:
                return problem
    return None
