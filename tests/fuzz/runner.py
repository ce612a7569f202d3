"""Run ``kvmtrace`` on one input under an address-space limit and a timeout, and classify the outcome.

Two executors give the same outcomes:

* ``SubprocessExecutor``: ``python -m kvmtrace ARGS`` in a fresh process (what a user runs);
* ``ForkExecutor``: one process imports kvmtrace once and forks a child per run, which sets the
  limits and calls the CLI (about ten times faster: the imports are most of a small run's time).

Outcomes (``Outcome.kind``): ``accepted`` (exit 0), ``exit2`` (exit 2 with the promised single line
``kvmtrace: FILE: ...``), ``bad-exit2`` (exit 2 without it), ``traceback``, ``memory`` (MemoryError or an
allocation failure), ``crash`` (killed by a signal: segfault, abort, sanitizer report), ``hang``.
"""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

MEMORY_LIMIT = 4 << 30  # bytes of address space per run
TIMEOUT = 60.0  # seconds per run
FAILURES = ("crash", "hang", "memory", "traceback", "bad-exit2")
_MEMORY_WORDS = ("MemoryError", "memory allocation of", "Cannot allocate memory", "std::bad_alloc",
                 "out of memory", "capacity overflow")


@dataclass
class Outcome:
    """How one run ended."""

    kind: str
    code: int | None  # exit code, None when killed
    signal: int | None
    stderr: str
    stdout: str = field(repr=False, default="")
    seconds: float = 0.0

    @property
    def failed(self) -> bool:
        return self.kind in FAILURES

    def summary(self) -> str:
        tail = self.stderr.strip().splitlines()[-1:] or [""]
        how = f"signal {self.signal}" if self.signal else f"exit {self.code}"
        return f"{self.kind} ({how}): {tail[0][:200]}"


def classify(code: int | None, sig: int | None, stderr: str, timed_out: bool) -> str:
    """The outcome kind of a run from its exit status and stderr."""
    if timed_out:
        return "hang"
    if any(word in stderr for word in _MEMORY_WORDS):
        return "memory"
    if sig is not None:
        return "crash"
    if "Traceback (most recent call last)" in stderr:
        return "traceback"
    if code == 0:
        return "accepted"
    if code == 2:
        return "exit2" if is_one_line(stderr) else "bad-exit2"
    return "traceback"


def is_one_line(stderr: str) -> bool:
    """The promised rejection: exactly one line, ``kvmtrace: FILE: ...: what was expected``."""
    lines = [ln for ln in stderr.splitlines() if ln.strip() and not ln.startswith("kvmtrace: note:")]
    return len(lines) == 1 and lines[0].startswith("kvmtrace: ") and lines[0].count(": ") >= 2


def _limit_resources(memory: int) -> None:
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


@dataclass
class Job:
    """One run: the CLI arguments and the extra environment."""

    args: list[str]
    env: dict[str, str] = field(default_factory=dict)


class SubprocessExecutor:
    """``python -m kvmtrace`` in a new process per run."""

    def __init__(self, memory: int = MEMORY_LIMIT, timeout: float = TIMEOUT, python: str = sys.executable) -> None:
        self.memory = memory
        self.timeout = timeout
        self.python = python

    def run(self, job: Job) -> Outcome:
        started = time.monotonic()
        env = {**os.environ, **job.env}
        proc = subprocess.Popen([self.python, "-m", "kvmtrace", *job.args], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, env=env, start_new_session=True,
                                preexec_fn=lambda: _limit_resources(self.memory))
        timed_out = False
        try:
            out, err = proc.communicate(timeout=self.timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
        code = proc.returncode
        sig = -code if code is not None and code < 0 else None
        text = err.decode("utf-8", "replace")
        return Outcome(classify(None if sig else code, sig, text, timed_out), None if sig else code, sig, text,
                       out.decode("utf-8", "replace"), time.monotonic() - started)

    def run_all(self, jobs: Sequence[Job], parallel: int = 1) -> list[Outcome]:
        if parallel <= 1:
            return [self.run(job) for job in jobs]
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=parallel) as pool:
            return list(pool.map(self.run, jobs))


class ForkExecutor:
    """Imports kvmtrace once, then forks one child per run (``parallel`` children at a time)."""

    def __init__(self, memory: int = MEMORY_LIMIT, timeout: float = TIMEOUT) -> None:
        self.memory = memory
        self.timeout = timeout
        self.tmp = tempfile.mkdtemp(prefix="kvmtrace-fuzz-")
        _preload()

    def run(self, job: Job) -> Outcome:
        return self.run_all([job])[0]

    def run_all(self, jobs: Sequence[Job], parallel: int = 1) -> list[Outcome]:
        results: dict[int, Outcome] = {}
        running: dict[int, tuple[int, float]] = {}  # pid -> (job index, start)
        todo = list(enumerate(jobs))
        while todo or running:
            while todo and len(running) < max(1, parallel):
                index, job = todo.pop(0)
                running[self._spawn(index, job)] = (index, time.monotonic())
            self._reap(running, results)
        return [results[i] for i in range(len(jobs))]

    def _paths(self, index: int) -> tuple[str, str]:
        return os.path.join(self.tmp, f"{index}.out"), os.path.join(self.tmp, f"{index}.err")

    def _spawn(self, index: int, job: Job) -> int:
        out, err = self._paths(index)
        pid = os.fork()
        if pid == 0:  # the child: never returns
            _child(job, out, err, self.memory)
        return pid

    def _reap(self, running: dict[int, tuple[int, float]], results: dict[int, Outcome]) -> None:
        time.sleep(0.005)
        for pid, (index, start) in list(running.items()):
            timed_out = time.monotonic() - start > self.timeout
            if timed_out:
                _kill_group(pid)
            done, status = os.waitpid(pid, 0 if timed_out else os.WNOHANG)
            if done == 0:
                continue
            del running[pid]
            results[index] = self._outcome(index, status, timed_out, time.monotonic() - start)

    def _outcome(self, index: int, status: int, timed_out: bool, seconds: float) -> Outcome:
        out_path, err_path = self._paths(index)
        out, err = (Path(p).read_text("utf-8", "replace") for p in (out_path, err_path))
        for p in (out_path, err_path):
            os.unlink(p)
        sig = os.WTERMSIG(status) if os.WIFSIGNALED(status) else None
        code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else None
        return Outcome(classify(code, sig, err, timed_out), code, sig, err, out, seconds)


def _kill_group(pid: int) -> None:
    for target in (-pid, pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(target, signal.SIGKILL)


def _preload() -> None:
    """Import what every run needs (in the parent, once); nothing that starts threads is used."""
    import kvmtrace.analysis.latency
    import kvmtrace.capture
    import kvmtrace.cli
    import kvmtrace.ingest.text.reader
    import kvmtrace.ingest.tracedat.decode
    import kvmtrace.render.analyze
    import kvmtrace.render.info  # noqa: F401


def _child(job: Job, out: str, err: str, memory: int) -> None:
    code = 1
    try:
        os.setpgid(0, 0)
        _limit_resources(memory)
        for fd, path in ((1, out), (2, err)):
            target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            os.dup2(target, fd)
            os.close(target)
        os.environ.update(job.env)
        sys.argv = ["kvmtrace", *job.args]
        from kvmtrace.cli import main

        main()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:  # what the interpreter would print
        traceback.print_exc()
        code = 1
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(BaseException):  # the child is ending anyway
                stream.flush()
        os._exit(code)


def cli_jobs(target: str, engines: Iterable[str], commands: Iterable[str] = ("info", "analyze")) -> list[Job]:
    """``info --json`` and ``analyze`` with ``--no-cache`` on ``target``, with each engine."""
    jobs = []
    for engine in engines:
        for command in commands:
            args = [command, target, "--no-cache", *(["--json"] if command == "info" else [])]
            jobs.append(Job(args, {"KVMTRACE_ENGINE": engine}))
    return jobs
