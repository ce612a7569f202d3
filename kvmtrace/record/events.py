"""Event presets (``latency``, ``faults``, ``all-kvm``) and their resolution against this kernel.

A preset names events of both architectures (x86 and arm64 differ); whatever this kernel lacks
is reported as missing, never fatal. Events given with ``-e`` must exist. Spellings:
``system:event``, a bare ``event`` (searched in every system), ``system:*`` or ``system`` (all
events of a system).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

_KVM_LATENCY = [
    "kvm:kvm_entry", "kvm:kvm_exit", "kvm:kvm_vcpu_wakeup", "kvm:kvm_wfx_arm64",
    # arm64 arch timer and vgic injection
    "kvm:kvm_timer_update_irq", "kvm:kvm_timer_save_state", "kvm:kvm_timer_restore_state",
    "kvm:kvm_timer_hrtimer_expire", "kvm:kvm_timer_emulate", "kvm:vgic_update_irq_pending",
    "kvm:kvm_irq_line", "kvm:kvm_set_irq",
    # x86 injection
    "kvm:kvm_inj_virq", "kvm:kvm_apic_accept_irq", "kvm:kvm_apicv_accept_irq",
]
_HOST_LATENCY = [
    "sched:sched_switch", "sched:sched_wakeup", "sched:sched_waking",
    "irq:irq_handler_entry", "irq:irq_handler_exit",
    "timer:hrtimer_expire_entry", "timer:hrtimer_expire_exit",
    # the expiry KVM arms for a blocked vCPU: with the mono clock, the guest's exact deadline
    "timer:hrtimer_start",
    "irq:softirq_entry", "irq:softirq_exit",
    "ipi:*",
]
PRESETS: dict[str, list[str]] = {
    "latency": _KVM_LATENCY + _HOST_LATENCY,
    "faults": [
        "kvm:kvm_guest_fault", "kvm:kvm_access_fault", "kvm:kvm_mmio", "kvm:kvm_userspace_exit",
        "kvm:kvm_exit", "kvm:kvm_entry",
        "kvm:kvm_page_fault",  # x86 EPT/NPT faults
        "exceptions:page_fault_user", "exceptions:page_fault_kernel",  # guest-side view on x86
    ],
    "all-kvm": ["kvm:*", "kvmmmu:*?"],
    "none": [],
}


@dataclass
class EventSelection:
    """What will be enabled, and what the presets asked for that this kernel lacks."""

    events: list[tuple[str, str]] = field(default_factory=list)  # (system, event)
    missing: list[str] = field(default_factory=list)
    presets: list[str] = field(default_factory=list)

    def add(self, system: str, event: str) -> None:
        if (system, event) not in self.events:
            self.events.append((system, event))

    def names(self) -> list[str]:
        return [f"{s}:{e}" for s, e in self.events]


class EventCatalog:
    """The events of an ``events/`` directory: system -> event names."""

    def __init__(self, events_dir: str) -> None:
        self.systems: dict[str, list[str]] = {}
        for system in sorted(_listdir(events_dir)):
            path = os.path.join(events_dir, system)
            if os.path.isdir(path):
                self.systems[system] = sorted(e for e in _listdir(path)
                                              if os.path.isdir(os.path.join(path, e)))

    def has(self, system: str, event: str) -> bool:
        return event in self.systems.get(system, ())

    def find(self, spec: str) -> list[tuple[str, str]]:
        """Events matching one spelling; empty when none exist here."""
        spec = spec.rstrip("?")
        if ":" in spec:
            system, event = spec.split(":", 1)
        elif spec in self.systems:
            system, event = spec, "*"
        else:
            return [(s, spec) for s, evs in self.systems.items() if spec in evs][:1]
        if event in ("*", ""):
            return [(system, e) for e in self.systems.get(system, ())]
        return [(system, event)] if self.has(system, event) else []


def _listdir(path: str) -> list[str]:
    try:
        return os.listdir(path)
    except OSError:
        return []


def resolve(catalog: EventCatalog, presets: list[str], extra: list[str]) -> EventSelection:
    """Presets (missing events listed) plus ``-e`` events (an unknown one is an error)."""
    sel = EventSelection(presets=list(presets))
    for preset in presets:
        if preset not in PRESETS:
            raise ValueError(f"unknown preset {preset!r}: expected one of {', '.join(PRESETS)}")
        for spec in PRESETS[preset]:
            found = catalog.find(spec)
            if not found and not spec.endswith("?") and spec not in sel.missing:
                sel.missing.append(spec)
            for system, event in found:
                sel.add(system, event)
    for spec in extra:
        found = catalog.find(spec)
        if not found:
            raise ValueError(f"unknown event {spec!r}: not in this kernel's tracefs events/")
        for system, event in found:
            sel.add(system, event)
    return sel
