"""``kvmtrace record``: set up a private instance, run the workloads, and always leave the system as found.

Life of a recording: check everything that can be checked before touching tracefs (output
directory, events, workload programs); create ``instances/kvmtrace-<pid>`` and configure it;
stream every CPU's ``trace_pipe_raw`` into ``raw/`` while the workloads run, each between
``kvmtrace phase NAME begin|end`` markers; then, whatever ended the run (the last workload, a
signal, a crashed workload, an error), stop the workloads, stop tracing, drain the buffers, save
the per-CPU stats, remove the instance, restore the top level, and assemble ``trace.dat`` and
``capture.json`` from what was recorded.
"""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import signal
import subprocess
import sys
import time
import traceback
from typing import IO, Any

from kvmtrace.fileformats.manifest import write_manifest
from kvmtrace.record import events as ev
from kvmtrace.record import rawdir, sysinfo, workloads
from kvmtrace.record.assemble import assemble, cpu_stats, lost_from_stats
from kvmtrace.record.options import RecordOptions
from kvmtrace.record.signals import Interrupted, SignalGuard
from kvmtrace.record.tracefs import Instance, RecordError, TopLevelState, TraceFs, os_message

DRAIN_INTERVAL = 1.0
COMM_INTERVAL = 2.0
_CLOCK_IDS = {"mono": "CLOCK_MONOTONIC", "mono_raw": "CLOCK_MONOTONIC_RAW", "boot": "CLOCK_BOOTTIME",
              "tai": "CLOCK_TAI"}


class Recorder:
    """One recording; :meth:`run` returns the exit code."""

    def __init__(self, opts: RecordOptions) -> None:
        self.o = opts
        self.out = os.path.abspath(opts.output)
        self.raw = os.path.join(self.out, rawdir.RAW_NAME)
        self.guard = SignalGuard()
        self.tracefs: TraceFs | None = None
        self.top: TopLevelState | None = None
        self.inst: Instance | None = None
        self.readers: list[rawdir.CpuReader] = []
        self.marker_fd = -1
        self.selection = ev.EventSelection()
        self.work: list[workloads.Workload] = []
        self.procs: list[subprocess.Popen[bytes]] = []
        self.load_info: dict[str, Any] | None = None
        self.comms: dict[int, str] = {}
        self.phases: list[dict[str, Any]] = []
        self.notes: list[str] = []
        self.status = "complete"
        self.code = 0
        self.error: str | None = None
        self.started = time.time()
        self.page_size = 4096
        self._last_drain = 0.0
        self._last_comms = 0.0
        self.out_created = False
        self.out_preexisted = os.path.isdir(self.out)
        self.started_tracing = False
        self.deadline: float | None = None
        self.filters: list[str] = []
        self.copy_marker: bool | None = None
        self.load_procs: list[subprocess.Popen[bytes]] = []
        self.current: tuple[workloads.Workload, subprocess.Popen[bytes], IO[bytes]] | None = None

    # ------------------------------------------------------------------ top level
    def run(self) -> int:
        self.guard.install()
        try:
            self._setup()
            self._record()
        except Interrupted as sig:
            self._stopped_by(sig)
        except RecordError as exc:
            self._fail(str(exc), 2)
        except Exception as exc:
            self._fail(f"internal error: {type(exc).__name__}: {exc}", 3)
            self._save_traceback()
        finally:
            self.guard.hold()
            self._teardown()
            self._finish()
            self.guard.uninstall()
        return self.code

    def _stopped_by(self, sig: Interrupted) -> None:
        if self.started_tracing and not self.o.workloads and self.o.duration is None:  # "record until Ctrl-C"
            self.status = f"stopped by {sig.name}"
            return
        self.status = f"interrupted by {sig.name}"
        self.code = 128 + sig.signum

    def _fail(self, message: str, code: int) -> None:
        self.status = "error"
        self.error = message
        self.code = code

    def _save_traceback(self) -> None:
        if self.out_created:
            with open(os.path.join(self.out, "record-error.txt"), "w") as fh:
                fh.write(traceback.format_exc())

    def say(self, text: str) -> None:
        if not self.o.quiet:
            sys.stderr.write(f"kvmtrace record: {text}\n")
            sys.stderr.flush()

    # ------------------------------------------------------------------ setup
    def _setup(self) -> None:
        self._check_output()
        self.tracefs = TraceFs.find(self.o.tracefs)
        self.top = TopLevelState(self.tracefs)
        self._stale()
        catalog = ev.EventCatalog(self.tracefs.file("events"))
        try:
            self.selection = ev.resolve(catalog, self.o.presets, self.o.events)
        except ValueError as exc:
            raise RecordError(str(exc)) from None
        if not self.selection.events:
            raise RecordError("no events to record: none of the presets' events exist here and no -e given")
        filters = self._filters(catalog)
        self._make_output()
        self.work = workloads.build(self._workload_config())
        self._create_instance(filters)
        self._open_raw()
        if self.selection.missing:
            self.say(f"not on this kernel (skipped): {', '.join(self.selection.missing)}")

    def _check_output(self) -> None:
        if os.path.exists(self.out) and (not os.path.isdir(self.out) or os.listdir(self.out)):
            raise RecordError(f"{self.out}: exists and is not an empty directory")

    def _make_output(self) -> None:
        try:
            os.makedirs(self.raw, exist_ok=True)
        except OSError as exc:
            raise RecordError(f"{self.out}: cannot create: {os_message(exc)}") from None
        self.out_created = True

    def _stale(self) -> None:
        """Remove the instances of recorders that are gone (a SIGKILL leaves its instance tracing): at
        every start, before anything else is set up, and say so."""
        assert self.tracefs is not None
        for name in self.tracefs.stale_instances():
            stale = Instance(self.tracefs, name)
            stale.created = True
            problem = stale.remove()  # tracing off first, then rmdir (retried while busy)
            if problem is None:
                self.say(f"removed stale instance {name}: its recorder (pid {name.rsplit('-', 1)[1]}) is gone "
                         "and had left it tracing")
            else:
                self.say(f"stale instance {name} (its recorder is gone) could not be removed: {problem}")

    def _filters(self, catalog: ev.EventCatalog) -> list[tuple[str, str, str]]:
        out = []
        for spec in self.o.filters:
            name, sep, expr = spec.partition("=")
            found = catalog.find(name.strip()) if sep else []
            if not found:
                raise RecordError(f"--filter {spec!r}: expected EVENT=EXPR with an existing event")
            out += [(s, e, expr) for s, e in found]
        if self.o.vcpu_pids:
            expr = "||".join(f"common_pid=={pid}" for pid in self.o.vcpu_pids)
            out += [(s, e, expr) for s, e in self.selection.events if s == "kvm"]
        return out

    def _workload_config(self) -> workloads.WorkloadConfig:
        o = self.o
        return workloads.WorkloadConfig(kinds=o.workloads, args=o.args, capture_dir=self.out, **o.params())

    def _create_instance(self, filters: list[tuple[str, str, str]]) -> None:
        assert self.tracefs is not None
        with self.guard.shielded():
            self.inst = Instance(self.tracefs, f"kvmtrace-{os.getpid()}")
            self.inst.create()
        inst = self.inst
        inst.write("tracing_on", "0")
        inst.set_clock(self.o.clock)
        inst.write("buffer_size_kb", str(self.o.buffer_kb), f"setting buffer_size_kb to {self.o.buffer_kb}")
        if self.o.cpus is not None:
            inst.set_cpumask(self.o.cpus)
        if inst.exists("buffer_percent"):
            inst.write("buffer_percent", "25")
        self.copy_marker = inst.set_option("copy_trace_marker", True)
        if not self.copy_marker:
            self.notes.append("kernel has no options/copy_trace_marker: top-level markers "
                              "(cyclictest --tracemark) are not in the capture")
        for system, event in self.selection.events:
            inst.enable_event(system, event)
        for system, event, expr in filters:
            inst.set_filter(system, event, expr)
        self.filters = [f"{s}:{e}={x}" for s, e, x in filters]

    def _open_raw(self) -> None:
        assert self.tracefs is not None and self.inst is not None
        rawdir.copy_metadata(self.raw, self.tracefs, self.inst, self.selection.events, self.o.kallsyms)
        self.page_size, _ = rawdir.page_geometry(self.tracefs.read("events/header_page"))
        rawdir.write_text(os.path.join(self.raw, "trace_clock"), self.o.clock + "\n")
        rawdir.write_text(os.path.join(self.raw, "uname"), sysinfo.uname_line() + "\n")
        for name in sorted(os.listdir(self.inst.file("per_cpu")), key=lambda n: int(n[3:])):
            cpu = int(name[3:])
            try:
                self.readers.append(rawdir.CpuReader(self.inst, cpu, self.raw, self.page_size))
            except OSError as exc:  # offline CPU
                self.notes.append(f"cpu{cpu}: not read ({os_message(exc)})")
        self.marker_fd = os.open(self.inst.file("trace_marker"), os.O_WRONLY)
        self.comms.update(rawdir.task_comms())

    # ------------------------------------------------------------------ recording
    def _record(self) -> None:
        assert self.inst is not None
        self.inst.write("tracing_on", "1")
        self.started_tracing = True
        self.deadline = time.monotonic() + self.o.duration if self.o.duration else None
        self.say(f"recording {len(self.selection.events)} events into {self.out}")
        if self.o.load:
            self._start_load()
        if not self.work:
            self._pump_until_deadline()
        for wl in self.work:
            self._run_workload(wl)
            if wl.exit_code:
                self.status = f"workload {wl.phase} failed (exit code {wl.exit_code})"
                self.code = 1
                break
            if self._past_deadline():
                self.status = "stopped at --duration"
                break
        if self.o.load:
            self._stop_load()

    def _past_deadline(self) -> bool:
        return self.deadline is not None and time.monotonic() >= self.deadline

    def _pump_until_deadline(self) -> None:
        if self.deadline is None:
            self.say("recording until Ctrl-C / SIGTERM")
        while not self._past_deadline():
            self._pump([], 0.25)

    def _pump(self, extra: list[int], timeout: float) -> list[int]:
        """Wait for data; drain busy CPUs now and all CPUs every second; return ready extra fds."""
        fds = [r.fd for r in self.readers] + extra
        ready, _, _ = select.select(fds, [], [], timeout)
        now = time.monotonic()
        due = now - self._last_drain >= DRAIN_INTERVAL
        for reader in self.readers:
            if due or reader.fd in ready:
                reader.drain()
        if due:
            self._last_drain = now
        if now - self._last_comms >= COMM_INTERVAL:
            self._last_comms = now
            self.comms.update(rawdir.task_comms())
        return [fd for fd in ready if fd in extra]

    def marker(self, text: str) -> None:
        if self.marker_fd >= 0:
            try:
                os.write(self.marker_fd, text.encode()[:1000])
            except OSError as exc:
                self.notes.append(f"marker {text!r} not written: {os_message(exc)}")

    def now_ns(self) -> int | None:
        name = _CLOCK_IDS.get(self.o.clock)
        clock_id = getattr(time, name, None) if name else None
        return time.clock_gettime_ns(clock_id) if clock_id is not None else None

    def _phase(self, name: str, edge: str) -> None:
        self.marker(f"kvmtrace phase {name} {edge}")
        if edge == "begin":
            self.phases.append({"name": name, "start_ns": self.now_ns(), "end_ns": None})
        else:
            for p in reversed(self.phases):
                if p["name"] == name and p["end_ns"] is None:
                    p["end_ns"] = self.now_ns()
                    break

    # ------------------------------------------------------------------ workloads
    def _spawn(self, argv: list[str], **kw: Any) -> subprocess.Popen[bytes]:
        with self.guard.shielded():
            try:
                proc = subprocess.Popen(argv, start_new_session=True, **kw)
            except OSError as exc:
                raise RecordError(f"cannot run {argv[0]}: {os_message(exc)}") from None
            self.procs.append(proc)
        return proc

    def _run_workload(self, wl: workloads.Workload) -> None:
        self.say(f"phase {wl.phase}: {' '.join(wl.argv)}")
        self._phase(wl.phase, "begin")
        wl.start_ns = self.phases[-1]["start_ns"]
        log = open(os.path.join(self.out, wl.output), "wb")  # noqa: SIM115 - closed by _end_workload/_teardown
        stdin = None if wl.echo else subprocess.DEVNULL
        try:
            proc = self._spawn(wl.argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=stdin)
        except BaseException:
            log.close()
            raise
        self.current = (wl, proc, log)
        self._follow(wl, proc, log)
        self._end_workload()

    def _follow(self, wl: workloads.Workload, proc: subprocess.Popen[bytes], log: IO[bytes]) -> None:
        assert proc.stdout is not None
        fd = proc.stdout.fileno()
        open_out = True
        while open_out or proc.poll() is None:
            if self._past_deadline():
                _stop(proc)
            ready = self._pump([fd] if open_out else [], 0.25)
            if fd in ready:
                open_out = self._copy_output(fd, log, wl.echo)
            self._note_tids(wl, proc.pid)

    def _copy_output(self, fd: int, log: IO[bytes], echo: bool) -> bool:
        chunk = os.read(fd, 65536)
        if not chunk:
            return False
        log.write(chunk)
        log.flush()
        if echo and not self.o.quiet:
            sys.stdout.buffer.write(chunk)
            sys.stdout.flush()
        return True

    def _note_tids(self, wl: workloads.Workload, pid: int) -> None:
        if wl.kind != "cyclictest":
            return
        try:
            tids = sorted(int(t) for t in os.listdir(f"/proc/{pid}/task") if int(t) != pid)
        except OSError:
            return
        for tid in tids:
            if tid not in wl.tids:
                wl.tids.append(tid)

    def _end_workload(self) -> None:
        """The current workload ended (or is being stopped): its output, results, markers, phase end."""
        if self.current is None:
            return
        wl, proc, log = self.current
        with self.guard.shielded():
            self.current = None
            wl.exit_code = proc.wait()
            if proc in self.procs:
                self.procs.remove(proc)
            self._drain_output(proc, log)
            log.close()
            with open(os.path.join(self.out, wl.output), "rb") as fh:
                workloads.finish(wl, fh.read().decode(errors="replace"))
            for text in wl.markers:
                self.marker(text)
            self._phase(wl.phase, "end")
            wl.end_ns = self.phases[-1]["end_ns"] if self.phases else None
        for text in wl.markers:
            self.say(text)

    def _drain_output(self, proc: subprocess.Popen[bytes], log: IO[bytes]) -> None:
        if proc.stdout is None:
            return
        with contextlib.suppress(OSError, ValueError):
            while self._copy_output(proc.stdout.fileno(), log, False):
                pass
            proc.stdout.close()

    def _start_load(self) -> None:
        commands, self.load_info = workloads.load_commands(self.o.load_tool, self.o.load_workers)
        self._phase("load", "begin")
        self.load_procs = [self._spawn(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                       stdin=subprocess.DEVNULL) for argv in commands]
        self.say(f"host load: {self.load_info['tool']} x{self.load_info['workers']}")

    def _stop_load(self) -> None:
        for proc in getattr(self, "load_procs", []):
            _stop(proc)
            if proc in self.procs:
                self.procs.remove(proc)
        self._phase("load", "end")

    # ------------------------------------------------------------------ the end, whatever it was
    def _teardown(self) -> None:
        """Stop processes and tracing, keep the data, remove the instance, restore the top level."""
        for proc in list(self.procs):
            _stop(proc)
        with contextlib.suppress(OSError, ValueError):
            self._end_workload()
        self._close_phases()
        if self.inst is not None and self.inst.created:
            self._stop_tracing()
        problem = self.inst.remove() if self.inst is not None else None
        if problem:
            self.notes.append(problem)
            self._fail(problem, 2)
        if self.top is not None:
            self.notes += self.top.restore()
        if self.tracefs is not None:
            self.tracefs.release()

    def _close_phases(self) -> None:
        for p in self.phases:
            if p["end_ns"] is None:
                self._phase(p["name"], "end")
        for wl in self.work:
            if wl.start_ns is not None and wl.end_ns is None:
                wl.end_ns = self.now_ns()

    def _stop_tracing(self) -> None:
        assert self.inst is not None
        try:
            self.inst.write("tracing_on", "0")
        except RecordError as exc:
            self.notes.append(str(exc))
        for reader in self.readers:
            try:
                while reader.drain():
                    pass
            except (RecordError, OSError) as exc:
                self._keep_first_error(str(exc))
            reader.close()
        self._save_stats()
        if self.marker_fd >= 0:
            os.close(self.marker_fd)
            self.marker_fd = -1

    def _keep_first_error(self, message: str) -> None:
        if self.error is None:
            self._fail(message, 2)

    def _save_stats(self) -> None:
        assert self.inst is not None
        try:
            for name in os.listdir(self.inst.file("per_cpu")):
                rawdir.write_text(os.path.join(self.raw, "stats", name), self.inst.read(f"per_cpu/{name}/stats"))
            saved = rawdir.parse_cmdlines(self.tracefs.read("saved_cmdlines", "") if self.tracefs else "")
            self.comms.update(rawdir.task_comms())
            saved.update(self.comms)
            rawdir.write_text(os.path.join(self.raw, "saved_cmdlines"), rawdir.format_cmdlines(saved))
        except (RecordError, OSError) as exc:
            self._keep_first_error(str(exc) if isinstance(exc, RecordError) else os_message(exc))

    def _finish(self) -> None:
        if self.out_created and not self.started_tracing:
            self._remove_output()
        if not self.out_created:
            self._report()
            return
        built = self._assemble()
        try:
            write_manifest(self.out, self._manifest(built))
        except OSError as exc:
            self._keep_first_error(f"{self.out}/capture.json: cannot write: {os_message(exc)}")
        if built and not self.o.keep_raw:
            shutil.rmtree(self.raw, ignore_errors=True)
        elif not built and self.error:
            self.error += (f"; what was recorded is kept in {self.raw}: build the capture with "
                           f"'kvmtrace record --from-raw {self.raw} -o NEW_DIR'")
        self._report()

    def _remove_output(self) -> None:
        """Nothing was recorded: take away what this run created (the directory, or its contents)."""
        if self.out_preexisted:
            for name in os.listdir(self.out):
                path = os.path.join(self.out, name)
                if os.path.isdir(path):
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    os.unlink(path)
        else:
            shutil.rmtree(self.out, ignore_errors=True)
        self.out_created = False
        if self.error is None:
            self.notes.append(f"{self.status} before recording started: nothing recorded")

    def _assemble(self) -> bool:
        if not os.path.exists(os.path.join(self.raw, "header_page")):
            return False
        try:
            assemble(self.raw, os.path.join(self.out, "trace.dat"))
            return True
        except RecordError as exc:
            self._keep_first_error(str(exc))
            return False

    def _manifest(self, built: bool) -> dict[str, Any]:
        stats = cpu_stats(self.raw) if os.path.isdir(self.raw) else {}
        side = self.o.side if self.o.side != "auto" else sysinfo.detect_side()
        tracing = {
            "clock": self.o.clock, "events": self.selection.names(), "missing_events": self.selection.missing,
            "presets": self.selection.presets, "buffer_size_kb": self.o.buffer_kb, "cpus": self.o.cpus,
            "filters": getattr(self, "filters", []), "page_size": self.page_size,
            "instance": self.inst.name if self.inst else None,
            "tracefs": self.tracefs.path if self.tracefs else None,
            "copy_trace_marker": getattr(self, "copy_marker", None),
            "pages_per_cpu": {str(r.cpu): r.pages for r in self.readers},
        }
        record = {
            "status": self.status, "exit_code": self.code, "error": self.error, "notes": self.notes,
            "trace_built": built, "raw_kept": os.path.isdir(self.raw) and (self.o.keep_raw or not built),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(self.started)),
            "duration_s": round(time.time() - self.started, 3), "command_line": self.o.command_line,
            "recorder": f"kvmtrace-record (python {sys.version.split()[0]})", "load": self.load_info,
        }
        return {"side": side, "host": sysinfo.host_facts(), "tracing": tracing,
                "workloads": [wl.manifest() for wl in self.work if wl.start_ns is not None or wl.exit_code is not None],
                "phases": self.phases, "lost_events": lost_from_stats(stats), "record": record}

    def _report(self) -> None:
        for note in self.notes:
            self.say(note)
        if self.error:
            sys.stderr.write(f"kvmtrace record: {self.error}\n")
        elif self.out_created:
            self.say(f"{self.status}: {self.out}")


def _stop(proc: subprocess.Popen[bytes], grace: float = 3.0) -> None:
    """SIGTERM the process group, then SIGKILL after ``grace`` seconds."""
    if proc.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except OSError:
            return
        try:
            proc.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


def record(opts: RecordOptions) -> int:
    """Record (or, with ``from_raw``, build a capture from a raw directory); return the exit code."""
    if opts.from_raw:
        from kvmtrace.record.convert import convert

        return convert(opts)
    return Recorder(opts).run()
