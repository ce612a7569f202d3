"""Scenario presets for ``kvmtrace synth``: documented parameter sets, overridable with ``--set``.

Times in the parameters are microseconds unless the key says otherwise. A duration is a
*distribution*: ``{"median_us": m, "sigma": s, "min_us": a, "max_us": b}`` (log-normal, clipped),
``{"const_us": v}``, or ``{"mix": [[weight, dist], ...]}``. See docs/synth.md for every key.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import numpy as np


def ln(median: float, sigma: float, lo: float = 0.0, hi: float = 1e9) -> dict[str, float]:
    return {"median_us": median, "sigma": sigma, "min_us": lo, "max_us": hi}


def sample(dist: dict[str, Any], rng: np.random.Generator, n: int) -> np.ndarray:
    """Draw ``n`` durations (int64 nanoseconds, at least 1) from a distribution spec."""
    if "const_us" in dist:
        out = np.full(n, float(dist["const_us"]))
    elif "mix" in dist:
        weights = np.array([float(w) for w, _ in dist["mix"]])
        pick = rng.choice(len(weights), size=n, p=weights / weights.sum())
        out = np.zeros(n)
        for i, (_w, sub) in enumerate(dist["mix"]):
            sel = pick == i
            out[sel] = sample(sub, rng, int(sel.sum())) / 1000.0
    else:
        out = float(dist["median_us"]) * np.exp(float(dist.get("sigma", 0.0)) * rng.standard_normal(n))
        out = np.clip(out, float(dist.get("min_us", 0.0)), float(dist.get("max_us", 1e9)))
    return np.maximum(np.rint(out * 1000.0), 1).astype(np.int64)


# --------------------------------------------------------------------------- common parameters

_ARM64_KERNEL = "Linux kvmhost 6.1.0-56-arm64 #1 SMP Debian 6.1.192-2 aarch64 GNU/Linux"

BASE: dict[str, Any] = {
    "description": "",
    "arch": "arm64",
    "ncpus": 2,
    "hz": 250,
    "uname": _ARM64_KERNEL,
    "cpu_model": "emulated arm64 (synthetic)",
    "counter_hz": 62_500_000,      # CNTFRQ: 62.5 MHz (QEMU virt); arm32 preset: 24 MHz (Arndale)
    "counter_offset_s": 4.25,      # guest counter = (trace clock + offset) * counter_hz
    "start_s": 5.0,                # trace clock of the first event
    "side": "guest",               # "guest": cyclictest in the guest; "host": on the host itself
    "vmm_pid": 466,
    "vcpu_comm": "qemu-system-aar",
    "vcpus": [{"tid": 468, "cpu": 0, "policy": "other", "prio": 0, "nice": 0}],
    "guest_ram": {"start": 0x40000000, "size_mb": 1024},
    "cyclictest": {"interval_us": 1000, "loops": 5000, "prio": 99, "tid": 86, "post_us": ln(15, 0.3, 5, 200)},
    "hog": None,                   # {"comm", "pid", "cpu", "policy": "other"|"fifo", "prio", "nice"}
    "background": [
        {"comm": "kworker/0:1", "pid": 16, "cpu": 0, "policy": "other", "prio": 0, "rate_hz": 20,
         "burst": ln(25, 0.6, 3, 2000)},
        {"comm": "rcu_sched", "pid": 14, "cpu": 1, "policy": "other", "prio": 0, "rate_hz": 30,
         "burst": ln(10, 0.4, 2, 200)},
    ],
    # CFS (per-CPU-count scaled values as the kernel computes them for 2 CPUs)
    "cfs": {"latency_us": 12000, "min_gran_us": 1500, "wakeup_gran_us": 2000},
    "stages": {
        "timer": ln(6, 0.35, 1, 80),            # deadline -> host irq_handler_entry
        "host_irq": ln(3, 0.3, 0.5, 40),        # irq entry -> sched_wakeup (blocked) / injection (running)
        "irq_tail": ln(1.5, 0.3, 0.3, 20),      # sched_wakeup -> irq_handler_exit
        "sched": ln(4, 0.3, 0.5, 50),           # irq exit -> sched_switch when the CPU is free or preemptible
        "inject": ln(5, 0.3, 1, 50),            # switch-in -> kvm_timer_update_irq
        "entry": ln(12, 0.3, 2, 100),           # injection -> kvm_entry (blocked path)
        "r_exit": ln(2, 0.3, 0.3, 30),          # running: injection -> kvm_exit
        "r_entry": ln(3, 0.3, 0.5, 30),         # running: kvm_exit -> kvm_entry
        "tick": ln(3, 0.3, 1, 40),              # a host tick's handler (irq_handler_entry -> exit)
        "guest_handling": ln(10, 0.35, 2, 500), # kvm_entry -> the guest's cyclictest sees the time
        "host_user": ln(6, 0.3, 1, 200),        # host side: sched_switch -> host cyclictest reads the time
        "block": ln(8, 0.2, 4, 40),             # kvm_exit WFx -> sched_switch (vCPU blocks)
    },
    "guest": {
        "busy_prob": 0.05,                      # after a loop the guest has extra work ...
        "busy": ln(600, 0.6, 50, 20000),        # ... of this much guest time
    },
    # exits while the guest runs: rate per second of guest time, handling distribution
    "exits": {
        "IRQ": {"rate_hz": 250, "handling": ln(4, 0.3, 1, 50)},
        "SYS64": {"rate_hz": 200, "handling": ln(3, 0.3, 1, 50)},
        "HVC64": {"rate_hz": 5, "handling": ln(6, 0.3, 1, 80)},
        "MMIO_UART": {"rate_hz": 10, "handling": ln(40, 0.4, 10, 500)},
        "MMIO_VIRTIO": {"rate_hz": 20, "handling": ln(30, 0.4, 8, 400)},
        "MMIO_GIC": {"rate_hz": 50, "handling": ln(4, 0.3, 1, 50)},
        "RAM": {"rate_hz": 0, "handling": ln(12, 0.5, 3, 400)},
        "ACCESS": {"rate_hz": 2, "handling": ln(3, 0.3, 1, 40)},
    },
    "boot": {"guest_ms": 400, "exits": {
        "RAM": {"rate_hz": 40000, "handling": ln(14, 0.6, 3, 600)},
        "IABT": {"rate_hz": 4000, "handling": ln(14, 0.6, 3, 600)},
        "MMIO_UART": {"rate_hz": 3000, "handling": ln(40, 0.4, 10, 500)},
        "MMIO_VIRTIO": {"rate_hz": 800, "handling": ln(30, 0.4, 8, 400)},
        "MMIO_GIC": {"rate_hz": 1500, "handling": ln(4, 0.3, 1, 50)},
        "SYS64": {"rate_hz": 2000, "handling": ln(3, 0.3, 1, 50)},
        "HVC64": {"rate_hz": 100, "handling": ln(6, 0.3, 1, 80)},
        "IRQ": {"rate_hz": 250, "handling": ln(4, 0.3, 1, 50)},
    }},
    "lmbench": None,               # {"mb": 64, "guest_ms": 300}: first-touch faults in a benchmark phase
    "results": None,               # benchmark result lines written as `kvmtrace result ...` markers
    "record": {"hrtimer": True},   # False: recorded without the timer events (-e kvm -e sched -e irq)
    # the kernel's real-time bandwidth (sched_rt_runtime_us / sched_rt_period_us): throttles a FIFO vCPU
    "rt": {"runtime_us": 950_000, "period_us": 1_000_000},
    # the VMM's main thread (on a CPU without a vCPU): its device interrupt (kvm_irq_line), how long before
    # the vCPU's CPU sees its IPI (its kick) it injects, how long it runs; exits.DEVICE: how often it does
    # while the guest runs (and, in wall time, while the vCPU thread is throttled)
    "vmm": {"spi": 79, "lead": ln(8, 0.3, 4, 30), "run": ln(20, 0.4, 6, 80)},
    "early_wake": None,            # the VMM wakes the blocked vCPU before its deadline (docs/synth.md)
    "extra_timer": None,           # the sleeping guest's other timers (docs/synth.md)
    "idle": None,                  # the vCPU's background timer migrates; its CPU exits deep idle late
    "stalls": None,                # whole-machine stalls: {"rate_hz", "duration", "first_ms"}
}


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict) and "median_us" not in v:
            out[k] = _merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


_STUDY_COMMON: dict[str, Any] = {
    "hz": 100,
    "uname": "Linux arndale 3.8.0-rc4-kvm-arm #1 SMP armv7l GNU/Linux (events in arm64 6.1 form)",
    "cpu_model": "Cortex-A15 1.7 GHz x 2 (Arndale, modelled)",
    "counter_hz": 24_000_000,
    "cyclictest": {"interval_us": 30000, "loops": 120000, "prio": 99, "tid": 1203,
                   "post_us": ln(20, 0.3, 5, 200)},
    # device interrupts run as threaded handlers (SCHED_FIFO 50) on CPU 0: the host's FIFO 99
    # cyclictest preempts them, the SCHED_OTHER vCPU thread has to wait for them
    "background": [
        {"comm": "irq/109-dw-mci", "pid": 75, "cpu": 0, "policy": "fifo", "prio": 50, "rate_hz": 0.8,
         "burst": {"mix": [[0.9, ln(120, 0.6, 20, 2000)], [0.1, ln(2500, 0.8, 500, 9300)]]}},
        {"comm": "kworker/0:1", "pid": 16, "cpu": 0, "policy": "other", "prio": 0, "rate_hz": 10,
         "burst": ln(30, 0.6, 3, 1500)},
        {"comm": "rcu_sched", "pid": 9, "cpu": 1, "policy": "other", "prio": 0, "rate_hz": 10,
         "burst": ln(10, 0.4, 2, 200)},
    ],
    "stages": {
        "timer": ln(56, 0.22, 20, 140),
        "host_irq": ln(6, 0.3, 2, 30),
        "irq_tail": ln(2, 0.3, 0.5, 20),
        "sched": ln(8, 0.3, 2, 40),
        "inject": ln(14, 0.35, 4, 80),
        "entry": ln(40, 0.4, 10, 300),
        "r_exit": ln(4, 0.3, 1, 30),
        "r_entry": ln(10, 0.3, 2, 60),
        "tick": ln(6, 0.3, 2, 40),
        "guest_handling": ln(58, 0.3, 15, 400),
        "host_user": ln(8, 0.3, 2, 40),
        "block": ln(10, 0.2, 4, 40),
    },
    "guest": {"busy_prob": 0.02, "busy": ln(2000, 0.8, 100, 20000)},
    "boot": None,
}

PRESETS: dict[str, dict[str, Any]] = {
    "study-guest": _merge(BASE, {**_STUDY_COMMON, "side": "guest", "description":
        "The study's guest run: cyclictest SCHED_FIFO 99, 30 ms interval, in a 1-vCPU KVM guest "
        "(vCPU thread SCHED_OTHER on CPU 0, where threaded device IRQs run at SCHED_FIFO 50).",
        # the benchmark figures are inputs, the study's own (the simulator models no caches or TLBs)
        "results": ["lat_mem_rd pattern=seq size_mb=256 stride=64 latency_ns=96.20",
                    "lat_mem_rd pattern=random size_mb=256 stride=64 latency_ns=273.75",
                    "lat_pagefault kind=file us_per_fault=2.38"]}),
    "study-host": _merge(BASE, {**_STUDY_COMMON, "side": "host", "description":
        "The study's host run: the same cyclictest on the host itself (SCHED_FIFO 99, CPU 0), "
        "same background load; no guest.",
        "results": ["lat_mem_rd pattern=seq size_mb=256 stride=64 latency_ns=95.60",
                    "lat_mem_rd pattern=random size_mb=256 stride=64 latency_ns=122.30",
                    "lat_pagefault kind=file us_per_fault=2.40"]}),
    "hog": _merge(BASE, {
        "description": "A SCHED_OTHER CPU hog shares the vCPU thread's CPU; the guest runs "
                       "cyclictest at 1 ms plus CPU-bound work, so CFS makes the vCPU wait.",
        "hog": {"comm": "stress-ng-cpu", "pid": 900, "cpu": 0, "policy": "other", "prio": 0, "nice": 0},
        "guest": {"busy_prob": 0.4, "busy": ln(700, 0.5, 100, 3000)},
        "cyclictest": {"loops": 10000},
    }),
    "rt-vcpu": _merge(BASE, {
        "description": "As 'hog', with the vCPU thread at SCHED_FIFO 90: it preempts the hog.",
        "hog": {"comm": "stress-ng-cpu", "pid": 900, "cpu": 0, "policy": "other", "prio": 0, "nice": 0},
        "vcpus": [{"tid": 468, "cpu": 0, "policy": "fifo", "prio": 90, "nice": 0}],
        "guest": {"busy_prob": 0.4, "busy": ln(700, 0.5, 100, 3000)},
        "cyclictest": {"loops": 10000},
    }),
    "boot-faults": _merge(BASE, {
        "description": "Guest boot (stage-2 fault storm, UART/virtio MMIO) then an lmbench phase "
                       "that touches fresh memory, then a short cyclictest.",
        "boot": {"guest_ms": 800},
        "lmbench": {"mb": 64, "guest_ms": 300},
        "cyclictest": {"loops": 2000},
    }),
}
# the adversarial presets (docs/synth.md, "Adversarial mechanisms"): captures that disagree with the
# easy assumptions an analysis might make
_EARLY_WAKE: dict[str, Any] = {
    "prob": 0.25,                  # of the blocked waits, the VMM wakes this share before the deadline ...
    "kick_share": 0.35,            # ... by signalling the vCPU thread (KVM_EXIT_INTR), else with a device SPI
    "lead": {"mix": [[0.5, ln(40, 0.8, 5, 300)], [0.5, ln(400, 0.5, 80, 950)]]},  # wakeup -> deadline
    "device_handling": ln(25, 0.4, 8, 150),  # the guest's device interrupt handler
    "user_rt": ln(25, 0.4, 10, 120),        # KVM_EXIT_INTR -> back in KVM_RUN (QEMU's signal handling)
    "rewfi_us": 3,                          # kick before the deadline: the guest idles again at once
}
PRESETS["adversarial"] = _merge(PRESETS["hog"], {
    "description": "As 'hog', with the VMM waking the blocked vCPU before its deadline (device interrupts "
                   "through kvm_irq_line, kicks through KVM_EXIT_INTR, relayed by an IPI), timer interrupts "
                   "2-10 us after the deadline, saves that read ISTATUS.",
    "stages": {"timer": ln(4, 0.4, 2, 10)},
    "guest": {"busy_prob": 0.3, "busy": ln(500, 0.5, 100, 2000)},
    "cyclictest": {"loops": 2000},
    "early_wake": _EARLY_WAKE,
    # the sleeping guest's other timers, due before cyclictest's: its virtual timer reprogrammed to an
    # earlier deadline (a driver's timeout), or its physical timer (PPI 30)
    "extra_timer": {"prob": 0.06, "ptimer_share": 0.5, "handling": ln(8, 0.4, 2, 60)},
})
PRESETS["adversarial-fit"] = _merge(PRESETS["adversarial"], {
    "description": "'adversarial' recorded without the timer events (trace-cmd record -e kvm -e sched -e irq): "
                   "deadlines only from the saved CVALs, fitted.",
    "record": {"hrtimer": False},
})
PRESETS["busy-guest"] = _merge(BASE, {
    "description": "A busy guest: most timer interrupts arrive while it runs (their deadline is unknown on the "
                   "host). Host NIC interrupts taken in guest mode run NET_RX softirqs, some long, before the "
                   "exit; a threaded IRQ handler (SCHED_FIFO 50) holds the vCPU's CPU now and then while it sleeps.",
    "guest": {"busy_prob": 0.8, "busy": ln(900, 0.4, 200, 3000)},
    "cyclictest": {"loops": 2000},
    "exits": {"NET": {"rate_hz": 150, "handling": {"mix": [[0.9, ln(40, 0.6, 15, 300)],
                                                           [0.1, ln(1500, 0.6, 400, 5000)]]}}},
    "background": [
        {"comm": "irq/48-mmc0", "pid": 77, "cpu": 0, "policy": "fifo", "prio": 50, "rate_hz": 8,
         "burst": ln(300, 0.5, 60, 900)},
        *BASE["background"],
    ],
})
_HOG_CPU1 = {"comm": "stress-ng-cpu", "pid": 900, "cpu": 1, "policy": "other", "prio": 0, "nice": 0}
PRESETS["idle-wait"] = _merge(BASE, {
    "description": "The vCPU's CPU is otherwise idle, a CPU hog keeps the other one busy: KVM arms the blocked "
                   "vCPU's background timer on the busy CPU (timer migration), it wakes the vCPU there, and the "
                   "vCPU's CPU, deep in idle, answers the reschedule IPI late.",
    "hog": _HOG_CPU1,
    "idle": {"migrate": True, "ipi": ln(3, 0.3, 1, 10),  # the wakeup -> the IPI reaches an awake CPU
             "exit": {"mix": [[0.7, ln(5, 0.4, 2, 20)], [0.3, ln(500, 0.7, 150, 3000)]]}},  # idle exit latency
    "cyclictest": {"loops": 2000},
})
PRESETS["stalls"] = _merge(BASE, {
    "description": "The whole machine stops now and then (an emulator or a hypervisor that does not run it): "
                   "every CPU silent for tens of ms while a CPU hog keeps the other CPU busy; a deadline inside "
                   "a stall comes due when it ends.",
    "hog": _HOG_CPU1,
    "stalls": {"rate_hz": 2, "duration": ln(40_000, 0.35, 22_000, 90_000), "first_ms": 200},
    "cyclictest": {"loops": 2000},
})
PRESETS["rt-throttle"] = _merge(PRESETS["rt-vcpu"], {
    "description": "A CPU-bound guest (cyclictest beside a busy loop) on a SCHED_FIFO vCPU thread that never "
                   "sleeps, beside a SCHED_OTHER hog: the kernel's real-time budget (950 ms of every second) "
                   "throttles the vCPU thread for the rest of each period. The VMM injects device interrupts.",
    "guest": {"busy_prob": 1.0, "busy": {"const_us": 5000}},
    "cyclictest": {"loops": 3000},
    "exits": {"DEVICE": {"rate_hz": 40, "handling": ln(6, 0.3, 2, 40)}},
})
PRESETS["arm32"] = _merge(PRESETS["study-guest"], {
    "arch": "arm32",
    "description": "The study's guest run recorded with the 32-bit ARM (Linux 3.9) event formats: "
                   "kvm_exit with only a PC, 4-byte longs, 32-bit page headers.",
    "uname": "Linux arndale 3.9.0-rc4-kvm-arm #1 SMP PREEMPT armv7l GNU/Linux",
    "vcpu_comm": "qemu-system-arm",
    "cyclictest": {"loops": 20000},
    "boot": {"guest_ms": 200, "exits": {"SYS64": {"rate_hz": 0}}},
    "exits": {"SYS64": {"rate_hz": 0}, "HVC64": {"rate_hz": 2}, "ACCESS": {"rate_hz": 0}},
})
for _p in ("study-guest", "study-host", "arm32"):
    if PRESETS[_p].get("boot"):
        PRESETS[_p]["boot"] = _merge(BASE["boot"], PRESETS[_p]["boot"])
PRESETS["boot-faults"]["boot"] = _merge(BASE["boot"], {"guest_ms": 800})


def preset(name: str) -> dict[str, Any]:
    if name not in PRESETS:
        raise KeyError(f"unknown scenario {name!r}: expected one of {', '.join(sorted(PRESETS))}")
    params = copy.deepcopy(PRESETS[name])
    params["name"] = name
    return params


def parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def apply_override(params: dict[str, Any], assignment: str) -> None:
    """``a.b.c=value`` (JSON value, else a string); list items by index: ``vcpus.0.cpu=1``."""
    if "=" not in assignment:
        raise ValueError(f"--set {assignment!r}: expected key=value")
    key, raw = assignment.split("=", 1)
    parts = key.strip().split(".")
    node: Any = params
    for part in parts[:-1]:
        if isinstance(node, list):
            node = node[int(part)]
        else:
            if node.get(part) is None:
                node[part] = {}
            node = node[part]
    last = parts[-1]
    if isinstance(node, list):
        node[int(last)] = parse_value(raw)
    else:
        node[last] = parse_value(raw)
