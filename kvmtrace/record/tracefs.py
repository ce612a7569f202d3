"""Find (or mount) tracefs and drive a private ftrace instance, with the standard library only.

Everything the recorder changes lives in ``instances/kvmtrace-<pid>``; the top level is only read,
except that :class:`TopLevelState` puts back ``tracing_on`` when a workload (``cyclictest -b``)
switched it off. Errors are :class:`RecordError`: one line naming the file and what went wrong.
"""

from __future__ import annotations

import errno
import os
import re
import subprocess

CANDIDATES = ("/sys/kernel/tracing", "/sys/kernel/debug/tracing")
INSTANCE_PREFIX = "kvmtrace-"
_STALE_RE = re.compile(r"^kvmtrace-(\d+)$")


class RecordError(Exception):
    """A recording problem the user can act on; printed as one line, exit code 2."""


def os_message(exc: OSError) -> str:
    """``permission denied`` style text for an OSError (no errno number, no path)."""
    code = exc.errno or 0
    text = os.strerror(code).lower() if code else str(exc)
    if code in (errno.EACCES, errno.EPERM):
        text += " (run as root)"
    return text


def _is_tracefs(path: str) -> bool:
    return os.path.isdir(os.path.join(path, "instances")) and os.path.exists(os.path.join(path, "trace_marker"))


def _mounted_tracefs() -> str | None:
    try:
        with open("/proc/mounts") as fh:
            for line in fh:
                parts = line.split()
                if len(parts) > 2 and parts[2] == "tracefs" and _is_tracefs(parts[1]):
                    return parts[1]
    except OSError:
        pass
    return None


class TraceFs:
    """The tracefs mount in use; ``mounted_by_us`` is undone by :meth:`release`."""

    def __init__(self, path: str, mounted_by_us: bool = False) -> None:
        self.path = path
        self.mounted_by_us = mounted_by_us

    @classmethod
    def find(cls, explicit: str | None = None) -> TraceFs:
        """The tracefs at ``explicit``, or the mounted one, or mount it at /sys/kernel/tracing."""
        if explicit:
            if not os.access(explicit, os.R_OK | os.X_OK) and os.path.isdir(explicit):
                raise RecordError(f"{explicit}: permission denied (run as root)")
            if not _is_tracefs(explicit):
                raise RecordError(f"{explicit}: not a tracefs mount (no instances/ or trace_marker)")
            return cls(explicit)
        for path in CANDIDATES:
            if os.path.isdir(path) and not os.access(path, os.R_OK | os.X_OK):
                raise RecordError(f"{path}: permission denied (run as root)")
        found = _mounted_tracefs() or next((p for p in CANDIDATES if _is_tracefs(p)), None)
        if found:
            return cls(found)
        return cls._mount()

    @classmethod
    def _mount(cls) -> TraceFs:
        target = CANDIDATES[0]
        if not os.path.isdir(target):
            raise RecordError(f"tracefs not found: {target} does not exist (kernel without CONFIG_TRACING?)")
        res = subprocess.run(["mount", "-t", "tracefs", "nodev", target], capture_output=True, text=True)
        if res.returncode != 0 or not _is_tracefs(target):
            why = (res.stderr or "").strip().splitlines()[-1:] or ["mount failed"]
            raise RecordError(f"tracefs not mounted and mounting it at {target} failed: {why[0]}")
        return cls(target, mounted_by_us=True)

    def release(self) -> None:
        """Unmount tracefs if this run mounted it."""
        if self.mounted_by_us:
            subprocess.run(["umount", self.path], capture_output=True)
            self.mounted_by_us = False

    def file(self, rel: str) -> str:
        return os.path.join(self.path, rel)

    def read(self, rel: str, default: str | None = None) -> str:
        try:
            with open(self.file(rel)) as fh:
                return fh.read()
        except OSError:
            if default is None:
                raise
            return default

    def stale_instances(self) -> list[str]:
        """``kvmtrace-<pid>`` instances whose recorder process no longer exists."""
        try:
            names = os.listdir(self.file("instances"))
        except OSError:
            return []
        out = []
        for name in names:
            m = _STALE_RE.match(name)
            if m and not _is_recorder(int(m.group(1))):
                out.append(name)
        return sorted(out)


def _is_recorder(pid: int) -> bool:
    """A kvmtrace recorder runs as that pid (a pid reused by another program does not count)."""
    if pid == os.getpid():
        return True
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return b"kvmtrace" in fh.read()
    except OSError:
        return False


class Instance:
    """One private ftrace instance: created by :meth:`create`, gone after :meth:`remove`."""

    def __init__(self, tracefs: TraceFs, name: str) -> None:
        self.tracefs = tracefs
        self.name = name
        self.path = tracefs.file(os.path.join("instances", name))
        self.created = False

    def create(self) -> None:
        try:
            os.mkdir(self.path)
        except FileExistsError:
            raise RecordError(f"{self.path}: instance already exists (another recorder?)") from None
        except OSError as exc:
            raise RecordError(f"cannot create tracefs instance {self.path}: {os_message(exc)}") from None
        self.created = True

    def file(self, rel: str) -> str:
        return os.path.join(self.path, rel)

    def exists(self, rel: str) -> bool:
        return os.path.exists(self.file(rel))

    def read(self, rel: str) -> str:
        try:
            with open(self.file(rel)) as fh:
                return fh.read()
        except OSError as exc:
            raise RecordError(f"{self.file(rel)}: cannot read: {os_message(exc)}") from None

    def write(self, rel: str, value: str, what: str = "") -> None:
        """Write ``value`` to an instance file; errors name the file, the value and the reason."""
        try:
            with open(self.file(rel), "w") as fh:
                fh.write(value)
        except OSError as exc:
            label = what or f"writing {value.strip()!r} to {self.file(rel)}"
            raise RecordError(f"{label}: {os_message(exc)}") from None

    def clocks(self) -> list[str]:
        return self.read("trace_clock").replace("[", "").replace("]", "").split()

    def set_clock(self, clock: str) -> None:
        available = self.clocks()
        if clock not in available:
            raise RecordError(f"unknown trace clock {clock!r}: this kernel offers {', '.join(available)}")
        self.write("trace_clock", clock)

    def set_cpumask(self, cpus: list[int]) -> None:
        mask = 0
        for cpu in cpus:
            mask |= 1 << cpu
        self.write("tracing_cpumask", f"{mask:x}", f"setting tracing_cpumask to CPUs {cpus}")

    def enable_event(self, system: str, event: str) -> None:
        self.write(f"events/{system}/{event}/enable", "1", f"enabling {system}:{event}")

    def set_filter(self, system: str, event: str, expr: str) -> None:
        self.write(f"events/{system}/{event}/filter", expr, f"filter {expr!r} for {system}:{event}")

    def set_option(self, name: str, on: bool) -> bool:
        """Set ``options/<name>``; False when the kernel has no such option."""
        if not self.exists(f"options/{name}"):
            return False
        self.write(f"options/{name}", "1" if on else "0")
        return True

    def remove(self) -> str | None:
        """Stop tracing and remove the instance; returns a problem description or None."""
        if not self.created:
            return None
        try:
            with open(self.file("tracing_on"), "w") as fh:
                fh.write("0")
        except OSError:
            pass
        last: OSError | None = None
        for _ in range(50):
            try:
                os.rmdir(self.path)
                self.created = False
                return None
            except FileNotFoundError:
                self.created = False
                return None
            except OSError as exc:  # EBUSY while a reader still holds a file open
                last = exc
                _sleep(0.1)
        return f"could not remove {self.path}: {os_message(last) if last else 'unknown error'}"


def _sleep(seconds: float) -> None:
    import time

    time.sleep(seconds)


class TopLevelState:
    """A read-only snapshot of the machine-wide tracing state, to check and restore at the end."""

    KEYS = ("tracing_on", "current_tracer", "trace_clock", "buffer_size_kb", "set_event")

    def __init__(self, tracefs: TraceFs) -> None:
        self.tracefs = tracefs
        self.values: dict[str, str] = {k: tracefs.read(k, "") for k in self.KEYS}

    def restore(self) -> list[str]:
        """Put back ``tracing_on`` if it changed (cyclictest -b); report other differences."""
        notes = []
        now = TopLevelState(self.tracefs).values
        for key in self.KEYS:
            if now[key] == self.values[key]:
                continue
            if key == "tracing_on":
                try:
                    with open(self.tracefs.file(key), "w") as fh:
                        fh.write(self.values[key].strip())
                    notes.append(f"restored top-level tracing_on to {self.values[key].strip()}")
                except OSError as exc:
                    notes.append(f"could not restore top-level tracing_on: {os_message(exc)}")
            else:
                notes.append(f"top-level {key} changed during the recording (not by kvmtrace)")
        return notes
