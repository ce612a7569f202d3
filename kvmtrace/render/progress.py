"""A progress bar on stderr that only appears once reading has taken more than about a second."""

from __future__ import annotations

import time
from types import TracebackType

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn


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
            self.progress.start()
            self.task = self.progress.add_task(self.label, total=1.0)
        self.progress.update(self.task, completed=fraction, description=f"{self.label}: {stage}")

    def __enter__(self) -> LazyProgress:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self.progress is not None:
            self.progress.stop()
