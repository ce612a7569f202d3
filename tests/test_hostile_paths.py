"""Paths that are not trace files (issue 11): refused in one line before anything blocks or is read."""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

import pytest

from kvmtrace.capture import open_capture
from kvmtrace.errors import CaptureError
from kvmtrace.ingest import files
from tests.report_oracle import CAPTURES

SOURCE = CAPTURES / "board-vhe-hog" / "trace.dat"


def test_an_unreadable_file_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shutil.copyfile(SOURCE, tmp_path / "trace.dat")
    real_open = os.open

    def refuse(path: object, *args: object, **kwargs: object) -> int:
        if str(path).endswith("trace.dat"):
            raise PermissionError(errno.EACCES, "Permission denied")
        return real_open(path, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(files.os, "open", refuse)
    with pytest.raises(CaptureError, match=r"trace.dat: cannot open: Permission denied"):
        open_capture(tmp_path, use_cache=False)


@pytest.mark.parametrize(("make", "expected"), [
    (lambda p: os.mkfifo(p), "a FIFO: expected a regular file"),
    (lambda p: p.symlink_to("/dev/zero"), "a character device: expected a regular file"),
    (lambda p: p.symlink_to(p.name), "cannot read: a symbolic link loop"),
    (lambda p: p.mkdir(), "a directory: expected a regular file"),
])
def test_special_files_are_refused_before_opening(tmp_path: Path, make, expected: str) -> None:
    target = tmp_path / "x.dat"
    make(target)
    for path in (tmp_path, target) if not target.is_dir() else (tmp_path,):  # a directory given is a folder
        with pytest.raises(CaptureError) as exc:
            open_capture(path, use_cache=False)
        assert exc.value.one_line() == f"{target}: {expected}"
