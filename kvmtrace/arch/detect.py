"""The one architecture detector: which KVM port wrote a capture, in kvmtrace's vocabulary.

``kvm_arch`` names the KVM port (``arm64``, ``x86``, ``arm32``: the decoder module in ``kvmtrace.arch``)
from the fields of ``kvm_exit``, which is what the decoders depend on. ``machine`` names the traced
machine as ``uname -m`` does (``aarch64``, ``x86_64``, ``arm``, or whatever uname says, e.g.
``riscv64``) for ``kvmtrace info``: from the uname string when the capture has one, else from the
KVM events.
"""

from __future__ import annotations

import re

KVM_ARCHES = ("arm64", "x86", "arm32")
MACHINE_OF = {"arm64": "aarch64", "x86": "x86_64", "arm32": "arm"}
_UNAME_RE = re.compile(r"\b(aarch64|arm64|armv\d\w*|x86_64|i[3-6]86|riscv64|ppc64le|s390x)\b")


def kvm_arch(kvm_exit_fields: set[str]) -> str:
    """``arm64`` (kvm_exit has ``esr_ec``), ``x86`` (``exit_reason``), else ``arm32`` (only a PC)."""
    if "esr_ec" in kvm_exit_fields:
        return "arm64"
    if "exit_reason" in kvm_exit_fields:
        return "x86"
    return "arm32"


def _kvm_arch_of_events(event_names: set[str], kvm_exit_fields: set[str]) -> str | None:
    """The KVM port from the events present, or None when there is no KVM event to tell."""
    if "esr_ec" in kvm_exit_fields or "kvm_wfx_arm64" in event_names:
        return "arm64"
    if "exit_reason" in kvm_exit_fields or "kvm_inj_virq" in event_names:
        return "x86"
    if "kvm_exit" in event_names and kvm_exit_fields <= {"vcpu_pc"}:
        return "arm32"
    return None


def machine(uname: str | None, event_names: set[str], kvm_exit_fields: set[str]) -> str | None:
    """The traced machine (``uname -m`` style): from uname, else from which KVM events it has."""
    if uname:
        m = _UNAME_RE.search(uname)
        if m:
            return {"arm64": "aarch64"}.get(m.group(1), m.group(1))
    port = _kvm_arch_of_events(event_names, kvm_exit_fields)
    return MACHINE_OF[port] if port is not None else None
