"""What each model and analysis needs from a capture, declared where it is defined.

``@requires_events("kvm:kvm_entry", "kvm:kvm_exit", analysis="exits")`` on a function whose first
argument is an ``EventTables`` (or has ``.tables``, like a ``Capture``) checks the capture before the
function runs and raises one ``MissingEventsError`` naming every missing event and how to record it
(``any_of=True``: one of them is enough). The declarations are collected in ``REQUIRED_EVENTS``
(analysis -> events), which docs and ``kvmtrace info`` can list. In the spirit of LISA's
``@requires_events``. Each call also reports its step (kvmtrace.progress) for a progress display.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

from kvmtrace.errors import MissingEventsError
from kvmtrace.ingest.tables import EventTables
from kvmtrace.progress import step

P = ParamSpec("P")
R = TypeVar("R")
REQUIRED_EVENTS: dict[str, tuple[str, ...]] = {}


def missing_events(t: EventTables, events: tuple[str, ...] | list[str], any_of: bool = False) -> list[str]:
    """The ``system:event`` names of ``events`` the capture lacks (none when ``any_of`` and one is there)."""
    missing = [e for e in events if not t.has(e.split(":")[-1])]
    return [] if any_of and len(missing) < len(events) else missing


def require(source: Any, analysis: str, events: tuple[str, ...] | list[str], hint: str = "",
            any_of: bool = False) -> None:
    """MissingEventsError naming the missing events of ``events`` (see ``requires_events``);
    ``source`` is an ``EventTables`` or a ``Capture`` (the error names its path)."""
    t, path = (source, source.meta.path) if isinstance(source, EventTables) else (source.tables, source.path)
    missing = missing_events(t, events, any_of)
    if missing:
        raise MissingEventsError(path, analysis, missing,
                                 hint or "record with " + " ".join(f"-e {e}" for e in missing))


def requires_events(*events: str, analysis: str, hint: str = "", any_of: bool = False
                    ) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Declare (and check, before each call) the events a function needs from its first argument."""
    REQUIRED_EVENTS[analysis] = events

    def decorate(fn: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(fn)
        def checked(*args: P.args, **kwargs: P.kwargs) -> R:
            require(args[0], analysis, events, hint, any_of)
            step(analysis)
            return fn(*args, **kwargs)

        checked.required_events = events  # type: ignore[attr-defined]
        return checked

    return decorate
