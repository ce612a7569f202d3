"""Opening an input file: only regular files, without blocking, with one clear error otherwise.

A FIFO would block the open (and then the read) forever, ``/dev/zero`` never ends, a directory or
a symlink loop is not a capture: each is refused with a CaptureError naming what it is. Every
reader opens its input here.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from kvmtrace.errors import CaptureError

_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def _kind(mode: int) -> str:
    for test, name in _KINDS:
        if test(mode):
            return name
    return "not a regular file"


def os_error(path: str | Path, exc: OSError, what: str = "open") -> CaptureError:
    """The CaptureError for an OSError on ``path``."""
    if exc.errno == errno.ELOOP:
        return CaptureError(path, None, f"cannot {what}: a symbolic link loop")
    return CaptureError(path, None, f"cannot {what}: {exc.strerror or exc}")


def check_regular(path: str | Path) -> os.stat_result:
    """The file's stat, or a CaptureError when it is missing, unreadable or not a regular file."""
    try:
        st = os.stat(path)
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            raise CaptureError(path, None, "no such file or directory") from None
        raise os_error(path, exc, "read") from None
    if not stat.S_ISREG(st.st_mode):
        raise CaptureError(path, None, f"{_kind(st.st_mode)}: expected a regular file")
    return st


def open_regular(path: str | Path) -> int:
    """A read-only descriptor of a regular file (never blocks: FIFOs are refused before opening)."""
    check_regular(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    except OSError as exc:
        raise os_error(path, exc) from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):  # replaced since the check
        os.close(fd)
        raise CaptureError(path, None, f"{_kind(st.st_mode)}: expected a regular file")
    return fd


def read_head(path: str | Path, size: int) -> bytes:
    """The first ``size`` bytes of a regular file."""
    fd = open_regular(path)
    try:
        return os.read(fd, size)
    except OSError as exc:
        raise os_error(path, exc, "read") from None
    finally:
        os.close(fd)


def read_limited(path: str | Path, limit: int, what: str) -> bytes:
    """A whole small file (at most ``limit`` bytes, else a CaptureError naming ``what``)."""
    fd = open_regular(path)
    try:
        size = os.fstat(fd).st_size
        if size > limit:
            raise CaptureError(path, None, f"{what} of {size} bytes: expected at most {limit}")
        with os.fdopen(os.dup(fd), "rb") as fh:
            return fh.read(limit + 1)[:limit]
    except OSError as exc:
        raise os_error(path, exc, "read") from None
    finally:
        os.close(fd)


def inside(folder: Path, target: Path) -> bool:
    """``target`` (symlinks resolved) lies inside ``folder``."""
    try:
        target.resolve().relative_to(folder.resolve())
    except (ValueError, OSError, RuntimeError):
        return False
    return True
