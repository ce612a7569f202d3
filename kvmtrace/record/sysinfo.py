"""Facts about the machine being traced: kernel, architecture, CPU model, KVM mode, host or guest side."""

from __future__ import annotations

import os
import platform
import re
from typing import Any

# arm64 MIDR part numbers (implementer 0x41, Arm) of common boards.
_ARM_PARTS = {
    0xC07: "Cortex-A7", 0xC0F: "Cortex-A15", 0xD03: "Cortex-A53", 0xD04: "Cortex-A35",
    0xD05: "Cortex-A55", 0xD07: "Cortex-A57", 0xD08: "Cortex-A72", 0xD09: "Cortex-A73",
    0xD0A: "Cortex-A75", 0xD0B: "Cortex-A76", 0xD0C: "Neoverse-N1", 0xD0D: "Cortex-A77",
    0xD40: "Neoverse-V1", 0xD41: "Cortex-A78", 0xD44: "Cortex-X1", 0xD46: "Cortex-A510",
    0xD47: "Cortex-A710", 0xD49: "Neoverse-N2", 0xD4F: "Neoverse-V2",
}


def _read(path: str, default: str = "") -> str:
    try:
        with open(path, errors="replace") as fh:
            return fh.read()
    except OSError:
        return default


def _listdir(path: str) -> list[str]:
    try:
        return os.listdir(path)
    except OSError:
        return []


def uname_line() -> str:
    """``uname -a`` style: sysname nodename release version machine."""
    u = os.uname()
    return f"{u.sysname} {u.nodename} {u.release} {u.version} {u.machine}"


def cpu_model() -> str:
    text = _read("/proc/cpuinfo")
    m = re.search(r"^model name\s*:\s*(.+)$", text, re.MULTILINE)
    if m:
        return m.group(1).strip()
    parts = sorted({int(p, 16) for p in re.findall(r"^CPU part\s*:\s*(0x[0-9a-fA-F]+)", text, re.MULTILINE)})
    names = [_ARM_PARTS.get(p, f"part {p:#x}") for p in parts]
    board = _read("/sys/firmware/devicetree/base/model").strip("\0\n ")
    model = ", ".join(names) or (re.search(r"^Hardware\s*:\s*(.+)$", text, re.MULTILINE) or [None, ""])[1]
    return f"{model} ({board})" if board and model else (model or board or platform.processor() or "unknown")


def _kernel_log() -> str:
    """What is left of the kernel log (root only), read without blocking."""
    try:
        fd = os.open("/dev/kmsg", os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return ""
    chunks: list[str] = []
    try:
        while len(chunks) < 20000:
            try:
                chunks.append(os.read(fd, 8192).decode(errors="replace"))
            except BlockingIOError:
                break
            except OSError:  # EPIPE when records were overwritten: keep reading
                continue
    finally:
        os.close(fd)
    return "".join(chunks)


def kvm_mode() -> str | None:
    """vhe / nvhe / protected (arm64), vmx / svm with ept/npt (x86), or None."""
    if os.path.isdir("/sys/module/kvm_intel"):
        return "vmx, ept" if _read("/sys/module/kvm_intel/parameters/ept").strip() == "Y" else "vmx"
    if os.path.isdir("/sys/module/kvm_amd"):
        return "svm, npt" if _read("/sys/module/kvm_amd/parameters/npt").strip() in ("Y", "1") else "svm"
    others = sorted(n[4:] for n in _listdir("/sys/module") if n.startswith("kvm_"))
    if others:  # e.g. kvm_pvm
        return others[0]
    m = re.search(r"kvm-arm\.mode=(\S+)", _read("/proc/cmdline"))
    if m:
        return m.group(1)
    if not os.path.exists("/dev/kvm"):
        return None
    log = _kernel_log()
    for pattern, mode in (("Protected nVHE mode initialized", "protected"), ("VHE mode initialized", "vhe"),
                          ("Hyp mode initialized", "nvhe")):
        if pattern in log:
            return mode
    return "unknown"


def virtualized() -> bool:
    """Whether this kernel runs in a virtual machine (x86 hypervisor flag, DT hypervisor node, DMI)."""
    if re.search(r"^flags\s*:.*\bhypervisor\b", _read("/proc/cpuinfo"), re.MULTILINE):
        return True
    if os.path.exists("/sys/firmware/devicetree/base/hypervisor") or os.path.exists("/sys/hypervisor/type"):
        return True
    dmi = _read("/sys/class/dmi/id/sys_vendor") + _read("/sys/class/dmi/id/product_name")
    return bool(re.search(r"QEMU|KVM|VMware|VirtualBox|Xen|Microsoft|Amazon EC2|Google", dmi))


def detect_side() -> str:
    """``host`` when this kernel can run KVM guests (/dev/kvm), ``guest`` when it is virtualized, else host."""
    if os.path.exists("/dev/kvm"):
        return "host"
    return "guest" if virtualized() else "host"


def host_facts() -> dict[str, Any]:
    u = os.uname()
    mem = re.search(r"^MemTotal:\s*(\d+)", _read("/proc/meminfo"), re.MULTILINE)
    return {
        "kernel": u.release,
        "uname": uname_line(),
        "arch": u.machine,
        "cpu_model": cpu_model(),
        "cpus": os.cpu_count(),
        "memory_kb": int(mem.group(1)) if mem else None,
        "kvm_mode": kvm_mode(),
        "kvm_available": os.path.exists("/dev/kvm"),
        "virtualized": virtualized(),
        "hostname": u.nodename,
        "cmdline": _read("/proc/cmdline").strip(),
        "sched_rt_runtime_us": _int(_read("/proc/sys/kernel/sched_rt_runtime_us")),
        "sched_rt_period_us": _int(_read("/proc/sys/kernel/sched_rt_period_us")),
    }


def _int(text: str) -> int | None:
    try:
        return int(text.strip())
    except ValueError:
        return None
