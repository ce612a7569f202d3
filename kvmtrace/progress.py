"""Which step a long command is in, for whoever shows progress (render/progress.py on a terminal).

Models and analyses say ``step("interrupts")`` as they start (``@requires_events`` does it for the
functions it wraps); nothing happens unless a command registered a reporter with ``reporting``. No
output, no dependency: the terminal side lives in the renderer.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

_state = threading.local()


def step(label: str) -> None:
    """Tell the current reporter (if any) that ``label`` starts now."""
    reporter: Callable[[str], None] | None = getattr(_state, "reporter", None)
    if reporter is not None:
        reporter(label)


@contextmanager
def reporting(reporter: Callable[[str], None]) -> Iterator[None]:
    """Send this thread's ``step`` calls to ``reporter`` while the block runs."""
    previous = getattr(_state, "reporter", None)
    _state.reporter = reporter
    try:
        yield
    finally:
        _state.reporter = previous
