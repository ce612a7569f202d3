"""The one error type users see: a clear one-line message naming the file, the place and what was expected."""

from __future__ import annotations

from pathlib import Path


class CaptureError(Exception):
    """Bad or unreadable input. Rendered as one line by the CLI, exit code 2.

    ``where`` names the place in the file: ``"offset 0x1234"``, ``"line 17"``, ``"page 3 of cpu 1"``.
    """

    def __init__(self, path: str | Path | None, where: str | None, message: str) -> None:
        self.path = str(path) if path is not None else None
        self.where = where
        self.message = message
        super().__init__(self.one_line())

    def one_line(self) -> str:
        parts = [p for p in (self.path, self.where) if p]
        prefix = ": ".join(parts)
        return f"{prefix}: {self.message}" if prefix else self.message


class MissingEventsError(CaptureError):
    """An analysis needs events the capture does not have; names them and how to record them."""

    def __init__(self, path: str | Path | None, analysis: str, missing: list[str], hint: str = "") -> None:
        events = ", ".join(missing)
        msg = f"{analysis} needs events that are not in this capture: {events}"
        if hint:
            msg += f" ({hint})"
        self.missing = missing
        super().__init__(path, None, msg)
