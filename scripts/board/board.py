#!/usr/bin/env python3
"""An emulated arm64 KVM board: real arm64 KVM captures on any x86 Linux machine.

    scripts/board/board.py setup                 apt packages (root): qemu-system-arm, mmdebstrap, cross gcc
    scripts/board/board.py build                 kernel, host userland, initramfs (cached)
    scripts/board/board.py run SCENARIO [-o DIR] build if needed, boot, record, collect the capture
    scripts/board/board.py list                  the scenarios
    scripts/board/board.py bundle CAPTURE DEST   a small copy (trimmed, v7 zstd) for captures/

QEMU (TCG, EL2 emulated) boots Debian's arm64 kernel as a KVM host ("L1"); on it kvmtrace's
recorder (kvmtrace-record.pyz) traces while a QEMU/KVM guest ("L2", same kernel, busybox) runs the
scenario's workload. The guest's console marker lines are copied into the host's trace. Results
leave L1 as a tar stream on a virtio disk. Standard library only; docs/board.md has the details.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
CACHE = Path(os.environ.get("KVMTRACE_BOARD_CACHE") or Path.home() / ".cache" / "kvmtrace-board")
HOST_PACKAGES = ["qemu-system-arm", "mmdebstrap", "gcc-aarch64-linux-gnu", "libc6-dev-arm64-cross", "cpio",
                 "zstd"]
# the emulated host's userland (arm64, unpacked without emulation, with their dependencies)
L1_PACKAGES = ["busybox-static", "qemu-system-arm", "rt-tests", "python3"]
# trimmed from the emulated host's initramfs (not needed to run QEMU/KVM, python3 and cyclictest)
L1_TRIM = ["usr/share/doc", "usr/share/man", "usr/share/locale", "usr/share/info", "usr/share/iso-codes",
           "usr/share/xml", "usr/share/lintian", "usr/bin/qemu-system-arm", "var/cache/apt", "var/lib/apt/lists"]
MODULES = ["kernel/drivers/virtio/virtio_mmio.ko", "kernel/drivers/block/virtio_blk.ko"]
BUILD_VERSION = 1  # bump when the layout of the cached images changes


class BoardError(Exception):
    """A step failed: one line for the user, exit code 1."""


@dataclass
class Scenario:
    """What one run does: KVM mode of the emulated host, guest size, host load, guest workload."""

    name: str
    description: str
    mode: str = "vhe"  # vhe (-cpu max) or nvhe (-cpu cortex-a72)
    vcpus: int = 1
    load: str = "none"  # none, hog (CPU hog on the vCPU's CPU), hog-fifo (and vCPU threads SCHED_FIFO)
    workload: str = "cyclictest"  # comma separated: cyclictest, mem, idle
    seconds: int = 10
    guest_trace: bool = False
    guest_mb: int = 256
    guest_bench_mb: int = 64
    buffer_kb: int = 16384
    thp: str = ""  # the emulated host's transparent_hugepage/enabled ("" = kernel default)
    native: bool = False  # first run the same workloads natively on the emulated host (its own capture)


SCENARIOS = {s.name: s for s in [
    Scenario("vhe-1vcpu", "VHE host (-cpu max), 1 vCPU guest, cyclictest"),
    Scenario("nvhe-1vcpu", "nVHE host (-cpu cortex-a72, like a Raspberry Pi 4), 1 vCPU guest, cyclictest",
             mode="nvhe"),
    Scenario("vhe-2vcpu", "VHE host, 2 vCPU guest, cyclictest with one thread per vCPU", vcpus=2),
    Scenario("nvhe-2vcpu", "nVHE host, 2 vCPU guest, cyclictest with one thread per vCPU", mode="nvhe", vcpus=2),
    Scenario("vhe-hog", "VHE host, a CPU hog sharing CPU 1 with the guest's QEMU, 1 vCPU, cyclictest",
             load="hog"),
    Scenario("vhe-hog-fifo", "as vhe-hog, with the vCPU thread at SCHED_FIFO 10", load="hog-fifo"),
    Scenario("vhe-mem", "VHE host without THP, 1 vCPU guest (512 MB) running lat_mem_rd seq/random and "
             "lat_pagefault (file, anonymous)", workload="mem", guest_mb=512, thp="never"),
    Scenario("study", "the study: cyclictest, lat_mem_rd (seq, random) and lat_pagefault natively on the VHE "
             "host (capture native/), then the same in a 1-vCPU guest (512 MB, THP off) that records itself "
             "(guest/, cyclictest -v)", workload="cyclictest,mem", guest_mb=512, guest_bench_mb=32, thp="never",
             native=True, guest_trace=True),
    Scenario("vhe-guest-trace", "as vhe-1vcpu, plus a guest-side recording (scripts/record.sh in the guest) "
             "and cyclictest -v", guest_trace=True),
    Scenario("vhe-hog-fifo-guest", "as vhe-hog-fifo (a SCHED_FIFO vCPU beside a SCHED_OTHER hog), plus a "
             "guest-side recording and cyclictest -v", load="hog-fifo", guest_trace=True),
    Scenario("vhe-2vcpu-guest", "as vhe-2vcpu, plus a guest-side recording and cyclictest -v", vcpus=2,
             guest_trace=True),
    Scenario("nvhe-guest-trace", "as nvhe-1vcpu, plus a guest-side recording and cyclictest -v", mode="nvhe",
             guest_trace=True),
]}


# --------------------------------------------------------------------------- small helpers

def log(msg: str) -> None:
    print(f"board: {msg}", file=sys.stderr, flush=True)


def sh(argv: list[str], timeout: float, **kw: Any) -> subprocess.CompletedProcess[str]:
    """Run a command with a timeout; a failure is a BoardError naming the command and its output tail."""
    try:
        res = subprocess.run(argv, timeout=timeout, text=True, capture_output=True, **kw)
    except subprocess.TimeoutExpired:
        raise BoardError(f"timed out after {timeout:.0f} s: {shlex.join(argv)}") from None
    except FileNotFoundError:
        raise BoardError(f"not found: {argv[0]} (run: scripts/board/board.py setup)") from None
    if res.returncode != 0:
        tail = (res.stderr or res.stdout or "").strip().splitlines()[-5:]
        raise BoardError(f"exit code {res.returncode}: {shlex.join(argv)}\n  " + "\n  ".join(tail))
    return res


def parse_abi(depends_output: str) -> str:
    """The kernel ABI (``6.1.0-56-arm64``) from ``apt-cache depends linux-image-arm64:arm64``."""
    found = re.findall(r"^\s*\|?Depends:\s*linux-image-(\d[0-9A-Za-z.+~-]*?-arm64)(?::arm64)?\s*$",
                       depends_output, re.MULTILINE)
    if not found:
        raise BoardError("cannot find the kernel ABI in `apt-cache depends linux-image-arm64:arm64` "
                         "(is the arm64 architecture added? run: scripts/board/board.py setup)")
    return sorted(set(found), key=_version_key)[-1]


def _version_key(abi: str) -> list[int]:
    return [int(x) for x in re.findall(r"\d+", abi)]


def content_hash(paths: list[Path], extra: str = "") -> str:
    h = hashlib.sha256(extra.encode())
    for p in paths:
        h.update(p.name.encode())
        h.update(p.read_bytes())
    return h.hexdigest()[:12]


def suite() -> str:
    text = Path("/etc/os-release").read_text() if Path("/etc/os-release").exists() else ""
    m = re.search(r"^VERSION_CODENAME=(\w+)", text, re.MULTILINE)
    return m.group(1) if m else "bookworm"


# --------------------------------------------------------------------------- setup and build

def setup() -> None:
    """Install the host packages (root, Debian): arm64 as a foreign architecture, QEMU, mmdebstrap, gcc."""
    if os.geteuid() != 0:
        raise BoardError("setup needs root (apt-get)")
    started = time.monotonic()
    if "arm64" not in sh(["dpkg", "--print-foreign-architectures"], 30).stdout.split():
        sh(["dpkg", "--add-architecture", "arm64"], 60)
    lock = ["-o", "DPkg::Lock::Timeout=300"]  # wait for another apt run instead of failing at once
    sh(["apt-get", *lock, "update", "-qq"], 600)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    sh(["apt-get", *lock, "install", "-y", "-qq", "--no-install-recommends", *HOST_PACKAGES], 900, env=env)
    log(f"setup: host packages installed in {time.monotonic() - started:.1f} s")


def missing_tools() -> list[str]:
    tools = {"qemu-system-aarch64": "qemu-system-arm", "mmdebstrap": "mmdebstrap",
             "aarch64-linux-gnu-gcc": "gcc-aarch64-linux-gnu", "cpio": "cpio", "zstd": "zstd"}
    missing = [pkg for tool, pkg in tools.items() if shutil.which(tool) is None]
    if "arm64" not in subprocess.run(["dpkg", "--print-foreign-architectures"], capture_output=True,
                                     text=True).stdout.split():
        missing.append("(arm64 architecture)")
    return missing


def kernel_abi() -> str:
    return parse_abi(sh(["apt-cache", "depends", "linux-image-arm64:arm64"], 60).stdout)


@dataclass
class Build:
    abi: str
    kernel_package: str
    vmlinuz: Path
    l1_initrd: Path
    rootfs: Path  # unpacked arm64 userland (source of the guest's files)
    seconds: float = 0.0


def fetch_kernel(abi: str) -> tuple[Path, str]:
    """vmlinuz and the virtio block modules of linux-image-ABI (arm64), cached per ABI."""
    kdir = CACHE / f"kernel-{abi}"
    stamp = kdir / "package"
    if stamp.is_file() and (kdir / "vmlinuz").is_file():
        return kdir, stamp.read_text().strip()
    log(f"fetching linux-image-{abi} (arm64)")
    with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
        os.chmod(tmp, 0o777)  # apt-get download runs as _apt
        sh(["apt-get", "download", f"linux-image-{abi}:arm64"], 600, cwd=tmp)
        deb = next(Path(tmp).glob("*.deb"))
        sh(["dpkg-deb", "-x", str(deb), f"{tmp}/x"], 300)
        new = Path(tmp) / "kernel"
        (new / "modules").mkdir(parents=True)
        shutil.copy(Path(tmp) / "x" / "boot" / f"vmlinuz-{abi}", new / "vmlinuz")
        shutil.copy(Path(tmp) / "x" / "boot" / f"config-{abi}", new / "config")
        for mod in MODULES:
            shutil.copy(Path(tmp) / "x" / "lib" / "modules" / abi / mod, new / "modules" / Path(mod).name)
        (new / "package").write_text(deb.name + "\n")
        shutil.rmtree(kdir, ignore_errors=True)
        new.rename(kdir)
    return kdir, stamp.read_text().strip()


def fetch_rootfs() -> Path:
    """The arm64 userland (busybox, QEMU, rt-tests, python3 and dependencies), unpacked, cached per package list."""
    key = content_hash([], f"{suite()} {' '.join(L1_PACKAGES)} {BUILD_VERSION}")
    rdir = CACHE / f"rootfs-{key}"
    if (rdir / ".complete").exists():
        return rdir
    log(f"unpacking the arm64 userland with mmdebstrap: {', '.join(L1_PACKAGES)}")
    shutil.rmtree(rdir, ignore_errors=True)
    tar = CACHE / f"rootfs-{key}.tar"
    sh(["mmdebstrap", "--quiet", "--variant=extract", "--architectures=arm64",
        f"--include={','.join(L1_PACKAGES)}", suite(), str(tar)], 900)
    rdir.mkdir(parents=True)
    sh(["tar", "-xf", str(tar), "-C", str(rdir)], 300)
    tar.unlink()
    (rdir / ".complete").write_text("")
    return rdir


def write_cpio(src: Path, dest: Path, compress: bool) -> None:
    """A newc cpio archive of a directory (gzip -1 when asked)."""
    tmp = dest.with_suffix(dest.suffix + ".tmp")
    files = subprocess.run(["find", "."], cwd=src, capture_output=True, check=True).stdout
    with open(tmp, "wb") as out:
        cpio = subprocess.Popen(["cpio", "--quiet", "-o", "-H", "newc", "-R", "0:0"], cwd=src,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE if compress else out)
        gz = subprocess.Popen(["gzip", "-1"], stdin=cpio.stdout, stdout=out) if compress else None
        assert cpio.stdin is not None
        cpio.stdin.write(files)
        cpio.stdin.close()
        if gz:
            assert cpio.stdout is not None
            cpio.stdout.close()
            if gz.wait(timeout=300) != 0:
                raise BoardError("gzip failed")
        if cpio.wait(timeout=300) != 0:
            raise BoardError(f"cpio failed for {src}")
    tmp.rename(dest)


def ensure_console(root: Path) -> None:
    (root / "dev").mkdir(exist_ok=True)
    console = root / "dev" / "console"
    if not console.exists():
        os.mknod(console, 0o600 | 0o020000, os.makedev(5, 1))


def build(force: bool = False) -> Build:
    """Kernel, userland and the emulated host's initramfs, rebuilt when the kernel ABI or inputs change."""
    if missing_tools():
        if os.geteuid() == 0:
            log(f"missing {', '.join(missing_tools())}: installing")
            setup()
        else:
            raise BoardError(f"missing {', '.join(missing_tools())}: run scripts/board/board.py setup as root")
    started = time.monotonic()
    CACHE.mkdir(parents=True, exist_ok=True)
    abi = kernel_abi()
    kdir, package = fetch_kernel(abi)
    rootfs = fetch_rootfs()
    key = content_hash([HERE / "l1-init.sh"], f"{abi} {rootfs.name} {BUILD_VERSION}")
    initrd = CACHE / f"l1-{abi}-{key}.cpio"
    if force or not initrd.is_file():
        log(f"building the emulated host's initramfs ({initrd.name})")
        with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
            stage = Path(tmp) / "root"
            sh(["cp", "-a", str(rootfs), str(stage)], 300)
            (stage / ".complete").unlink()
            for rel in L1_TRIM:
                p = stage / rel
                if p.is_dir():
                    shutil.rmtree(p)
                elif p.exists():
                    p.unlink()
            shutil.copy(HERE / "l1-init.sh", stage / "init")
            os.chmod(stage / "init", 0o755)
            (stage / "lib" / "modules" / "board").mkdir(parents=True)
            for mod in (kdir / "modules").iterdir():
                shutil.copy(mod, stage / "lib" / "modules" / "board" / mod.name)
            (stage / "boot").mkdir(exist_ok=True)
            shutil.copy(kdir / "vmlinuz", stage / "boot" / "vmlinuz")
            ensure_console(stage)
            write_cpio(stage, initrd, compress=False)
        for old in CACHE.glob("l1-*.cpio"):
            if old != initrd:
                old.unlink()
    b = Build(abi=abi, kernel_package=package, vmlinuz=kdir / "vmlinuz", l1_initrd=initrd, rootfs=rootfs,
              seconds=round(time.monotonic() - started, 1))
    log(f"build ready in {b.seconds:.1f} s: kernel {abi} ({package}), {initrd.name} "
        f"({initrd.stat().st_size // 2**20} MB)")
    return b


# --------------------------------------------------------------------------- the guest's initramfs

def elf_needed(path: Path) -> tuple[list[str], str | None]:
    """Shared libraries an ELF file needs, and its program interpreter (absolute path) if any."""
    out = subprocess.run(["aarch64-linux-gnu-readelf", "-d", "-l", str(path)], capture_output=True,
                         text=True).stdout
    interp = re.search(r"program interpreter: (/[^\]]+)\]", out)
    return re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", out), interp.group(1) if interp else None


def find_lib(rootfs: Path, name: str) -> Path:
    for d in ("lib/aarch64-linux-gnu", "usr/lib/aarch64-linux-gnu", "lib", "usr/lib"):
        if (rootfs / d / name).exists():
            return Path(d) / name
    raise BoardError(f"library {name} not found in the arm64 userland")


def copy_with_libs(rootfs: Path, rel: str, stage: Path) -> None:
    """Copy an arm64 binary and the shared libraries it needs (recursively), keeping their paths."""
    todo, done = [Path(rel)], set()
    while todo:
        r = todo.pop()
        if r in done:
            continue
        done.add(r)
        (stage / r).parent.mkdir(parents=True, exist_ok=True)
        src = rootfs / r
        if src.is_symlink():
            target = Path(os.path.normpath((src.parent / os.readlink(src)).relative_to(rootfs)))
            (stage / r).symlink_to(os.path.relpath(stage / target, (stage / r).parent))
            todo.append(target)
            continue
        shutil.copy2(src, stage / r)
        needed, interp = elf_needed(src)
        todo.extend(find_lib(rootfs, n) for n in needed)
        if interp:
            todo.append(Path(interp.lstrip("/")))


def build_guest_initrd(b: Build, work: Path) -> Path:
    """The guest's initramfs: busybox, cyclictest + libraries, static microbenchmarks, record.sh."""
    stage = work / "l2root"
    for d in ("bin", "usr/local/bin", "lib/modules", "proc", "sys", "dev", "tmp"):
        (stage / d).mkdir(parents=True, exist_ok=True)
    shutil.copy(b.rootfs / "bin" / "busybox", stage / "bin" / "busybox")
    copy_with_libs(b.rootfs, "usr/bin/cyclictest", stage)
    env = dict(os.environ, CROSS_COMPILE="aarch64-linux-gnu-", LDFLAGS="-static")
    sh(["sh", str(ROOT / "scripts" / "bench" / "build.sh"), str(stage / "usr" / "local" / "bin")], 120, env=env)
    bench = work / "in" / "bench"  # the same binaries for the emulated host's native runs
    bench.mkdir(parents=True, exist_ok=True)
    for name in ("kvmtrace-lat_mem_rd", "kvmtrace-lat_pagefault"):
        shutil.copy(stage / "usr" / "local" / "bin" / name, bench / name)
    for mod in (b.vmlinuz.parent / "modules").iterdir():
        shutil.copy(mod, stage / "lib" / "modules" / mod.name)
    for src, dest in (("l2-init.sh", "init"), ("l2-workload.sh", "workload.sh")):
        shutil.copy(HERE / src, stage / dest)
    shutil.copy(ROOT / "scripts" / "record.sh", stage / "record.sh")
    os.chmod(stage / "init", 0o755)
    ensure_console(stage)
    out = work / "in" / "l2.cpio.gz"
    write_cpio(stage, out, compress=True)
    return out


# --------------------------------------------------------------------------- one run

def run_qemu(argv: list[str], console: Path, timeout: float, echo: bool) -> int:
    """Run the emulated host with a hard timeout; its serial console goes to a file (and board: lines to us)."""
    with open(console, "wb") as log_fh:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                start_new_session=True)
        assert proc.stdout is not None
        stdout = proc.stdout

        def pump() -> None:
            for raw in stdout:
                log_fh.write(raw)
                log_fh.flush()
                line = raw.decode(errors="replace").rstrip()
                if echo or line.startswith(("board:", "kvmtrace record:")) or "Kernel panic" in line:
                    print(f"  | {line}", file=sys.stderr, flush=True)

        reader = threading.Thread(target=pump, daemon=True)
        reader.start()
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            reader.join(5)
            raise BoardError(f"the emulated host did not finish within {timeout:.0f} s (killed); "
                             f"console: {console}") from None
        reader.join(10)
        return rc


def host_cmdline() -> str:
    return "console=ttyAMA0 rdinit=/init panic=-1 loglevel=4"


def qemu_argv(b: Build, sc: Scenario, in_tar: Path, out_img: Path) -> list[str]:
    cpu = "max" if sc.mode == "vhe" else "cortex-a72"
    return ["qemu-system-aarch64", "-M", "virt,virtualization=on,gic-version=3", "-accel", "tcg,thread=multi",
            "-cpu", cpu, "-smp", "2", "-m", "3072", "-nodefaults", "-display", "none", "-monitor", "none",
            "-serial", "stdio", "-no-reboot", "-kernel", str(b.vmlinuz), "-initrd", str(b.l1_initrd),
            "-append", host_cmdline(),
            "-drive", f"if=none,id=in,file={in_tar},format=raw,readonly=on",
            "-device", "virtio-blk-device,drive=in,serial=kvmtrace-in",
            "-drive", f"if=none,id=out,file={out_img},format=raw",
            "-device", "virtio-blk-device,drive=out,serial=kvmtrace-out"]


def guest_timeout(sc: Scenario) -> int:
    """Seconds the guest may take inside the emulated host (boot, workload, power off), generously."""
    per_phase = sc.seconds * (2 if "cyclictest" in sc.workload else 0) + (120 if "mem" in sc.workload else 0)
    per_phase += (sc.seconds * 2 + 180) if sc.native else 0  # the native run comes first
    # a guest that records itself, or shares its CPU with a hog, runs several times slower under TCG
    return 60 + per_phase + (120 if sc.guest_trace else 0) + (60 if sc.load != "none" else 0)


def scenario_env(sc: Scenario) -> str:
    values = {"SCENARIO": sc.name, "VCPUS": sc.vcpus, "LOAD": sc.load, "WORKLOAD": sc.workload,
              "SECONDS_RUN": sc.seconds, "GUEST_TRACE": int(sc.guest_trace), "GUEST_MB": sc.guest_mb,
              "GUEST_BENCH_MB": sc.guest_bench_mb, "BUFFER_KB": sc.buffer_kb, "GUEST_TIMEOUT": guest_timeout(sc),
              "THP": sc.thp, "NATIVE": int(sc.native)}
    return "".join(f"{k}={shlex.quote(str(v))}\n" for k, v in values.items())


def run(sc: Scenario, dest: Path, timeout: float | None, echo: bool, keep: bool) -> dict[str, Any]:
    times: dict[str, float] = {}
    t0 = time.monotonic()
    b = build()
    times["build_s"] = b.seconds
    work = Path(tempfile.mkdtemp(prefix=f"run-{sc.name}-", dir=CACHE))
    try:
        t = time.monotonic()
        (work / "in").mkdir()
        build_guest_initrd(b, work)
        sh([sys.executable, str(ROOT / "scripts" / "build_pyz.py"), "-o", str(work / "in" / "kvmtrace-record.pyz")],
           120)
        for name in ("run.sh", "guest.sh"):
            shutil.copy(HERE / name, work / "in" / name)
        (work / "in" / "scenario.env").write_text(scenario_env(sc))
        in_tar = work / "in.tar"
        with tarfile.open(in_tar, "w", format=tarfile.USTAR_FORMAT) as tf:
            for p in sorted((work / "in").iterdir()):
                tf.add(p, arcname=p.name)
        out_img = work / "out.img"
        with open(out_img, "wb") as fh:
            fh.truncate(2 * 2**30)
        times["prepare_s"] = round(time.monotonic() - t, 1)
        limit = timeout or (90 + guest_timeout(sc) + 60)
        argv = qemu_argv(b, sc, in_tar, out_img)
        log(f"booting the emulated {sc.mode.upper()} host ({limit:.0f} s limit): {sc.description}")
        t = time.monotonic()
        rc = run_qemu(argv, work / "host-console.txt", limit, echo)
        times["emulator_s"] = round(time.monotonic() - t, 1)
        if rc != 0:
            raise BoardError(f"the emulator exited with code {rc}; console: {work / 'host-console.txt'}")
        t = time.monotonic()
        result = collect(b, sc, work, dest, argv)
        times["collect_s"] = round(time.monotonic() - t, 1)
        times["total_s"] = round(time.monotonic() - t0, 1)
        result["times"] = times
        (dest / "board.json").write_text(json.dumps(result, indent=2) + "\n")
        log("times: " + ", ".join(f"{k} {v}" for k, v in times.items()))
        log(f"capture: {dest}")
        return result
    except BaseException:
        log(f"work directory kept for inspection: {work}")
        keep = True
        raise
    finally:
        if not keep:
            shutil.rmtree(work, ignore_errors=True)


def collect(b: Build, sc: Scenario, work: Path, dest: Path, argv: list[str]) -> dict[str, Any]:
    """Unpack the results tar and lay out the capture directory; fail on anything missing."""
    out = work / "out"
    out.mkdir()
    try:
        with tarfile.open(work / "out.img") as tf:
            tf.extractall(out)  # our own archive
    except tarfile.ReadError:
        raise BoardError(f"no results came back from the emulated host; console: {work / 'host-console.txt'}") \
            from None
    cap = out / "capture"
    log_text = (out / "record.log").read_text(errors="replace") if (out / "record.log").exists() else ""
    if not (cap / "trace.dat").is_file() or not (cap / "capture.json").is_file():
        raise BoardError(f"the recorder left no trace.dat/capture.json; record.log:\n{log_text[-2000:]}")
    bad = [line for line in log_text.splitlines() if "board: ERROR" in line or ": not found" in line]
    if bad:
        raise BoardError("the emulated host reported: " + "; ".join(bad[:5]))
    manifest = json.loads((cap / "capture.json").read_text())
    status = manifest.get("record", {}).get("status", "?")
    if status != "complete":
        raise BoardError(f"recording status {status!r}; record.log:\n{log_text[-2000:]}")
    console = (out / "guest-console.txt").read_text(errors="replace") if (out / "guest-console.txt").exists() else ""
    errors = [line for line in console.splitlines() if line.startswith("L2_ERROR") or ": not found" in line]
    if errors or "L2_POWEROFF" not in console:
        raise BoardError("the guest did not finish its workload cleanly: "
                         + ("; ".join(errors[:5]) or "no L2_POWEROFF line") + f"\n{console[-1500:]}")
    if dest.exists():
        shutil.rmtree(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(cap), dest)
    # the guest's RAM in QEMU's virt machine starts at 1 GiB (IPA); kvmtrace faults names regions from it
    if not manifest.get("guest_memory"):
        manifest["guest_memory"] = [{"name": "ram", "start": 0x40000000, "size": sc.guest_mb * 2**20}]
    (dest / "capture.json").write_text(json.dumps(manifest, indent=2) + "\n")
    for name in ("guest-console.txt", "record.log", "guest-qemu-stderr.txt"):
        if (out / name).exists():
            shutil.copy(out / name, dest / name)
    shutil.copy(work / "host-console.txt", dest / "host-console.txt")
    dmesg = (out / "host-dmesg.txt").read_text(errors="replace") if (out / "host-dmesg.txt").exists() else ""
    kvm_lines = [line for line in dmesg.splitlines() if "kvm" in line.lower()]
    (dest / "host-dmesg-kvm.txt").write_text("\n".join(kvm_lines) + "\n")
    if sc.native:
        native = out / "native"
        if not (native / "trace.dat").is_file():
            raise BoardError("the native run on the emulated host left no capture (native/trace.dat)")
        shutil.move(str(native), dest / "native")
    guest = None
    raw = out / "guest-raw" / "raw"
    if sc.guest_trace:
        if not raw.is_dir():
            raise BoardError("the guest-side recording did not come back (guest-raw/raw missing)")
        guest = dest / "guest"
        sh([sys.executable, "-m", "kvmtrace.record", "--from-raw", str(raw), "-o", str(guest), "-q"], 300,
           cwd=ROOT)
        verbose = out / "guest-raw" / "cyclictest.txt"
        if verbose.is_file():  # the guest's cyclictest -v output: one line per loop (thread: loop: us)
            shutil.copy(verbose, guest / "cyclictest.txt")
        gman = json.loads((guest / "capture.json").read_text())
        gman["side"] = "guest"  # record.sh ran inside the guest (its raw info does not say so)
        (guest / "capture.json").write_text(json.dumps(gman, indent=2) + "\n")
    qemu_version = sh(["qemu-system-aarch64", "--version"], 30).stdout.splitlines()[0]
    return {
        "scenario": asdict(sc),
        "kernel": {"abi": b.abi, "package": b.kernel_package},
        "emulator": {"version": qemu_version, "argv": argv},
        "host_kvm": kvm_lines,
        "guest_capture": "guest" if guest else None,
        "made_by": "scripts/board/board.py run " + sc.name,
        "made_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


# --------------------------------------------------------------------------- bundling for captures/

def bundle(src: Path, dest: Path, start: float | None, end: float | None) -> None:
    """A small copy of a board capture: optionally cut to [start, end] s, as trace.dat v7 zstd."""
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        cut = src / "trace.dat"
        if start is not None or end is not None:
            cut = Path(tmp) / "cut.dat"
            # the times are positional (-s and -e would split into files every N seconds / events)
            argv = ["trace-cmd", "split", "-i", str(src / "trace.dat"), "-o", str(cut),
                    str(start if start is not None else 0)]
            if end is not None:
                argv.append(str(end))
            sh(argv, 300)
            if not cut.exists():  # trace-cmd split names its output cut.dat.1 with some versions
                cut = next(Path(tmp).glob("cut.dat*"))
        sh(["trace-cmd", "convert", "-i", str(cut), "-o", str(dest / "trace.dat"), "--file-version", "7",
            "--compression", "zstd"], 300)
    for name in ("capture.json", "board.json", "guest-console.txt", "host-dmesg-kvm.txt", "cyclictest.txt"):
        if (src / name).exists():
            shutil.copy(src / name, dest / name)
    # the guest's own recording and the study's native run, whole (they are small), with their side files
    for sub in ("guest", "native"):
        if not (src / sub / "trace.dat").exists():
            continue
        (dest / sub).mkdir(exist_ok=True)
        sh(["trace-cmd", "convert", "-i", str(src / sub / "trace.dat"), "-o", str(dest / sub / "trace.dat"),
            "--file-version", "7", "--compression", "zstd"], 300)
        for side in sorted((src / sub).iterdir()):
            if side.name != "trace.dat" and side.suffix in (".json", ".txt"):
                shutil.copy(side, dest / sub / side.name)
    if (dest / "board.json").exists():
        info = json.loads((dest / "board.json").read_text())
        info["bundled"] = {"by": "scripts/board/board.py bundle", "cut_s": [start, end],
                           "trace": "trace-cmd convert --file-version 7 --compression zstd"}
        (dest / "board.json").write_text(json.dumps(info, indent=2) + "\n")
    log(f"bundled {dest}: {sum(p.stat().st_size for p in dest.iterdir()) // 1024} KB")


# --------------------------------------------------------------------------- command line

def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("setup", help="install the host packages (root)")
    sub.add_parser("setup-if-needed", help="install the host packages when some are missing (root)")
    pb = sub.add_parser("build", help="build (or check) the cached kernel and images")
    pb.add_argument("--force", action="store_true", help="rebuild the initramfs")
    sub.add_parser("list", help="list the scenarios")
    pr = sub.add_parser("run", help="run a scenario and collect its capture")
    pr.add_argument("scenario", choices=sorted(SCENARIOS))
    pr.add_argument("-o", "--output", type=Path,
                    help="capture directory (default $KVMTRACE_BOARD_CACHE/captures/SCENARIO)")
    pr.add_argument("--seconds", type=int, help="length of the cyclictest phase (default 10)")
    pr.add_argument("--bench-mb", type=int, help="memory benchmarks' region in the guest, MB (default 64)")
    pr.add_argument("--guest-trace", action="store_true",
                    help="also record inside the guest (and keep cyclictest -v), whatever the scenario")
    pr.add_argument("--timeout", type=float, help="hard limit for the emulator run, seconds")
    pr.add_argument("--echo", action="store_true", help="show the emulated host's whole console")
    pr.add_argument("--keep", action="store_true", help="keep the work directory in the cache")
    pu = sub.add_parser("bundle", help="trim and compress a capture for captures/")
    pu.add_argument("src", type=Path)
    pu.add_argument("dest", type=Path)
    pu.add_argument("--start", type=float, help="cut from this trace time, s")
    pu.add_argument("--end", type=float, help="cut up to this trace time, s")
    args = p.parse_args(argv)
    try:
        if args.cmd == "setup":
            setup()
        elif args.cmd == "setup-if-needed":
            if missing_tools():
                setup()
        elif args.cmd == "build":
            build(force=args.force)
        elif args.cmd == "list":
            for sc in SCENARIOS.values():
                print(f"{sc.name:16} {sc.description}")
        elif args.cmd == "run":
            sc = SCENARIOS[args.scenario]
            if args.seconds:
                sc.seconds = args.seconds
            if args.bench_mb:
                sc.guest_bench_mb = args.bench_mb
            if args.guest_trace:
                sc.guest_trace = True
            run(sc, args.output or CACHE / "captures" / sc.name, args.timeout, args.echo, args.keep)
        elif args.cmd == "bundle":
            bundle(args.src, args.dest, args.start, args.end)
    except BoardError as exc:
        print(f"board: FAILED: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
