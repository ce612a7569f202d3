"""SIGINT, SIGTERM and SIGHUP as an exception, with sections where they wait (spawning, cleanup)."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Interrupted(BaseException):
    """A stop signal arrived; ``signum`` says which."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(signal.Signals(signum).name)

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name


class SignalGuard:
    """Turns stop signals into :class:`Interrupted`, except inside :meth:`shielded` or after :meth:`hold`."""

    def __init__(self) -> None:
        self.received: list[int] = []
        self._depth = 0
        self._held = False
        self._old: dict[int, Any] = {}

    def install(self) -> None:
        for sig in SIGNALS:
            self._old[sig] = signal.signal(sig, self._handler)

    def uninstall(self) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old.clear()

    def _handler(self, signum: int, frame: Any) -> None:
        self.received.append(signum)
        if self._depth == 0 and not self._held:
            raise Interrupted(signum)

    def hold(self) -> None:
        """From now on signals are only noted (the cleanup must finish)."""
        self._held = True

    @contextmanager
    def shielded(self) -> Iterator[None]:
        """A section that a signal must not cut in half; the signal is raised at its end."""
        self._depth += 1
        before = len(self.received)
        try:
            yield
        finally:
            self._depth -= 1
        if self._depth == 0 and not self._held and len(self.received) > before:
            raise Interrupted(self.received[-1])
