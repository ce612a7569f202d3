"""Plain-language verdicts on one interrupt: how late it was and who the time went to, largest share first.

In the spirit of ``rtla timerlat -a``: one sentence a user can act on, with numbers. The causes come
from :mod:`kvmtrace.model.blame`; each kind of cause has its own honest wording (an idle CPU is a
wakeup or migration problem, not a busy CPU; a stall is the whole machine, not one CPU's
interrupts being off).
"""

from __future__ import annotations

from typing import Any

from kvmtrace.model.throttling import Throttling
from kvmtrace.units import fmt_ns

STAGE_WORDS = {
    "timer": "from the guest's deadline to the host interrupt",
    "host_irq": "in the host interrupt before the vCPU was woken",
    "vcpu_wait": "waiting for a CPU",
    "inject": "from switch-in to the injection (vCPU load, timer restore)",
    "exit": "from the injection to the guest exit",
    "entry": "from the injection to guest entry",
}
WAITING = {"waking": "while the woken thread waited for it", "preempted": "while the runnable thread was switched out",
           "blocked": "while the timer interrupt was due", "host_handling": "on top of the thread"}


def _pid(c: dict[str, Any]) -> str:
    return f" (pid {c['cause_pid']})" if c.get("cause_pid") is not None else ""


def cause_phrase(c: dict[str, Any], throttling: Throttling | None) -> str:
    """One cause of one interrupt's latency (a row of ``blame.shares`` grouped by cause and state)."""
    ns, cpu, kind, state = fmt_ns(c["share_ns"]), c["cpu"], c["cause_kind"], c["state"]
    if kind == "stall":
        return f"every CPU was silent for {ns} (a machine or emulator stall, not this CPU's interrupts)"
    if kind == "idle":
        if state == "blocked":
            return f"CPU {cpu} was idle for {ns} while the timer interrupt was due (it came late out of idle)"
        return (f"CPU {cpu} was idle for {ns} {WAITING.get(state, '')}: an idle CPU while the vCPU waits is a "
                "wakeup or migration problem, not a busy CPU")
    if kind == "rt_throttling":
        rule = f" ({throttling.describe()})" if throttling is not None and throttling.intervals.height else ""
        return (f"the real-time vCPU thread was throttled{rule} and `{c['cause']}`{_pid(c)} ran on CPU {cpu} "
                f"for {ns}")
    if kind in ("irq", "softirq"):
        return f"the host {kind} handler `{c['cause'].split(':', 1)[1]}` ran on CPU {cpu} for {ns}"
    if kind == "vcpu":
        pid = f", pid {c['cause_pid']}" if c.get("cause_pid") is not None else ""
        return f"the vCPU thread itself (`{c['cause']}`{pid}) worked in the host (KVM/VMM) for {ns}"
    if kind == "guest":
        return f"the guest ran on for {ns} before it exited"
    return f"`{c['cause']}`{_pid(c)} ran on CPU {cpu} for {ns} {WAITING.get(state, '')}".rstrip()


def verdict(row: dict[str, Any], causes: list[dict[str, Any]], throttling: Throttling | None) -> str:
    """``12.3 ms from the deadline (blocked path, mostly waiting for a CPU): <largest cause> (73 %); then ...``."""
    best = row.get("best_latency_ns") or row.get("total_ns") or 0
    basis = {"deadline": "from the deadline",
             "preemption": "from the vCPU's preemption (its deadline fell inside; an upper bound)"}.get(
        row.get("latency_basis") or "", "from the host interrupt (the deadline is unknown: a lower bound)")
    stage = dominant_stage(row)
    where = f"{row['path']} path" + (f", mostly {STAGE_WORDS[stage]}" if stage else "")
    head = f"{fmt_ns(best)} {basis} ({where})"
    if not causes:
        return head
    top = causes[0]
    pct = f" ({100 * top['share_ns'] / best:.0f}%)" if best else ""
    text = f"{head}: {cause_phrase(top, throttling)}{pct}"
    rest = [cause_phrase(c, throttling) for c in causes[1:3] if c["share_ns"] >= 0.02 * best]
    return text + ("; then " + "; ".join(rest) if rest else "")


def dominant_stage(row: dict[str, Any]) -> str | None:
    present = {s: row.get(f"{s}_ns") for s in STAGE_WORDS if row.get(f"{s}_ns") is not None}
    return max(present, key=lambda s: present[s] or 0) if present else None
