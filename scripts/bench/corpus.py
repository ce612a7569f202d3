"""Build the benchmark corpus: every member a trace.dat of at least --events events, listed in corpus.json.

Members (``--only`` takes these names):

* recordings made here with ``kvmtrace record`` (root and tracefs needed, else skipped with a
  message): ``syscalls`` (raw_syscalls at full rate from two ``dd bs=1``, plus sched), ``exec``
  (fork/exec/exit loops: sched, task, irq; ``sched_process_exec.filename`` is a __data_loc
  string), ``mix`` (irq, timer, workqueue, sched, raw_syscalls from dd, sleeps and sync). A
  recording holds at most --record-cap events (slow workloads) and is then replicated up to
  --events with scripts/make_big_capture.py; the output says which are;
* the bundled real captures replicated by make_big_capture.py: ``vhe-cyclictest``,
  ``board-study`` (host), ``x86-cyclictest-stress`` (a named buffer);
* synthetic KVM captures (``kvmtrace synth``): ``synth-hog``, ``synth-study-guest``;
* one capture per field kind (scripts/bench/fieldkinds.py): ``field-u64x6``, ``field-u8x15``,
  ``field-tail-u32``, ``field-dynarray-u32``, ``field-dataloc-str``, ``field-relloc-str``,
  ``field-char16``, ``field-bool``, ``field-ints``, ``field-ints-be``, ``field-ints-32``.

Each member is DIR/NAME.dat. Members already there are skipped. Every new one is opened with
``trace-cmd report`` (its first lines are printed) and counted with ``kvmtrace info``.

Usage::

    corpus.py [DIR] [--events 10000000] [--only NAME,...] [--record-cap 1000000]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))

import fieldkinds  # noqa: E402 - beside this script

DEFAULT_DIR = Path("/work/bench-corpus")
MANIFEST = "corpus.json"
TRACEFS = (Path("/sys/kernel/tracing"), Path("/sys/kernel/debug/tracing"))
PY = sys.executable


@dataclass
class Built:
    """What a builder made: how the events were obtained ("" when written or recorded at full size)."""

    replicated: str = ""


@dataclass
class Member:
    """One corpus member: its name, group, what it exercises, and how to build it."""

    name: str
    group: str  # recording, replica, synth, field
    label: str
    build: Callable[[Path, int, Path, argparse.Namespace], Built]


@dataclass
class Entry:
    """One line of corpus.json."""

    name: str
    group: str
    label: str
    file: str
    events: int
    bytes: int
    seconds: float
    replicated: str
    lost: int = 0


# ----------------------------------------------------------------------------- helpers


def run(cmd: list[str]) -> str:
    """Run ``cmd`` in the repository with this interpreter's path; its stdout (raises on failure)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:4])} ... failed ({proc.returncode}): {proc.stderr[-1500:]}")
    return proc.stdout


def replicate(src: Path, out: Path, events: int) -> Built:
    """make_big_capture.py: ``src`` pages repeated to at least ``events`` events."""
    text = run([PY, str(ROOT / "scripts" / "make_big_capture.py"), str(src), "-o", str(out),
                "--events", str(events)])
    m = re.search(r"(\d+) copies x (\d+) events", text)
    copies, per = (int(m[1]), int(m[2])) if m else (0, 0)
    return Built(f"{copies} copies of {per:,} events of {src.parent.name}/{src.name}")


def count_events(path: Path) -> tuple[int, int]:
    """Events in ``path`` as kvmtrace reads them (``kvmtrace info --json --no-cache``), and the lost
    events it reports (ring-buffer page counts plus kernel overruns)."""
    info = json.loads(run([PY, "-m", "kvmtrace", "info", "--json", "--no-cache", str(path)]))
    read = info.get("read", {})
    lost = sum(int(n) for key in ("lost_events", "kernel_overruns")
               for per_cpu in read.get(key, {}).values() for n in per_cpu.values())
    return int(info["events"]["total"]), lost


def report_head(path: Path, lines: int = 3) -> list[str]:
    """The first event lines of ``trace-cmd report`` (it is stopped after them)."""
    proc = subprocess.Popen(["trace-cmd", "report", "-i", str(path)], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, errors="replace")
    assert proc.stdout is not None
    head = []
    for line in proc.stdout:
        if not line.startswith("cpus="):
            head.append(line.rstrip())
        if len(head) >= lines:
            break
    proc.kill()
    proc.wait()
    if not head:
        raise RuntimeError(f"trace-cmd report printed no events for {path}")
    return head


# ----------------------------------------------------------------------------- recordings


def can_record() -> str:
    """Why recordings cannot be made here ("" when they can)."""
    if os.geteuid() != 0:
        return "not root"
    if not any((p / "instances").is_dir() for p in TRACEFS):
        return "no tracefs (instances/) under /sys/kernel/tracing or /sys/kernel/debug/tracing"
    return ""


def record(out_dir: Path, events: list[str], script: str, buffer_kb: int) -> Path:
    """``kvmtrace record`` of ``sh -c script`` into ``out_dir``; its trace.dat."""
    shutil.rmtree(out_dir, ignore_errors=True)
    cmd = [PY, "-m", "kvmtrace", "record", "-o", str(out_dir), "-p", "none", "-b", str(buffer_kb), "-q",
           "--no-kallsyms"]
    for e in events:
        cmd += ["-e", e]
    run([*cmd, "--workload", "cmd", "--", "sh", "-c", script])
    return out_dir / "trace.dat"


def recorded(out: Path, events: int, trace: Path) -> Built:
    """Keep the recording as it is when it is big enough, else replicate it up to ``events``."""
    got, _lost = count_events(trace)
    if got >= events:
        shutil.move(trace, out)
        return Built()
    built = replicate(trace, out, events)
    return Built(f"{built.replicated} (the recording)")


def build_syscalls(out: Path, events: int, work: Path, args: argparse.Namespace) -> Built:
    """Two ``dd bs=1`` in parallel: every byte is a read and a write, 4 raw_syscalls events."""
    count = math.ceil(events * 1.03 / 8)
    dd = f"dd if=/dev/zero of=/dev/null bs=1 count={count} 2>/dev/null"
    trace = record(work, ["raw_syscalls", "sched"], f"{dd} & {dd} & wait", 400_000)
    return recorded(out, events, trace)


def build_exec(out: Path, events: int, work: Path, args: argparse.Namespace) -> Built:
    """Loops of fork/exec/exit of a few programs (about 80 events per loop)."""
    loops = math.ceil(min(events, args.record_cap or events) * 1.05 / 80)
    body = "/bin/true; /usr/bin/env true; /bin/sh -c :"
    script = f"i=0; while [ $i -lt {loops} ]; do {body}; i=$((i+1)); done"
    trace = record(work, ["sched", "task", "irq"], script, 200_000)
    return recorded(out, events, trace)


def build_mix(out: Path, events: int, work: Path, args: argparse.Namespace) -> Built:
    """dd with 4 KB blocks, 100 us sleeps and write+sync loops together (about 650 k events per unit)."""
    scale = max(1, round(min(events, args.record_cap or events) / 650_000))
    sleeps = f"{PY} -c 'import time\nfor _ in range({20_000 * scale}): time.sleep(0.0001)'"
    syncs = f"i=0; while [ $i -lt {300 * scale} ]; do echo x >> $T/f; sync; i=$((i+1)); done"
    dd = f"dd if=/dev/zero of=/dev/null bs=4096 count={60_000 * scale} 2>/dev/null"
    script = f"T=$(mktemp -d); ({syncs}) & {sleeps} & {dd}; wait; rm -rf $T"
    trace = record(work, ["irq", "timer", "workqueue", "sched", "raw_syscalls"], script, 200_000)
    return recorded(out, events, trace)


# ----------------------------------------------------------------------------- other groups


def bundled(folder: str) -> Callable[[Path, int, Path, argparse.Namespace], Built]:
    def build(out: Path, events: int, work: Path, args: argparse.Namespace) -> Built:
        return replicate(ROOT / "captures" / folder / "trace.dat", out, events)
    return build


def synth(preset: str) -> Callable[[Path, int, Path, argparse.Namespace], Built]:
    def build(out: Path, events: int, work: Path, args: argparse.Namespace) -> Built:
        shutil.rmtree(work, ignore_errors=True)
        asked = math.ceil(events * 1.01)  # synth scales to about N events
        run([PY, "-m", "kvmtrace", "synth", preset, "-o", str(work), "--events", str(asked)])
        shutil.move(work / "trace.dat", out)
        return Built()
    return build


def field_kind(kind: fieldkinds.Kind) -> Callable[[Path, int, Path, argparse.Namespace], Built]:
    def build(out: Path, events: int, work: Path, args: argparse.Namespace) -> Built:
        work.mkdir(parents=True, exist_ok=True)
        fieldkinds.write_kind(kind, out, events, tmpdir=str(work))
        block = min(events, fieldkinds.BLOCK)
        copies = math.ceil(events / block)
        return Built(f"{copies} copies of a {block:,}-event block" if copies > 1 else "")
    return build


MEMBERS = [
    Member("syscalls", "recording", "raw_syscalls at full rate + sched (sys_enter args[6])", build_syscalls),
    Member("exec", "recording", "fork/exec/exit: sched, task, irq (__data_loc filename)", build_exec),
    Member("mix", "recording", "irq, timer, workqueue, sched, raw_syscalls", build_mix),
    Member("vhe-cyclictest", "replica", "captures/arm64-vhe-cyclictest (KVM host)", bundled("arm64-vhe-cyclictest")),
    Member("board-study", "replica", "captures/board-study (KVM host)", bundled("board-study")),
    Member("x86-cyclictest-stress", "replica", "captures/x86-host-cyclictest-stress (named buffer)",
           bundled("x86-host-cyclictest-stress")),
    Member("synth-hog", "synth", "kvmtrace synth hog", synth("hog")),
    Member("synth-study-guest", "synth", "kvmtrace synth study-guest", synth("study-guest")),
    *(Member(f"field-{k.name}", "field", k.label, field_kind(k)) for k in fieldkinds.KINDS),
]
BY_NAME = {m.name: m for m in MEMBERS}


# ----------------------------------------------------------------------------- the corpus


def load_manifest(folder: Path) -> dict[str, Entry]:
    path = folder / MANIFEST
    if not path.exists():
        return {}
    doc = json.loads(path.read_text())
    return {e["name"]: Entry(**e) for e in doc["members"]}


def save_manifest(folder: Path, entries: dict[str, Entry], events: int) -> None:
    order = [m.name for m in MEMBERS if m.name in entries]
    doc = {"corpus": 1, "events_asked": events, "members": [asdict(entries[n]) for n in order]}
    tmp = folder / f"{MANIFEST}.tmp"
    tmp.write_text(json.dumps(doc, indent=1) + "\n")
    tmp.replace(folder / MANIFEST)


def make(member: Member, folder: Path, events: int, args: argparse.Namespace) -> Entry:
    """Build one member (into NAME.dat.part, renamed when it is checked), open it with both tools."""
    out = folder / f"{member.name}.dat"
    part = folder / f"{member.name}.dat.part"
    work = folder / ".work" / member.name
    t0 = time.perf_counter()
    built = member.build(part, events, work, args)
    seconds = time.perf_counter() - t0
    shutil.rmtree(work, ignore_errors=True)
    head = report_head(part)
    count, lost = count_events(part)
    part.replace(out)
    entry = Entry(member.name, member.group, member.label, out.name, count, out.stat().st_size,
                  round(seconds, 1), built.replicated, lost)
    print(line(entry))
    for text in head:
        print(f"    trace-cmd: {text.strip()[:110]}")
    return entry


def line(e: Entry) -> str:
    rep = f"  replicated: {e.replicated}" if e.replicated else ""
    lost = f"  lost {e.lost:,}" if e.lost else ""
    return (f"{e.name:<22} {e.group:<9} {e.events:>12,} events {e.bytes / 1e6:9.1f} MB "
            f"{e.seconds:7.1f} s{lost}{rep}")


def selected(only: str | None) -> list[Member]:
    if not only:
        return MEMBERS
    names = [n.strip() for n in only.split(",") if n.strip()]
    unknown = [n for n in names if n not in BY_NAME]
    if unknown:
        raise SystemExit(f"unknown member(s) {', '.join(unknown)}; known: {', '.join(BY_NAME)}")
    return [BY_NAME[n] for n in names]


def build_corpus(folder: Path, events: int, members: list[Member], args: argparse.Namespace) -> int:
    """Build every member not there yet; returns how many failed."""
    folder.mkdir(parents=True, exist_ok=True)
    entries = load_manifest(folder)
    why_not = can_record()
    failed = 0
    for m in members:
        if m.name in entries and (folder / f"{m.name}.dat").exists():
            print(f"{m.name:<22} already there: {entries[m.name].events:,} events")
            continue
        if m.group == "recording" and why_not:
            print(f"{m.name:<22} skipped: recordings need root and tracefs ({why_not})")
            continue
        try:
            entries[m.name] = make(m, folder, events, args)
        except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
            failed += 1
            print(f"{m.name:<22} FAILED: {exc}")
        save_manifest(folder, entries, events)
    shutil.rmtree(folder / ".work", ignore_errors=True)
    return failed


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dir", nargs="?", type=Path, default=DEFAULT_DIR, help=f"corpus folder (default {DEFAULT_DIR})")
    ap.add_argument("--events", type=int, default=10_000_000, help="at least this many events per member")
    ap.add_argument("--only", help="comma-separated member names")
    ap.add_argument("--record-cap", type=int, default=1_000_000,
                    help="exec and mix record at most about this many events, then replicate (0: no cap)")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    failed = build_corpus(args.dir, args.events, selected(args.only), args)
    print(f"corpus {args.dir}: done in {time.perf_counter() - t0:.0f} s, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
