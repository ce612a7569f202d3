"""The raw capture directory: per-CPU ``trace_pipe_raw`` pages plus the tracefs metadata files.

Both recorders write this layout while they run (``scripts/record.sh`` too), so whatever was
recorded so far survives any end; :mod:`kvmtrace.record.assemble` turns it into ``trace.dat``::

    raw/cpuN.raw                      whole ring-buffer pages, as read from per_cpu/cpuN/trace_pipe_raw
    raw/header_page, raw/header_event
    raw/events/SYSTEM/EVENT/format    enabled events, and every ftrace/* format (print = markers)
    raw/saved_cmdlines                "pid comm" lines
    raw/printk_formats, raw/kallsyms  (kallsyms optional)
    raw/stats/cpuN                    per_cpu/cpuN/stats at the end (lost events)
    raw/trace_clock, raw/uname        the clock name; uname -a
    raw/info                          key=value facts (record.sh; the Python recorder writes capture.json)
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil

from kvmtrace.record.tracefs import Instance, RecordError, TraceFs, os_message

RAW_NAME = "raw"


def write_text(path: str, text: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    try:
        with open(path, "w") as fh:
            fh.write(text)
    except OSError as exc:
        raise RecordError(f"{path}: cannot write: {os_message(exc)}") from None


def copy_metadata(raw: str, tracefs: TraceFs, inst: Instance, events: list[tuple[str, str]],
                  kallsyms: bool) -> None:
    """Copy the format files and global tables a reader needs (read-only at the top level)."""
    for name in ("header_page", "header_event"):
        write_text(os.path.join(raw, name), tracefs.read(f"events/{name}"))
    ftrace_dir = tracefs.file("events/ftrace")
    wanted = [("ftrace", e) for e in sorted(os.listdir(ftrace_dir)) if os.path.isdir(os.path.join(ftrace_dir, e))]
    for system, event in wanted + list(events):
        rel = f"events/{system}/{event}/format"
        write_text(os.path.join(raw, rel), inst.read(rel))
    write_text(os.path.join(raw, "printk_formats"), tracefs.read("printk_formats", ""))
    if kallsyms:
        shutil.copyfile("/proc/kallsyms", os.path.join(raw, "kallsyms"))


def page_geometry(header_page: str) -> tuple[int, int]:
    """(page_size, long_size) from the kernel's ``events/header_page`` text."""
    commit = re.search(r"commit;\s*offset:\s*\d+;\s*size:\s*(\d+);", header_page)
    data = re.search(r"data;\s*offset:\s*(\d+);\s*size:\s*(\d+);", header_page)
    if not commit or not data:
        raise RecordError("events/header_page: unexpected format")
    return int(data.group(1)) + int(data.group(2)), int(commit.group(1))


class CpuReader:
    """Non-blocking reader of one CPU's ``trace_pipe_raw``, appending whole pages to ``cpuN.raw``."""

    def __init__(self, inst: Instance, cpu: int, raw: str, page_size: int) -> None:
        self.cpu = cpu
        self.page_size = page_size
        self.path = os.path.join(raw, f"cpu{cpu}.raw")
        self.pages = 0
        self.fd = os.open(inst.file(f"per_cpu/cpu{cpu}/trace_pipe_raw"), os.O_RDONLY | os.O_NONBLOCK)
        self.out = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def drain(self, limit: int = 4096) -> int:
        """Read every page available now (at most ``limit``); return how many."""
        count = 0
        while count < limit:
            try:
                page = os.read(self.fd, self.page_size)
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno in (errno.EINTR, errno.EAGAIN):
                    break
                raise
            if not page:
                break
            self._store(page.ljust(self.page_size, b"\0"))
            count += 1
        self.pages += count
        return count

    def _store(self, page: bytes) -> None:
        try:
            done = os.write(self.out, page)
            if done != len(page):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        except OSError as exc:
            size = os.fstat(self.out).st_size
            os.ftruncate(self.out, size - size % self.page_size)
            raise RecordError(f"{self.path}: cannot write: {os_message(exc)}") from None

    def close(self) -> None:
        for fd in (self.fd, self.out):
            with contextlib.suppress(OSError):
                os.close(fd)
        self.fd = self.out = -1


def task_comms() -> dict[int, str]:
    """pid -> comm of every task (threads included) now in /proc."""
    out: dict[int, str] = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                with open(f"/proc/{pid}/task/{tid}/comm", errors="replace") as fh:
                    out[int(tid)] = fh.read().rstrip("\n")
            except OSError:
                continue
    return out


def parse_cmdlines(text: str) -> dict[int, str]:
    out = {}
    for line in text.splitlines():
        pid, _, comm = line.strip().partition(" ")
        if pid.isdigit() and comm:
            out[int(pid)] = comm
    return out


def format_cmdlines(comms: dict[int, str]) -> str:
    return "".join(f"{pid} {comm}\n" for pid, comm in sorted(comms.items()) if pid > 0)
