"""The synthesiser's slow paths: the mechanisms that make a capture disagree with the easy assumptions
(docs/synth.md, "Adversarial mechanisms").

- *early wakeups*: the VMM injects a device interrupt (``kvm_irq_line``) or kicks the vCPU thread
  (a signal: ``KVM_EXIT_INTR``) while it sleeps in WFI; the wakeup reaches the vCPU's CPU as an
  ``IPI``. When the switch-in comes after the deadline the timer is injected at that load, so the
  interrupt's host IRQ precedes its deadline; when it comes before, the guest runs and blocks again
  (a new ``kvm_timer_save_state`` of the same CVAL).
- *real-time throttling*: a SCHED_FIFO vCPU thread that used its budget
  (``sched_rt_runtime_us`` of every ``sched_rt_period_us``) is switched out runnable at a tick and
  back when the period ends; a deadline that passes meanwhile is injected at that load, with no host
  interrupt and no wakeup (path ``host``).
- *nested guest timer interrupts*: the guest timer fires while the host handles a NIC interrupt
  taken in guest mode, inside its NET_RX softirq: a running-path interrupt whose exit waits for the
  softirq.
- *idle waits*: KVM arms the blocked vCPU's background timer on a busy CPU (timer migration: the
  vCPU's CPU is going idle); it wakes the vCPU there, and the vCPU's own CPU, deep in idle, takes its
  time to answer the reschedule IPI.
- *whole-machine stalls*: no CPU runs (:class:`StallMap`).

Each is a method of :class:`Episodes`, a part of ``sim.CyclictestLoop``. Their events go to the
chunk one by one (``Chunk.ev``, codes :class:`Ev`), their interrupts with their stage boundaries to
``Chunk.intr``.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from kvmtrace.synth.sim import Chunk, ExitStream, Simulator, Task

NS = 1000


class Ev:
    """Codes of the events of ``Chunk.ev`` (fields a, b, c)."""

    IRQ_IN, IRQ_OUT = 0, 1  # irq_handler_entry (a: host irq number; name: HOST_IRQS), irq_handler_exit (a)
    SOFT_RAISE, SOFT_IN, SOFT_OUT = 2, 3, 4  # softirq_* (a: vector)
    UPD, VGIC = 5, 6  # kvm_timer_update_irq, vgic_update_irq_pending (a: guest irq, b: level)
    SAVE, RESTORE = 7, 8  # kvm_timer_save_state / restore_state (a: ctl, b: cval, c: timer index)
    VWAKE = 9  # kvm_vcpu_wakeup (a: ns blocked, b: 1 if it blocked at all)
    ENTRY, KEXIT = 10, 11  # kvm_entry (a: pc index, -1 the WFI's), kvm_exit (a: ret, b: esr_ec, c: pc index)
    IRQLINE = 12  # kvm_irq_line (a: SPI, b: level)
    UEXIT = 13  # kvm_userspace_exit (a: reason, b: errno)
    HR_IN, HR_OUT = 14, 15  # hrtimer_expire_entry / exit of a vCPU's background timer (a: vCPU tid)
    WAKEUP = 16  # sched_wakeup (a: woken task index, b: target cpu)
    WFX = 17  # kvm_wfx_arm64
    HR_START = 18  # hrtimer_start of a vCPU's background timer (a: vCPU tid, b: expires, a trace time)


IPI_IRQ, VTIMER_IRQ, TIMER_IRQ, NIC_IRQ = 2, 12, 13, 44
HOST_IRQS = {IPI_IRQ: "IPI", VTIMER_IRQ: "kvm guest vtimer", TIMER_IRQ: "arch_timer", NIC_IRQ: "eth0"}
NET_RX = 3
GUEST_VTIMER, GUEST_PTIMER = 27, 30
KVM_EXIT_INTR, EINTR = 10, -4
CTL_ENABLE, CTL_ISTATUS = 1, 4
CAUSE_SHARE = 0.55  # a cause is the truth's top cause when it holds at least this share of the latency
NO_EPISODE, AGAIN = -2, -1  # early_wakeup: nothing happened; the guest runs again (no interrupt delivered)
WFX_CLS = 100  # sim.WFX: the class code of a WFx exit


def counter(t: Any, hz: int, off: int) -> Any:
    """The guest counter at trace time ``t`` (ns; int or array): floor((t + offset) * hz / 1e9),
    without int64 overflow. A CVAL is the counter at the deadline."""
    q, r = np.divmod(t + off, 1_000_000_000)
    out = q * hz + r * hz // 1_000_000_000
    return out if isinstance(out, np.ndarray) else int(out)


def net_split(ts: Any, h: Any) -> tuple[Any, Any, Any, Any]:
    """A host NIC interrupt taken in guest mode at ``ts`` whose exit is handled in ``h`` (at least 15 us):
    (its handler's exit, NET_RX softirq entry, softirq exit, kvm_exit); kvm_entry is at ts + h."""
    irq_out = ts + np.minimum(2 * NS + h // 100, 6 * NS)
    kexit = ts + h - 3 * NS
    return irq_out, irq_out + 800, kexit - 700, kexit


def top_share(cands: list[tuple[Any, ...]]) -> tuple[Any, ...] | None:
    """The candidate (..., name, ns) with the largest ns > 0; ties by name, as the analysis sorts owners."""
    best = [c for c in cands if c[-1] > 0]
    return min(best, key=lambda c: (-c[-1], str(c[-2]))) if best else None


class StallMap:
    """Whole-machine stalls: trace-time intervals [a, b) in which no CPU runs and nothing is traced.

    The simulation runs on *machine time*, trace time with the stalls cut out; every time is put on
    the trace clock when the chunk's tables are built (``trace``). A deadline inside a stall comes due
    the moment the machine runs again (``machine1``)."""

    def __init__(self, a: np.ndarray, b: np.ndarray) -> None:
        self.a, self.b = a.astype(np.int64), b.astype(np.int64)
        self.cum = np.cumsum(self.b - self.a)
        self.m_start = self.a - (self.cum - (self.b - self.a))  # each stall's point on the machine clock
        self._a, self._m, self._cum = self.a.tolist(), self.m_start.tolist(), self.cum.tolist()
        self._b = self.b.tolist()

    @classmethod
    def draw(cls, params: dict[str, Any], seed: int) -> StallMap | None:
        spec = params.get("stalls")
        if not spec or float(spec.get("rate_hz", 0)) <= 0:
            return None
        from kvmtrace.synth.scenario import sample
        from kvmtrace.synth.sim import stream

        gap_rng, dur_rng = stream(seed, "stalls:gap"), stream(seed, "stalls:duration")
        ct = params["cyclictest"]
        phases_ms = sum(float((params.get(k) or {}).get("guest_ms", 0)) for k in ("boot", "lmbench"))
        horizon = int(phases_ms * 1e6) + int(ct["loops"]) * int(ct["interval_us"]) * 4 * NS + 10**10
        first = int(float(params["start_s"]) * 1e9) + int(float(spec.get("first_ms", 200)) * 1e6)
        gaps: list[int] = []
        durs: list[int] = []
        while sum(gaps) + sum(durs) < horizon:  # in blocks: the stalls do not depend on the run's length
            gaps += rng_exp(gap_rng, 1e9 / float(spec["rate_hz"]))
            durs += sample(spec["duration"], dur_rng, 64).tolist()
        g = np.array(gaps, np.int64)
        d = np.array(durs, np.int64)
        a = first + np.cumsum(g) + np.concatenate(([0], np.cumsum(d)[:-1]))
        return cls(a, a + d)

    def trace(self, m: np.ndarray) -> np.ndarray:
        k = np.searchsorted(self.m_start, m, side="right")
        return m + np.where(k > 0, self.cum[np.maximum(k - 1, 0)], 0)

    def trace1(self, m: int) -> int:
        k = bisect.bisect_right(self._m, m)
        return m + (self._cum[k - 1] if k else 0)

    def machine1(self, t: int) -> int:
        """Machine time of trace time ``t``; inside a stall, the stall's end."""
        k = bisect.bisect_right(self._a, t)
        if k and t < self._b[k - 1]:
            return int(self._m[k - 1])
        return t - (self._cum[k - 1] if k else 0)

    def overlap(self, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        """Trace time inside stalls between ``lo`` and ``hi`` (arrays)."""
        out = np.zeros(lo.shape[0], np.int64)
        for a, b in zip(self._a, self._b, strict=True):
            out += np.maximum(np.minimum(hi, b) - np.maximum(lo, a), 0)
        return out


class RtBudget:
    """The CPU's real-time bandwidth (``sched_rt_runtime_us`` of every ``sched_rt_period_us``): run time
    of its SCHED_FIFO task accumulates; the period timer takes one runtime off at every period end;
    once the run time exceeds the runtime, the next tick throttles the task until a period end."""

    def __init__(self, runtime: int, period: int, first_end: int) -> None:
        self.runtime, self.period = runtime, period
        self.rt_time = 0
        self.next_end = first_end  # the next period end
        self.until = 0  # run time is accounted up to here

    def _advance(self, t: int) -> None:
        while self.next_end <= t:
            self.rt_time = max(self.rt_time - self.runtime, 0)
            self.next_end += self.period

    def run(self, a: int, b: int) -> None:
        """The task ran from ``a`` to ``b``."""
        a = max(a, self.until)
        while a < b:
            self._advance(a)
            end = min(b, self.next_end)
            self.rt_time += end - a
            a = end
        self._advance(b)
        self.until = max(self.until, b)

    def exhausted_at(self, since: int, now: int) -> int:
        """When the run time will exceed the runtime if the task, on the CPU since ``since``, keeps running."""
        self.run(since, now)
        t, rt, end = now, self.rt_time, self.next_end
        while True:
            if t + (self.runtime - rt) < end:
                return t + max(self.runtime - rt, 0) + 1
            rt, t, end = max(rt + (end - t) - self.runtime, 0), end, end + self.period

    def period_end(self, t: int) -> int:
        self._advance(t)
        return self.next_end


def rng_exp(rng: np.random.Generator, scale: float) -> list[int]:
    return list(rng.exponential(scale, 64).astype(np.int64).tolist())


def _pool(sim: Simulator, name: str, dist: dict[str, Any]) -> Callable[[], int]:
    from kvmtrace.synth.sim import Pool, stream

    return Pool(stream(sim.seed, name), dist).next


class Episodes:
    """The slow paths of ``sim.CyclictestLoop`` (module docstring). Returns of the delivering ones: the
    loop's latency (>= 0), or AGAIN when the guest runs again with its deadline still ahead."""

    # the loop's state and streams these methods use (sim.CyclictestLoop)
    sim: Simulator
    cpu: int
    me: Task
    hog: Task | None
    back: Task
    cur: Task
    cur_since: int
    now: int
    need: int
    nmin: int
    last_in: int
    blocked_at: int
    sw_ts: int
    dirty: bool
    ex: ExitStream
    in_guest: bool
    timer: Callable[[], int]
    host_irq: Callable[[], int]
    irq_tail: Callable[[], int]
    inject: Callable[[], int]
    entry: Callable[[], int]
    block: Callable[[], int]
    sched: Callable[[], int]
    guest_handling: Callable[[], int]
    post: Callable[[], int]
    busy: Callable[[], int]
    coin: Callable[[], float]
    busy_prob: float
    tr: Callable[[int], int] | None
    m_of: Callable[[int], int] | None
    prev_dl: int
    reprog_at: int
    host_runs_until: Callable[[int], None]
    wait_parts: Callable[[int, int, int], tuple[int, int, int, int]]

    def _episodes(self, sim: Simulator) -> None:
        """The slow paths' parameters and random streams (one stream each)."""
        from kvmtrace.synth.sim import CLS, uniform

        p = sim.p
        self.early = p.get("early_wake") if self.in_guest else None
        if self.early:
            e = self.early
            self.e_coin, self.e_kind = uniform(sim_stream(sim, "early:coin")), uniform(sim_stream(sim, "early:kind"))
            self.e_lead = _pool(sim, "early:lead", e["lead"])
            self.e_dev = _pool(sim, "early:device_handling", e["device_handling"])
            self.e_rt = _pool(sim, "early:user_rt", e["user_rt"])
        self.extra = p.get("extra_timer") if self.in_guest else None
        if self.extra:
            self.x_coin, self.x_kind = uniform(sim_stream(sim, "extra:coin")), uniform(sim_stream(sim, "extra:kind"))
            self.x_at = uniform(sim_stream(sim, "extra:at"))
            self.x_handling = _pool(sim, "extra:handling", self.extra["handling"])
        idle = p.get("idle") if self.in_guest else None
        self.migrate = bool(idle and idle.get("migrate"))
        if idle:
            self.i_exit = _pool(sim, "idle:exit", idle["exit"])
            self.i_ipi = _pool(sim, "idle:ipi", idle["ipi"])
        rt = p.get("rt")
        self.rt: RtBudget | None = None
        if rt and self.in_guest and self.me.policy == "fifo":
            period = int(rt["period_us"]) * NS
            phase = int(sim_stream(sim, f"rt:phase:{self.cpu}").integers(0, period))
            self.rt = RtBudget(int(rt["runtime_us"]) * NS, period, self.now + phase)
        net = p["exits"].get("NET")
        self.nest = CLS["NET"] if net and float(net.get("rate_hz", 0)) > 0 else -1
        self.free_cpu = sim.free_cpu
        dev = p["exits"].get("DEVICE")
        self.dev_gap = None  # the VMM's device interrupts in wall time (while the vCPU thread is throttled)
        if dev and float(dev.get("rate_hz", 0)) > 0:
            from kvmtrace.synth.sim import exp_gaps

            self.dev_gap = exp_gaps(sim_stream(sim, f"device:wall:{self.cpu}"), 1e9 / float(dev["rate_hz"]))
        self.slow_pc = sim_ints(sim, "slow:pc", 6)
        self.tick_d = _pool(sim, "slow:tick", p["stages"]["tick"])

    # ------------------------------------------------------------------ helpers
    def ev(self, code: int, ts: int, cpu: int, pid: int, a: int = 0, b: int = 0, c: int = 0) -> None:
        """One event; on another CPU it waits in ``sim.foreign`` for that CPU's timeline (pid -1: whoever runs)."""
        (self.sim.chunk.ev if cpu == self.cpu else self.sim.foreign).extend((code, ts, cpu, pid, a, b, c))

    def trace_t(self, t: int) -> int:
        return t if self.tr is None else self.tr(t)

    def machine_t(self, deadline: int) -> int:
        return deadline if self.m_of is None else self.m_of(deadline)

    def count(self, t_trace: int) -> int:
        return int(counter(t_trace, self.sim.counter_hz, self.sim.counter_off))

    def armed(self, t: int, deadline: int) -> int:
        """The deadline the guest's timer holds at ``t``: the previous one until the guest reprogrammed it."""
        return self.prev_dl if t < self.reprog_at else deadline

    def ctl_at(self, t: int, dl: int) -> int:
        """CTL as a save at ``t`` reads it: enabled, ISTATUS once the counter reached the deadline."""
        return CTL_ENABLE | (CTL_ISTATUS if self.count(self.trace_t(t)) >= self.count(dl) else 0)

    def load(self, upd: int, end: int, dl: int, ctl: int, wait_ns: int | None) -> int:
        """vcpu_load: kvm_timer_update_irq and vgic_update_irq_pending (level: the timer condition),
        kvm_timer_restore_state of both timers, kvm_vcpu_wakeup after a halt; spread over upd..end.
        Returns the level."""
        pid, cpu, span = self.me.pid, self.cpu, end - upd
        level = int(self.count(self.trace_t(upd)) >= self.count(dl))
        self.ev(Ev.UPD, upd, cpu, pid, GUEST_VTIMER, level)
        self.ev(Ev.VGIC, upd + span // 10, cpu, pid, GUEST_VTIMER, level)
        self.ev(Ev.RESTORE, upd + span * 5 // 10, cpu, pid, ctl, self.count(dl), 1)
        self.ev(Ev.RESTORE, upd + span * 6 // 10, cpu, pid, 0, 0, 0)
        if wait_ns is not None:
            self.ev(Ev.VWAKE, upd + span * 8 // 10, cpu, pid, wait_ns, 1)
        return level

    def save(self, t: int, dl: int) -> int:
        """vcpu_put: kvm_timer_save_state of both timers. Returns the saved CTL."""
        ctl = self.ctl_at(t, dl)
        self.ev(Ev.SAVE, t, self.cpu, self.me.pid, ctl, self.count(dl), 1)
        self.ev(Ev.SAVE, t + 3 * NS, self.cpu, self.me.pid, 0, 0, 0)
        return ctl

    def irq(self, t_in: int, t_out: int, cpu: int, pid: int, irq: int) -> None:
        self.ev(Ev.IRQ_IN, t_in, cpu, pid, irq)
        self.ev(Ev.IRQ_OUT, t_out, cpu, pid, irq)

    def intr(self, kind: str, irq: int, path: str, deadline: int | None, t0: int, wake: int, switch: int, inj: int,
             kexit: int, entry: int, blocker: tuple[Any, ...] | None, cause: tuple[Any, ...] | None) -> None:
        """One interrupt of the truth, by its stage boundaries (-1: none); TruthBuilder.add_rows."""
        b = blocker or (None, None, None)
        c = cause or (None, None, 0)
        self.sim.chunk.intr.append((kind, irq, path, self.cpu, self.me.pid, -1 if deadline is None else deadline,
                                    t0, wake, switch, inj, kexit, entry, *b, *c))

    def delivered(self, deadline: int, entry: int, path: int, extra_need: int = 0) -> int:
        """The loop's interrupt reached the guest at ``entry``: cyclictest's row, the guest's work after it.
        Returns the latency."""
        gh = self.guest_handling()
        lat = self.trace_t(entry) - deadline + gh
        self.sim.chunk.cyclictest.extend((deadline, lat, path))
        self.prev_dl, self.reprog_at = deadline, entry + gh
        self.now = entry
        self.need += gh + extra_need + self.post() + (self.busy() if self.coin() < self.busy_prob else 0)
        return lat

    def wait_owners(self, wake_irq: str, tail: int, held: int, ticks: int) -> list[tuple[Any, ...]]:
        """Who held the CPU while the woken vCPU waited: (name, pid, ns), idle excluded."""
        cur = self.cur
        out: list[tuple[Any, ...]] = [(wake_irq, None, tail)]
        if ticks:
            if wake_irq == "irq:arch_timer":
                out[0] = (wake_irq, None, tail + ticks)
            else:
                out.append(("irq:arch_timer", None, ticks))
        if cur.pid != 0:
            out.append((cur.comm, cur.pid, held))
        return out

    def cause_of(self, start: int, entry: int, cands: list[tuple[Any, ...]]) -> tuple[Any, ...] | None:
        """The top cause (kind, name, ns) if it holds CAUSE_SHARE of the latency from ``start`` (trace time:
        the deadline, or a device interrupt's injection) to ``entry``."""
        top = top_share(cands)
        lat = self.trace_t(entry) - start
        return top if top is not None and top[-1] >= CAUSE_SHARE * lat else None

    def expired(self, t: int, deadline: int) -> bool:
        """Whether the guest timer's condition holds at ``t``: then a WFI does not block (KVM's
        kvm_vcpu_check_block sees the timer pending)."""
        tt = self.trace_t(t)
        return tt >= deadline - 1000 and self.count(tt) >= self.count(deadline)

    def wfx_no_block(self) -> int:
        """The guest executed WFI after its deadline, before the timer's interrupt reached it: KVM traps it
        and returns at once (kvm_vcpu_wakeup, waited 0). Returns when the interrupt is taken (after entry)."""
        me, cpu, now = self.me, self.cpu, self.now
        x = now + self.block() // 2
        self.ev(Ev.KEXIT, now, cpu, me.pid, 2, 0x01, -1)
        self.ev(Ev.WFX, now + (x - now) // 3, cpu, me.pid)
        self.ev(Ev.VWAKE, now + (x - now) * 2 // 3, cpu, me.pid, x - now, 0)
        self.ev(Ev.ENTRY, x, cpu, me.pid, -1)
        self.sim.chunk.xexits.extend((now, x, 2, 0x01, WFX_CLS))
        self.dirty = True
        return x + 200

    # ------------------------------------------------------------------ the guest's other timers
    def extra_timer(self, deadline: int, t0: int) -> int:
        """The sleeping guest has another timer due before cyclictest's (maybe): its virtual timer
        reprogrammed to that earlier deadline (the save's CVAL; cyclictest's is programmed again after
        it), or its physical timer (PPI 30; the saved virtual CVAL stays cyclictest's). KVM's background
        timer fires for the earlier one and wakes the vCPU in ``arch_timer``. Returns NO_EPISODE or AGAIN."""
        x = self.extra
        assert x is not None
        if self.x_coin() >= float(x["prob"]):
            return NO_EPISODE
        ptimer = self.x_kind() < float(x["ptimer_share"])
        md = self.machine_t(deadline)
        lo, hi = self.now + 20 * NS, md - 40 * NS
        at = self.x_at()
        if hi <= lo:
            return NO_EPISODE
        # the other timer's deadline (trace time): when the counter reaches its CVAL
        hz, off = self.sim.counter_hz, self.sim.counter_off
        cval = self.count(self.trace_t(lo + int(at * (hi - lo)))) + 1
        early = -(-cval * 1_000_000_000 // hz) - off
        m_early = self.machine_t(early)
        me, sim, cpu = self.me, self.sim, self.cpu
        ch = sim.chunk
        # the block (WFx, switch-out: kvm_wfx_arm64, saves, the background timer) shows the other timer
        w, sw = self.blocked_at, self.sw_ts
        self.ev(Ev.WFX, w + (sw - w) // 3, cpu, me.pid)
        vt = early if not ptimer else deadline
        self.ev(Ev.SAVE, sw + 3 * NS, cpu, me.pid, self.ctl_at(sw + 3 * NS, vt), self.count(vt), 1)
        self.ev(Ev.SAVE, sw + 6 * NS, cpu, me.pid, CTL_ENABLE if ptimer else 0, self.count(early) if ptimer else 0, 0)
        self.ev(Ev.HR_START, sw + 7 * NS, cpu, me.pid, me.pid, early)
        t1 = m_early + self.timer()
        if self.nmin < t1:
            self.host_runs_until(t1)
        cur = self.cur
        wake = t1 + self.host_irq()
        irq_exit = wake + self.irq_tail()
        switch, prev_state, held, ticks = self.wait_parts(wake, irq_exit, self.sched())
        upd = switch + self.inject()
        entry = upd + self.entry()
        span = entry - upd
        level_v = int(self.count(self.trace_t(upd)) >= self.count(vt))
        self.ev(Ev.UPD, upd, cpu, me.pid, GUEST_VTIMER, level_v)
        self.ev(Ev.VGIC, upd + span // 12, cpu, me.pid, GUEST_VTIMER, level_v)
        self.ev(Ev.UPD, upd + span * 2 // 12, cpu, me.pid, GUEST_PTIMER, int(ptimer))
        self.ev(Ev.VGIC, upd + span * 3 // 12, cpu, me.pid, GUEST_PTIMER, int(ptimer))
        self.ev(Ev.RESTORE, upd + span * 5 // 12, cpu, me.pid, CTL_ENABLE | (CTL_ISTATUS if level_v else 0),
                self.count(vt), 1)
        self.ev(Ev.RESTORE, upd + span * 6 // 12, cpu, me.pid, CTL_ENABLE | CTL_ISTATUS if ptimer else 0,
                self.count(early) if ptimer else 0, 0)
        self.ev(Ev.VWAKE, upd + span * 9 // 12, cpu, me.pid, wake - w, 1)
        self.ev(Ev.ENTRY, entry, cpu, me.pid, -1)
        self.irq(t1, irq_exit, cpu, cur.pid, TIMER_IRQ)
        self.ev(Ev.HR_IN, t1 + (wake - t1) // 2, cpu, cur.pid, me.pid, t1 + (wake - t1) // 2)
        self.ev(Ev.HR_OUT, wake + (irq_exit - wake) // 2, cpu, cur.pid, me.pid)
        ch.exits.extend((w, entry - w, 100, -1))
        ch.sw.extend((sw, me.idx, 1, self.back.idx, switch, cur.idx, prev_state, me.idx))
        ch.wk.extend((wake, cur.pid, me.idx))
        if cur.pid != 0:
            ch.run.extend((self.cur_since, t1, cur.pid))
        inj = upd if not ptimer else upd + span * 2 // 12
        owners = self.wait_owners("irq:arch_timer", irq_exit - wake, held, ticks)
        waited = ("task", cur.comm, held) if cur.pid != 0 else ("idle", "idle", switch - irq_exit)
        self.intr("timer", GUEST_PTIMER if ptimer else GUEST_VTIMER, "blocked", early, t1, wake, switch, inj, -1,
                  entry, top_share(owners),
                  self.cause_of(early, entry, [("vcpu", me.comm, entry - switch), waited,
                                               ("irq", "irq:arch_timer", (wake - t1) + (irq_exit - wake) + ticks)]))
        # the guest runs its timer's handler, programs cyclictest's deadline again (or stops the physical
        # timer) and sleeps again: a new save
        self.cur, self.last_in, self.dirty = self.back, switch, True
        self.now, self.need = entry, self.x_handling()
        return AGAIN

    # ------------------------------------------------------------------ early wakeups
    def early_wakeup(self, deadline: int, t0: int) -> int:
        """The blocked vCPU is woken before its deadline (maybe): NO_EPISODE, AGAIN or the latency."""
        e = self.early
        assert e is not None
        if self.e_coin() >= float(e["prob"]):
            return NO_EPISODE
        md = self.machine_t(deadline)
        t_ipi = md - self.e_lead()
        kick = self.e_kind() < float(e["kick_share"])
        lead = self.sim.vmm_lead()
        # after the vCPU thread committed to sleep (else kvm_vcpu_check_block sees the interrupt pending)
        if t_ipi - lead <= self.sw_ts or t_ipi <= self.now + 3 * NS or t_ipi >= t0 - NS:
            return NO_EPISODE
        if self.nmin < t_ipi:
            self.host_runs_until(t_ipi)
        spi = int(self.sim.p["vmm"]["spi"])
        t_line = self.sim.vmm_episode(t_ipi - lead, kick)
        me, cur, sim = self.me, self.cur, self.sim
        wake = t_ipi + self.host_irq()
        irq_exit = wake + self.irq_tail()
        n_ticks = len(sim.chunk.ticks)
        switch, prev_state, held, ticks = self.wait_parts(wake, irq_exit, self.sched())
        upd = switch + self.inject()
        # KVM's background timer for the deadline still runs: it fires while the vCPU waits (in the
        # holder, no wakeup: the vCPU is runnable) or as it is switched in; the load cancels it later
        bg_ns, in_vcpu = 0, False
        if t0 < upd:
            bg_in = max(t0, irq_exit + NS)
            in_vcpu = bg_in >= switch
            ctx = me.pid if in_vcpu else cur.pid
            dur = self.host_irq() + self.irq_tail()
            recent = sim.chunk.ticks[n_ticks:]
            clash = any(a - 2 * NS < bg_in + dur and bg_in < b + 2 * NS for a, b in zip(recent[::3], recent[1::3],
                                                                                       strict=True))
            if not clash:
                bg_ns = dur
                self.irq(bg_in, bg_in + dur, self.cpu, ctx, TIMER_IRQ)
                self.ev(Ev.HR_IN, bg_in + dur // 3, self.cpu, ctx, me.pid, bg_in + dur // 3)
                self.ev(Ev.HR_OUT, bg_in + dur * 2 // 3, self.cpu, ctx, me.pid)
                if in_vcpu:
                    upd = max(upd, bg_in + dur + NS)
                else:
                    if bg_in + dur >= switch - NS:  # the handler delays the switch
                        switch = bg_in + dur + self.sched()
                        upd = max(upd, switch + self.inject())
                    if cur.pid != 0:
                        held = (switch - irq_exit) - ticks - dur
        dl_ctl = self.ctl_at(self.sw_ts + 3 * NS, deadline)
        if kick:  # the vCPU sees the signal: back to the VMM (KVM_EXIT_INTR), then KVM_RUN again
            ux = upd + 20 * NS
            level1 = self.load(upd, ux - 2 * NS, deadline, dl_ctl, wake - self.blocked_at)
            self.ev(Ev.UEXIT, ux, self.cpu, me.pid, KVM_EXIT_INTR, EINTR)
            ctl2 = self.save(ux + 2 * NS, deadline)
            upd2 = ux + self.e_rt()
            entry = upd2 + self.entry()
            level2 = self.load(upd2, entry, deadline, ctl2, None)
            inj = upd if level1 else (upd2 if level2 else -1)
        else:
            entry = upd + self.entry()
            inj = upd if self.load(upd, entry, deadline, dl_ctl, wake - self.blocked_at) else -1
        ch = sim.chunk
        ch.exits.extend((self.blocked_at, entry - self.blocked_at, 100, -1))  # the WFx exit ends here
        ch.wfi.extend((self.blocked_at, self.sw_ts, deadline))
        ch.sw.extend((self.sw_ts, me.idx, 1, self.back.idx, switch, cur.idx, prev_state, me.idx))
        ch.wk.extend((wake, cur.pid, me.idx))
        self.irq(t_ipi, irq_exit, self.cpu, cur.pid, IPI_IRQ)
        if cur.pid != 0:
            ch.run.extend((self.cur_since, t_ipi, cur.pid))
        self.ev(Ev.ENTRY, entry, self.cpu, me.pid, -1)
        owners = self.wait_owners("irq:IPI", irq_exit - wake, held, ticks + (0 if in_vcpu else bg_ns))
        blocker = top_share(owners)
        vcpu_ns = entry - switch - (bg_ns if in_vcpu else 0)
        waited = ("task", cur.comm, held) if cur.pid != 0 else ("idle", "idle", switch - irq_exit)
        if not kick:  # the device interrupt: from the VMM's injection
            self.intr("device", spi, "blocked", None, t_line, wake, switch, -1, -1, entry, blocker,
                      self.cause_of(self.trace_t(t_line), entry, [("vcpu", me.comm, vcpu_ns), waited]))
        after = max(md - irq_exit, 0)  # the part of the wait before the deadline is not the timer's latency
        cands = [("vcpu", me.comm, vcpu_ns), (*waited[:2], waited[2] - after)]
        self.cur, self.last_in, self.dirty = self.back, switch, True
        dev_ns = 0 if kick else self.e_dev()
        if inj < 0:  # switched in before the deadline: the guest runs (the device's handler) and blocks again
            self.now, self.need = entry, dev_ns or int(float(e.get("rewfi_us", 3)) * NS)
            return AGAIN
        self.intr("timer", GUEST_VTIMER, "blocked", deadline, t_ipi, wake, switch, inj, -1, entry, blocker,
                  self.cause_of(deadline, entry, cands))
        return self.delivered(deadline, entry, 0, dev_ns)

    # ------------------------------------------------------------------ idle waits
    def migrated_wakeup(self, deadline: int, t0: int) -> int:
        """The vCPU's background timer was armed on the free CPU (timer migration: its own CPU went idle).
        It fires and wakes the vCPU there; the vCPU's CPU answers the reschedule IPI after its idle exit."""
        if self.nmin < t0:
            self.host_runs_until(t0)
        me, cur, c, sim = self.me, self.cur, self.free_cpu, self.sim
        wake = t0 + self.host_irq()
        irq_exit = wake + self.irq_tail()
        self.ev(Ev.IRQ_IN, t0, c, -1, TIMER_IRQ)
        self.ev(Ev.HR_IN, t0 + (wake - t0) // 2, c, -1, me.pid, t0 + (wake - t0) // 2)
        self.ev(Ev.WAKEUP, wake, c, -1, me.idx, self.cpu)
        self.ev(Ev.HR_OUT, wake + (irq_exit - wake) // 2, c, -1, me.pid)
        self.ev(Ev.IRQ_OUT, irq_exit, c, -1, TIMER_IRQ)
        x0 = wake + self.i_ipi() + (self.i_exit() if cur.pid == 0 else 0)
        x1 = x0 + self.irq_tail() + NS
        switch, prev_state, held, ticks = self.wait_parts(x0, x1, self.sched())
        if cur.pid != 0:
            held += x0 - wake
        upd = switch + self.inject()
        entry = upd + self.entry()
        self.load(upd, entry, deadline, self.ctl_at(self.sw_ts + 3 * NS, deadline), wake - self.blocked_at)
        ch = sim.chunk
        ch.exits.extend((self.blocked_at, entry - self.blocked_at, 100, -1))
        ch.wfi.extend((self.blocked_at, self.sw_ts, deadline))
        ch.sw.extend((self.sw_ts, me.idx, 1, self.back.idx, switch, cur.idx, prev_state, me.idx))
        self.irq(x0, x1, self.cpu, cur.pid, IPI_IRQ)
        if cur.pid != 0:
            ch.run.extend((self.cur_since, x0, cur.pid))
        self.ev(Ev.ENTRY, entry, self.cpu, me.pid, -1)
        owners = self.wait_owners("irq:IPI", x1 - x0, held, ticks)
        cands: list[tuple[Any, ...]] = [("vcpu", me.comm, entry - switch)]
        if cur.pid == 0:
            cands.append(("idle", "idle", (x0 - wake) + (switch - x1)))
        else:
            cands.append(("task", cur.comm, held))
        self.intr("timer", GUEST_VTIMER, "blocked", deadline, t0, wake, switch, upd, -1, entry, top_share(owners),
                  self.cause_of(deadline, entry, cands))
        self.cur, self.last_in, self.dirty = self.back, switch, True
        return self.delivered(deadline, entry, 0)

    # ------------------------------------------------------------------ real-time throttling
    def throttled(self, deadline: int) -> int:
        """The tick at ``sim.cut`` finds the FIFO vCPU thread's budget spent: switched out runnable
        (``R``) after the tick's exit, back when the period ends. Returns the latency when the deadline
        passed meanwhile (injected at the load), else AGAIN."""
        assert self.rt is not None
        ts = self.sim.cut[0]
        me, back, sim = self.me, self.back, self.sim
        ch = sim.chunk
        pc = self.slow_pc()
        tick_out = ts + self.tick_d()
        kexit = tick_out + 1500
        s_out = kexit + 4 * NS
        self.irq(ts, tick_out, self.cpu, me.pid, TIMER_IRQ)
        self.ev(Ev.KEXIT, kexit, self.cpu, me.pid, 0, 0, pc)
        ch.sw.extend((s_out, me.idx, 0, back.idx))
        dl = self.armed(s_out + 3 * NS, deadline)
        ctl = self.save(s_out + 3 * NS, dl)
        self.rt.run(self.last_in, s_out)
        p_end = self.rt.period_end(s_out)
        self.cur = back
        self.cur_since = self.now = s_out + 12 * NS
        n_run = len(ch.run)
        if self.nmin < p_end:
            self.host_runs_until(p_end)
        cur = self.cur
        p_in = p_end + self.timer()
        p_out = p_in + self.tick_d()
        # the VMM injects a device interrupt meanwhile: no kick (the vCPU is not in the guest), delivered at
        # the next entry; the line stays asserted, so later ones in the window are the same interrupt
        line = s_out + self.dev_gap() if self.dev_gap is not None else p_in
        if line < p_in - 30 * NS:
            self.sim.vmm_episode(line, False)
        self.irq(p_in, p_out, self.cpu, cur.pid, TIMER_IRQ)
        if cur.pid != 0:
            ch.run.extend((self.cur_since, p_in, cur.pid))
            if cur.policy == "other":
                cur.vr += (p_out - self.cur_since) * 1024 / cur.weight
        s_in = p_out + self.sched()
        ch.sw.extend((s_in, cur.idx, 0, me.idx))
        upd = s_in + self.inject()
        entry = upd + self.entry()
        dl = self.armed(upd, deadline)
        level = self.load(upd, entry, dl, ctl, None)
        self.ev(Ev.ENTRY, entry, self.cpu, me.pid, pc)
        ch.xexits.extend((kexit, entry, 0, 0, 0))
        self.cur, self.last_in, self.dirty = back, s_in, True
        self.now = entry

        def throttled_by(start: int) -> list[tuple[Any, ...]]:
            """Who ran while the vCPU was throttled, from ``start`` on (less a tick's worst case per tick)."""
            held: dict[str, int] = {}
            runs = ch.run[n_run:]
            for a, b, pid in zip(runs[::3], runs[1::3], runs[2::3], strict=True):
                ns = min(b, p_in) - max(a, start)
                if ns > 0:
                    comm = next(t for t in sim.tasks if t.pid == pid).comm
                    held[comm] = held.get(comm, 0) + ns
            ticks = (p_in - max(start, s_out)) // sim.tick_ns + 1
            return [("rt_throttling", comm, ns - ticks * 40 * NS) for comm, ns in held.items()]

        vcpu = ("vcpu", me.comm, entry - s_in)
        if line < p_in - 30 * NS:
            self.intr("device", int(sim.p["vmm"]["spi"]), "host", None, line, -1, -1, line, -1, entry, None,
                      self.cause_of(self.trace_t(line), entry, [*throttled_by(line), vcpu]))
        if not (level and dl == deadline):
            return AGAIN
        # the analysis's "preempted" path (docs/stages.md): from the switch-in that injects it at the load
        self.intr("timer", GUEST_VTIMER, "preempted", deadline, s_in, -1, s_in, upd, -1, entry, None,
                  self.cause_of(deadline, entry, [*throttled_by(self.machine_t(deadline)), vcpu]))
        return self.delivered(deadline, entry, 2)

    # ------------------------------------------------------------------ nested guest timer interrupt
    def nested_softirq(self, deadline: int, t0: int) -> int:
        """The guest timer fires while the host handles a NIC interrupt taken in guest mode (``sim.cut``):
        in its NET_RX softirq (interrupts on). The exit and the entry wait for the softirq's end."""
        ts, _cls, h = self.sim.cut
        me, cpu = self.me, self.cpu
        irq_out, soft_in, soft_out, kexit = (int(x) for x in net_split(ts, h))
        t_v = min(max(t0, soft_in + NS), soft_out - NS)
        upd = t_v + self.host_irq()
        v_out = upd + self.irq_tail() + NS
        d = v_out - t_v
        soft_out, kexit, entry = soft_out + d, kexit + d, ts + h + d
        pc = self.slow_pc()
        self.irq(ts, irq_out, cpu, me.pid, NIC_IRQ)
        self.ev(Ev.SOFT_RAISE, ts + (irq_out - ts) // 2, cpu, me.pid, NET_RX)
        self.ev(Ev.SOFT_IN, soft_in, cpu, me.pid, NET_RX)
        self.ev(Ev.IRQ_IN, t_v, cpu, me.pid, VTIMER_IRQ)
        self.ev(Ev.UPD, upd, cpu, me.pid, GUEST_VTIMER, 1)
        self.ev(Ev.VGIC, upd + (v_out - upd) // 3, cpu, me.pid, GUEST_VTIMER, 1)
        self.ev(Ev.IRQ_OUT, v_out, cpu, me.pid, VTIMER_IRQ)
        self.ev(Ev.SOFT_OUT, soft_out, cpu, me.pid, NET_RX)
        self.ev(Ev.KEXIT, kexit, cpu, me.pid, 0, 0, pc)
        self.ev(Ev.ENTRY, entry, cpu, me.pid, pc)
        self.sim.chunk.xexits.extend((kexit, entry, 0, 0, 0))
        md = self.machine_t(deadline)
        soft = (soft_out - max(md, soft_in)) - d
        self.intr("timer", GUEST_VTIMER, "running", deadline, t_v, -1, -1, upd, kexit, entry, None,
                  self.cause_of(deadline, entry, [("softirq", "softirq:NET_RX", soft),
                                                  ("vcpu", me.comm, entry - kexit)]))
        self.dirty = True
        return self.delivered(deadline, entry, 1)


def sim_stream(sim: Simulator, name: str) -> np.random.Generator:
    from kvmtrace.synth.sim import stream

    return stream(sim.seed, name)


def sim_ints(sim: Simulator, name: str, below: int) -> Callable[[], int]:
    from kvmtrace.synth.sim import blocks

    rng = sim_stream(sim, name)
    return blocks(lambda: rng.integers(0, below, 4096).tolist())


def chunk_foreign(sim: Simulator, ch: Chunk, pid_at: Callable[[np.ndarray], np.ndarray]) -> None:
    """Move the events the measured CPUs caused on ``ch.cpu`` into its chunk; pid -1 becomes whoever ran."""
    if not sim.foreign:
        return
    arr = np.array(sim.foreign, np.int64).reshape(-1, 7)
    mine = arr[arr[:, 2] == ch.cpu]
    unknown = mine[:, 3] < 0
    mine[unknown, 3] = pid_at(mine[unknown, 1])
    ch.ev.extend(mine.ravel().tolist())
