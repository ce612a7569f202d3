"""Progress on stderr, on a terminal only, once a step has taken more than about a second: a bar for
reading (LazyProgress), a spinner naming the model or analysis being computed (StepSpinner)."""

from __future__ import annotations

import threading
import time
from types import TracebackType

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.status import Status

from kvmtrace.progress import reporting

_bars = threading.Event()  # set while a LazyProgress bar is on screen (one live display at a time)


class LazyProgress:
    """Callable ``(stage, fraction)``; shows a rich bar after ``delay`` seconds, hides it at the end."""

    def __init__(self, label: str, delay: float = 1.0, console: Console | None = None) -> None:
        self.label = label
        self.delay = delay
        self.started = time.monotonic()
        self.console = console or Console(stderr=True)
        self.progress: Progress | None = None
        self.task = TaskID(0)

    def __call__(self, stage: str, fraction: float) -> None:
        if self.progress is None:
            if time.monotonic() - self.started < self.delay or not self.console.is_terminal:
                return
            self.progress = Progress(TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(),
                                     console=self.console, transient=True)
            _bars.set()
            self.progress.start()
            self.task = self.progress.add_task(self.label, total=1.0)
        self.progress.update(self.task, completed=fraction, description=f"{self.label}: {stage}")

    def __enter__(self) -> LazyProgress:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self.progress is not None:
            self.progress.stop()
            _bars.clear()


class StepSpinner:
    """While the block runs, ``kvmtrace.progress.step`` labels are shown as ``label: step`` in a spinner
    that a timer starts after ``delay`` seconds (so quick commands print nothing), on a terminal only;
    it is removed at the end."""

    def __init__(self, label: str, delay: float = 1.0, console: Console | None = None) -> None:
        self.label = label
        self.delay = delay
        self.console = console or Console(stderr=True)
        self.current = ""
        self.status: Status | None = None
        self.lock = threading.Lock()
        self.timer: threading.Timer | None = self._timer(delay)
        self._reporting = reporting(self._step)

    def _timer(self, delay: float) -> threading.Timer:
        timer = threading.Timer(delay, self._show)
        timer.daemon = True
        return timer

    def _text(self) -> str:
        return f"{self.label}: {self.current}" if self.current else self.label

    def _show(self) -> None:
        with self.lock:
            if self.status is not None or self.timer is None:
                return
            if _bars.is_set():  # a reading bar is up: try again in a moment
                self.timer = self._timer(self.delay / 2)
                self.timer.start()
                return
            self.status = Status(self._text(), console=self.console)
            self.status.start()

    def _step(self, label: str) -> None:
        with self.lock:
            self.current = label
            if self.status is not None:
                self.status.update(self._text())

    def __enter__(self) -> StepSpinner:
        self._reporting.__enter__()
        if self.console.is_terminal and self.timer is not None:
            self.timer.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._reporting.__exit__(exc_type, exc, tb)
        with self.lock:
            if self.timer is not None:
                self.timer.cancel()
            self.timer = None
            if self.status is not None:
                self.status.stop()
                self.status = None
