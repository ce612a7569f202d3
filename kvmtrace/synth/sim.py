"""The discrete-event simulation behind ``kvmtrace synth``.

One measured thread per CPU (a vCPU thread running the guest's cyclictest, or the host's own
cyclictest) competes with host tasks (a hog, background bursts) under a CFS/FIFO scheduler. The
simulation steps at the granularity of interrupts, exits and scheduling decisions; every step
appends a few numbers to per-chunk lists, which ``expand`` turns into event batches with numpy.
Durations are drawn in bulk from the scenario's distributions. Deterministic for a seed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from kvmtrace.synth.scenario import sample

NS = 1000  # ns per us in parameters
EC = {"WFx": 0x01, "SYS64": 0x18, "HVC64": 0x16, "DABT_LOW": 0x24, "IABT_LOW": 0x20}
EXIT_CLASSES = ("IRQ", "SYS64", "HVC64", "MMIO_UART", "MMIO_VIRTIO", "MMIO_GIC", "RAM", "IABT", "ACCESS")
CLS = {name: i for i, name in enumerate(EXIT_CLASSES)}
WFX = 100  # class code of the WFx exit that blocks the vCPU
REGIONS = {"MMIO_UART": ("uart", 0x09000000, 0x1000), "MMIO_VIRTIO": ("virtio", 0x0A000000, 0x4000),
           "MMIO_GIC": ("gic", 0x08000000, 0x10000)}
NICE_WEIGHT = {-10: 9548, -5: 3121, 0: 1024, 5: 335, 10: 110, 19: 15}


class Pool:
    """Bulk-drawn random values, handed out one at a time (refilled in blocks)."""

    def __init__(self, rng: np.random.Generator, dist: dict[str, Any], block: int = 65536) -> None:
        self.rng, self.dist, self.block = rng, dist, block
        self.buf: list[int] = []
        self.i = 0

    def next(self) -> int:
        if self.i >= len(self.buf):
            self.buf = sample(self.dist, self.rng, self.block).tolist()
            self.i = 0
        v = self.buf[self.i]
        self.i += 1
        return v


class ExitStream:
    """Exits of a guest run as a Poisson process in *guest* time, classes by rate."""

    def __init__(self, rng: np.random.Generator, spec: dict[str, Any]) -> None:
        self.rng = rng
        rates = {k: float(v.get("rate_hz", 0)) for k, v in spec.items() if k in CLS}
        self.names = [k for k, r in rates.items() if r > 0]
        self.rate = sum(rates[k] for k in self.names)
        self.p = np.array([rates[k] for k in self.names]) / self.rate if self.rate else np.zeros(0)
        self.handling = {k: Pool(rng, spec[k]["handling"]) for k in self.names}
        self.gaps: list[int] = []
        self.cls: list[int] = []
        self.i = 0

    def _refill(self) -> None:
        n = 16384
        self.gaps = np.maximum(np.rint(self.rng.exponential(1e9 / self.rate, n)), 200).astype(np.int64).tolist()
        picks = self.rng.choice(len(self.names), size=n, p=self.p)
        self.cls = [CLS[self.names[i]] for i in picks.tolist()]
        self.i = 0

    def next(self) -> tuple[int, int, int]:
        """(guest ns until the exit, class code, handling ns)."""
        if not self.rate:
            return 1 << 62, -1, 0
        if self.i >= len(self.gaps):
            self._refill()
        gap, cls = self.gaps[self.i], self.cls[self.i]
        self.i += 1
        return gap, cls, self.handling[EXIT_CLASSES[cls]].next()


@dataclass
class Task:
    comm: str
    pid: int
    policy: str = "other"
    prio: int = 0
    nice: int = 0
    vr: float = 0.0

    @property
    def kprio(self) -> int:
        """The kernel priority sched events print (120 + nice, or 99 - rt prio)."""
        return 99 - self.prio if self.policy == "fifo" else 120 + self.nice

    weight: int = 1024

    def __post_init__(self) -> None:
        self.weight = NICE_WEIGHT.get(self.nice, 1024)


IDLE = Task("swapper", 0)


@dataclass
class Chunk:
    """What one chunk of simulation produced (plain lists; ``expand`` vectorises them)."""

    # host scheduling: sched_switch (ts, cpu, prev task, prev_state, next task) and wakeups
    sw: list[tuple[int, int, Task, int, Task]] = field(default_factory=list)
    wk: list[tuple[int, int, int, Task]] = field(default_factory=list)  # ts, cpu, current pid, woken
    ticks: list[tuple[int, int, int, int]] = field(default_factory=list)  # entry ts, exit ts, cpu, pid
    run: list[tuple[int, int, int, int]] = field(default_factory=list)  # host task run: start, end, cpu, pid
    # exits: ts, handling, class, cpu, tid, guest_run (or -1), fault index (or -1)
    exits: list[tuple[int, int, int, int, int, int]] = field(default_factory=list)
    # interrupts: see INTR_FIELDS
    intr: list[tuple[int, ...]] = field(default_factory=list)
    blockers: list[tuple[str | None, int | None, int | None]] = field(default_factory=list)
    # W, switch ts, cpu, tid, cval, deadline (ns: the host hrtimer KVM arms for the blocked vCPU)
    wfi: list[tuple[int, int, int, int, int, int]] = field(default_factory=list)
    host_ct: list[tuple[int, int, int, int, int, int]] = field(default_factory=list)
    cyclictest: list[tuple[int, int, int, int, str]] = field(default_factory=list)  # deadline, latency, tid, cpu, path
    marks: list[tuple[int, int, str]] = field(default_factory=list)  # ts, cpu, text

    def size(self) -> int:
        return len(self.sw) + len(self.exits) * 3 + len(self.intr) * 10 + len(self.ticks) * 2


# intr tuple: path(0 blocked/1 running), cpu, tid, deadline, t0, wake, irq_exit, switch, update, exit, entry,
# blocked_since (W), cval, prev_pid, prev_state, prev_task_index(-1)
INTR_FIELDS = ("path", "cpu", "tid", "deadline", "t0", "wake", "irq_exit", "switch", "update", "kexit",
               "entry", "since", "cval")


class Simulator:
    """Runs one scenario; ``run`` yields chunks of results in time order."""

    def __init__(self, params: dict[str, Any], seed: int) -> None:
        self.p = params
        self.rng = np.random.default_rng(seed)
        st = params["stages"]
        self.pool = {k: Pool(self.rng, v) for k, v in st.items()}
        self.post = Pool(self.rng, params["cyclictest"]["post_us"])
        self.busy = Pool(self.rng, params["guest"]["busy"])
        self.busy_prob = float(params["guest"]["busy_prob"])
        self.uni: list[float] = []
        self.tick_ns = int(1e9 // int(params["hz"]))
        self.cfs = {k: int(v) * NS for k, v in params["cfs"].items()}
        self.counter_hz = int(params["counter_hz"])
        self.counter_off = int(float(params["counter_offset_s"]) * 1e9)
        self.chunk = Chunk()
        self.fault_count = 0
        self.fault_rows: list[tuple[int, ...]] = []  # ts, tid, ipa, hsr, class, write, level, kind
        self.ram_cursor = int(params["guest_ram"]["start"])
        self.ram_end = self.ram_cursor + (int(params["guest_ram"]["size_mb"]) << 20)
        self.tick_phases: dict[int, int] = {}
        self.tick_phase = 0
        self.bg_end = -1
        self.last_in = 0
        self.min_vr = 0.0
        self.lm_fresh = False

    def u(self) -> float:
        if not self.uni:
            self.uni = self.rng.random(65536).tolist()
        return self.uni.pop()

    def cval(self, deadline: int) -> int:
        return (deadline + self.counter_off) * self.counter_hz // 1_000_000_000

    # ------------------------------------------------------------------ one CPU
    def run_cpu(self, vcpu: dict[str, Any], loops: int, start: int, marks_cpu: int,
                flush_every: int, sink: Any) -> int:
        p = self.p
        cpu = int(vcpu["cpu"])
        side = p["side"]
        if side == "guest":
            me = Task(p["vcpu_comm"], int(vcpu["tid"]), vcpu.get("policy", "other"), int(vcpu.get("prio", 0)),
                      int(vcpu.get("nice", 0)))
        else:
            me = Task("cyclictest", int(p["cyclictest"]["tid"]), "fifo", int(p["cyclictest"]["prio"]))
        hog_p = p.get("hog")
        hog = None
        if hog_p and int(hog_p["cpu"]) == cpu:
            hog = Task(hog_p["comm"], int(hog_p["pid"]), hog_p.get("policy", "other"), int(hog_p.get("prio", 0)),
                       int(hog_p.get("nice", 0)))
        bgs = []
        for b in p["background"]:
            if int(b["cpu"]) != cpu:
                continue
            t = Task(b["comm"], int(b["pid"]), b.get("policy", "other"), int(b.get("prio", 0)))
            bgs.append((t, float(b["rate_hz"]), Pool(self.rng, b["burst"])))
        # background arrivals: merged Poisson process (next arrival per task)
        nxt = [start + int(self.rng.exponential(1e9 / r)) if r > 0 else 1 << 62 for _t, r, _p in bgs]
        self.tick_phase = int(self.rng.integers(0, self.tick_ns))
        ct = p["cyclictest"]
        interval = int(ct["interval_us"]) * NS
        now = start
        cur: Task = hog if hog is not None else IDLE  # task on the CPU while `me` is not running
        pending: list[tuple[Task, int]] = []  # background bursts woken while `me` ran
        self.min_vr = 0.0
        cur_since = now
        self.last_in = now

        # ---- boot and benchmark phases: the guest runs continuously
        if side == "guest":
            self.chunk.sw.append((now, cpu, cur, 0, me))
            if hog is not None:
                self.chunk.run.append((start - 50 * NS, now, cpu, hog.pid))
            now += 10 * NS
            if p.get("boot"):
                self.chunk.marks.append((now, marks_cpu, "L2_BOOT_START"))
                ex = ExitStream(self.rng, p["boot"]["exits"])
                now = self.guest_run(now, int(float(p["boot"]["guest_ms"]) * 1e6), ex, cpu, me, None)[0]
                self.chunk.marks.append((now + 2 * NS, marks_cpu, f"L2_SHELL uptime={(now - start) / 1e9:.2f}"))
                now += 5 * NS
            if p.get("lmbench"):
                lm = p["lmbench"]
                self.chunk.marks.append((now, marks_cpu, "L2_LMBENCH_START lat_mem_rd"))
                spec = {"RAM": {"rate_hz": int(lm["mb"]) * 256 / (float(lm["guest_ms"]) / 1000),
                                "handling": p["exits"]["RAM"]["handling"]}, "IRQ": p["exits"]["IRQ"]}
                self.lm_fresh = True
                now = self.guest_run(now, int(float(lm["guest_ms"]) * 1e6), ExitStream(self.rng, spec), cpu, me,
                                     None)[0]
                self.lm_fresh = False
                self.chunk.marks.append((now + 2 * NS, marks_cpu, "L2_LMBENCH_END"))
                now += 5 * NS
        self.chunk.marks.append((now, marks_cpu, f"L2_CYCLICTEST_START dur={loops * interval // 10**9}"))
        ex = ExitStream(self.rng, p["exits"])
        first_deadline = now + interval
        lat_max, lat_sum, lat_min, last_lat = 0, 0, 1 << 62, 0
        need = 20 * NS  # guest time left before the guest executes WFI
        in_guest = side == "guest"
        k = 0
        blocked_at = now
        if not in_guest:
            self.chunk.sw.append((now, cpu, me, 1, cur))
        next_deadline = first_deadline
        while k < loops:
            # like cyclictest: the next deadline is one interval on, skipping periods already missed
            deadline = next_deadline
            t0 = deadline + self.pool["timer"].next()
            if in_guest:
                # the guest runs until it executes WFI, unless the deadline's interrupt comes first
                end, fired = self.guest_run(now, need, ex, cpu, me, t0)
                if fired is not None:
                    # running path: irq handled in the guest; injection, exit, entry
                    t_irq = fired
                    upd = t_irq + self.pool["host_irq"].next()
                    kexit = upd + self.pool["r_exit"].next()
                    entry = kexit + self.pool["r_entry"].next()
                    self.chunk.intr.append((1, cpu, me.pid, deadline, t_irq, -1, -1, -1, upd, kexit, entry, -1,
                                            self.cval(deadline)))
                    self.chunk.blockers.append((None, None, None))
                    self.exit_row(kexit, entry - kexit, WFX + 1, cpu, me.pid)
                    gh = self.pool["guest_handling"].next()
                    lat = entry - deadline + gh
                    self.chunk.cyclictest.append((deadline, lat, me.pid, cpu, "running"))
                    now = entry
                    need = end + gh + self.post.next() + (self.busy.next() if self.u() < self.busy_prob else 0)
                    k += 1
                    next_deadline = _next_deadline(deadline, deadline + lat, interval)
                    lat_max, lat_min, lat_sum, last_lat = max(lat_max, lat), min(lat_min, lat), lat_sum + lat, lat
                    self.maybe_flush(flush_every, sink)
                    continue
                # WFx exit: the vCPU blocks
                now = end
                block = self.pool["block"].next()
                self.exit_row(now, -1, WFX, cpu, me.pid)
                sw_ts = now + block
                nxt_task = self.pick(cur, hog, pending)
                cur = nxt_task
                self.chunk.wfi.append((now, sw_ts, cpu, me.pid, self.cval(deadline), deadline))
                self.chunk.sw.append((sw_ts, cpu, me, 1, cur))
                blocked_at = now
                now = sw_ts + 12 * NS  # save_state events follow the switch
                cur_since = now
                self.account_me(me, sw_ts - self.last_in)
                if t0 <= now + 2 * NS:
                    t0 = now + 2 * NS
            # ---- the measured thread is blocked: host tasks run until t0
            cur, cur_since, now, pending = self.host_until(cpu, cur, cur_since, now, t0, hog, bgs, nxt, pending)
            irq_name_pid = cur.pid
            wake = t0 + self.pool["host_irq"].next()
            irq_exit = wake + self.pool["irq_tail"].next()
            switch, blocker, prev_state, _cur_end = self.wait(cpu, me, cur, cur_since, wake, irq_exit, hog)
            self.chunk.wk.append((wake, cpu, irq_name_pid, me))
            self.chunk.ticks.append((t0, irq_exit, cpu, irq_name_pid))
            self.chunk.sw.append((switch, cpu, cur, prev_state, me))
            if cur is not IDLE:
                self.chunk.run.append((cur_since, t0, cpu, cur.pid))
            if cur is hog and hog is not None:
                hog.vr += (switch - cur_since) * 1024 / hog.weight
            cur = hog if hog is not None else IDLE
            if side == "guest":
                upd = switch + self.pool["inject"].next()
                entry = upd + self.pool["entry"].next()
                self.chunk.intr.append((0, cpu, me.pid, deadline, t0, wake, irq_exit, switch, upd, -1, entry,
                                        blocked_at, self.cval(deadline)))
                self.chunk.blockers.append(blocker)
                self.fix_wfi_handling(entry)
                gh = self.pool["guest_handling"].next()
                lat = entry - deadline + gh
                self.chunk.cyclictest.append((deadline, lat, me.pid, cpu, "blocked"))
                now = entry
                need = gh + self.post.next() + (self.busy.next() if self.u() < self.busy_prob else 0)
            else:
                user = self.pool["host_user"].next()
                lat = switch - deadline + user
                sleep_at = switch + user + self.post.next()
                self.chunk.host_ct.append((deadline, t0, wake, irq_exit, switch, sleep_at))
                self.chunk.cyclictest.append((deadline, lat, me.pid, cpu, "host"))
                nxt_task = self.pick(cur, hog, pending)
                cur = nxt_task
                self.chunk.sw.append((sleep_at, cpu, me, 1, cur))
                now = sleep_at + NS
                cur_since = now
            self.last_in = switch
            k += 1
            next_deadline = _next_deadline(deadline, deadline + lat, interval)
            lat_max, lat_min, lat_sum, last_lat = max(lat_max, lat), min(lat_min, lat), lat_sum + lat, lat
            self.maybe_flush(flush_every, sink)
        if in_guest:
            end, _ = self.guest_run(now, need, ex, cpu, me, None)
            self.exit_row(end, -1, WFX, cpu, me.pid)
            self.chunk.wfi.append((end, end + 8 * NS, cpu, me.pid, self.cval(end + interval), end + interval))
            cur = self.pick(cur, hog, pending)
            self.chunk.sw.append((end + 8 * NS, cpu, me, 1, cur))
            now = end + 20 * NS
        if loops:
            summary = (f"T: 0 ({me.pid if side == 'host' else ct['tid']:5d}) P:{ct['prio']} "
                       f"I:{ct['interval_us']} C:{loops:9d} Min:{lat_min // NS:7d} Act:{last_lat // NS:5d} "
                       f"Avg:{lat_sum // loops // NS:5d} Max:{lat_max // NS:9d}")
            self.chunk.marks.append((now + 100 * NS, marks_cpu, summary))
        self.chunk.marks.append((now + 200 * NS, marks_cpu, "L2_CYCLICTEST_END"))
        if hog is not None and cur is hog:
            self.chunk.run.append((now, now + 50 * NS, cpu, hog.pid))
        return now + 300 * NS

    # ------------------------------------------------------------------ pieces
    def maybe_flush(self, every: int, sink: Any) -> None:
        if self.chunk.size() >= every:
            sink(self.chunk)
            self.chunk = Chunk()

    def account_me(self, me: Task, ran: int) -> None:
        me.vr += max(ran, 0) * 1024 / me.weight

    def pick(self, cur: Task, hog: Task | None, pending: list[tuple[Task, int]]) -> Task:
        return hog if hog is not None else IDLE

    def fix_wfi_handling(self, entry: int) -> None:
        """The WFx exit's handling ends at this kvm_entry."""
        for i in range(len(self.chunk.exits) - 1, -1, -1):
            row = self.chunk.exits[i]
            if row[2] == WFX and row[1] < 0:
                self.chunk.exits[i] = (row[0], entry - row[0], *row[2:])
                return

    def exit_row(self, ts: int, handling: int, cls: int, cpu: int, tid: int, fault: int = -1) -> None:
        self.chunk.exits.append((ts, handling, cls, cpu, tid, fault))

    def guest_run(self, now: int, need: int, ex: ExitStream, cpu: int, me: Task,
                  irq_at: int | None) -> tuple[int, int | None]:
        """Run the guest from ``now`` for ``need`` ns of guest time, taking exits.

        Returns (wall time when the guest executes WFI, None) or, when ``irq_at`` falls while the
        guest runs, (guest time still needed, wall time of the interrupt)."""
        if not hasattr(ex, "pending"):
            ex.pending = ex.next()  # type: ignore[attr-defined]
        while True:
            gap, cls, handling = ex.pending  # type: ignore[attr-defined]
            if irq_at is not None and irq_at <= now + min(gap, need):
                used = max(irq_at - now, 0)
                if used < gap:
                    ex.pending = (gap - used, cls, handling)  # type: ignore[attr-defined]
                return need - used, max(irq_at, now + 100)
            if need <= gap:
                ex.pending = (gap - need, cls, handling)  # type: ignore[attr-defined]
                return now + need, None
            now += gap
            need -= gap
            self.emit_exit(now, cls, handling, cpu, me)
            now += handling
            ex.pending = ex.next()  # type: ignore[attr-defined]

    def emit_exit(self, ts: int, cls: int, handling: int, cpu: int, me: Task) -> None:
        name = EXIT_CLASSES[cls]
        fault = -1
        if name in ("RAM", "IABT", "ACCESS") or name.startswith("MMIO_"):
            fault = len(self.fault_rows)
            self.fault_rows.append(self.make_fault(ts, name, me.pid))
        self.exit_row(ts, handling, cls, cpu, me.pid, fault)

    def make_fault(self, ts: int, name: str, tid: int) -> tuple[int, ...]:
        """(ts, tid, ipa, hsr, hxfar, write, level, kind(0 translation,1 access,2 permission), mmio, mmio_val)."""
        u = self.u()
        if name.startswith("MMIO_"):
            _region, base, size = REGIONS[name]
            write = int(u < (0.7 if name == "MMIO_UART" else 0.5))
            off = int(self.u() * size) & ~3
            ipa = base + off
            # ISV set, SAS 32-bit, SRT random register, WnR, DFSC translation level 3
            hsr = (0x24 << 26) | (1 << 25) | (1 << 24) | (2 << 22) | (int(self.u() * 30) << 16) | (write << 6) | 0x07
            return (ts, tid, ipa, hsr, 0xFFFF800008000000 + off, write, 3, 0, 1)
        level = 3 if u < 0.85 else 2
        if name == "ACCESS":
            ipa = self.ram_page()
            write = int(self.u() < 0.5)
            hsr = (0x24 << 26) | (1 << 25) | (write << 6) | (0x08 + level)
            return (ts, tid, ipa, hsr, 0xFFFF000000000000 + (ipa & 0xFFFFFFF), write, level, 1, 0)
        if name == "IABT":
            ipa = self.ram_page()
            perm = self.u() < 0.2
            hsr = (0x20 << 26) | (1 << 25) | ((0x0C + level) if perm else (0x04 + level))
            return (ts, tid, ipa, hsr, ipa, 0, level, 2 if perm else 0, 0)
        ipa = self.ram_page()
        write = int(self.u() < 0.6)
        s1ptw = int(self.u() < 0.08)
        perm = (not s1ptw) and self.u() < 0.05
        dfsc = (0x0C + level) if perm else (0x04 + level)
        hsr = (0x24 << 26) | (1 << 25) | (s1ptw << 7) | (write << 6) | dfsc
        return (ts, tid, ipa, hsr, 0xFFFF000000000000 + (ipa & 0xFFFFFFF), write, level, 2 if perm else 0, 0)

    def ram_page(self) -> int:
        if self.lm_fresh or self.u() < 0.7:
            page = self.ram_cursor
            self.ram_cursor += 4096
            if self.ram_cursor >= self.ram_end:
                self.ram_cursor = int(self.p["guest_ram"]["start"])
            return page
        span = (self.ram_end - int(self.p["guest_ram"]["start"])) >> 12
        return int(self.p["guest_ram"]["start"]) + (int(self.u() * span) << 12)

    def host_until(self, cpu: int, cur: Task, cur_since: int, now: int, until: int, hog: Task | None,
                   bgs: list[tuple[Task, float, Pool]], nxt: list[int],
                   pending: list[tuple[Task, int]]) -> tuple[Task, int, int, list[tuple[Task, int]]]:
        """Host tasks run on the CPU from ``now`` to ``until``: background bursts preempt the hog."""
        t = now
        while True:
            i = min(range(len(nxt)), key=nxt.__getitem__) if nxt else -1
            if i < 0 or nxt[i] >= until:
                break
            task, rate, pool = bgs[i]
            arrive = max(nxt[i], t)
            # wakeups while the task could not run coalesce into one burst
            nxt[i] = arrive + max(int(self.rng.exponential(1e9 / rate)), 1000)
            if arrive >= until - 2 * NS:
                continue
            dur = pool.next()
            prev = cur
            if prev is hog and hog is not None:
                self.chunk.run.append((cur_since, arrive, cpu, hog.pid))
                hog.vr += (arrive - cur_since) * 1024 / hog.weight
            self.chunk.wk.append((arrive - 2 * NS, cpu, prev.pid, task))
            self.chunk.sw.append((arrive, cpu, prev, 0, task))
            end = arrive + dur
            task.vr = max(task.vr, self.min_vr - self.cfs["latency_us"] / 2)
            if end < until:
                back = hog if hog is not None else IDLE
                self.chunk.sw.append((end, cpu, task, 1, back))
                self.chunk.run.append((arrive, end, cpu, task.pid))
                task.vr += dur
                cur, cur_since, t = back, end + NS, end + NS
            else:
                task.vr += until - arrive
                self.bg_end = end
                return task, arrive, until, pending
        self.bg_end = -1
        return cur, cur_since, max(t, now), pending

    def wait(self, cpu: int, me: Task, cur: Task, cur_since: int, wake: int, irq_exit: int,
             hog: Task | None) -> tuple[int, tuple[str | None, int | None, int | None], int, int]:
        """When the woken thread gets the CPU, who held it meanwhile, and the holder's prev_state."""
        sched = self.pool["sched"].next()
        tail = irq_exit - wake  # the rest of the waking interrupt's handler: its own blocker (docs/stages.md)
        if cur is IDLE:
            irq_only = ("irq:arch_timer", None, tail) if tail > 0 else (None, None, None)
            return irq_exit + sched, irq_only, 0, irq_exit
        me.vr = max(me.vr, self.min_vr - self.cfs["latency_us"] / 2)
        finite = cur is not hog
        end = self.bg_end if finite else 1 << 62
        cfs_pair = False
        if me.policy == "fifo" and (cur.policy != "fifo" or cur.prio < me.prio):
            switch = irq_exit + sched
        elif cur.policy == "fifo" and (me.policy != "fifo" or cur.prio >= me.prio):
            switch = end
        else:
            # both CFS: wakeup preemption, else the tick decides (or the holder sleeps)
            cur_vr = cur.vr + (wake - cur_since) * 1024 / cur.weight
            if cur_vr - me.vr > self.cfs["wakeup_gran_us"]:
                switch = irq_exit + sched
            else:
                switch, cfs_pair = end, True
        tick_ns = 0
        if switch > irq_exit + sched:
            slice_ns = max(self.cfs["latency_us"] * cur.weight // (cur.weight + me.weight), self.cfs["min_gran_us"])
            tick = ((irq_exit - self.tick_phase) // self.tick_ns + 1) * self.tick_ns + self.tick_phase
            while tick < end:
                tick_end = tick + self.pool["tick"].next()
                if tick_end >= end - NS:
                    break
                ran = tick - cur_since
                vr_now = cur.vr + ran * 1024 / cur.weight
                self.chunk.ticks.append((tick, tick_end, cpu, cur.pid))
                tick_ns += tick_end - tick
                if cfs_pair and ((ran >= slice_ns and me.vr < vr_now) or vr_now - me.vr > slice_ns):
                    switch = tick_end + self.pool["sched"].next()
                    break
                tick += self.tick_ns
        if switch >= end and finite:
            switch = end
            state = 1
        else:
            state = 0
        switch = max(switch, irq_exit + NS)
        # shares of the wait: ticks are irq time, the rest the holder's
        held = (switch - irq_exit) - tick_ns  # time after the waking irq
        if cur.policy == "other":
            cur.vr += (switch - cur_since) * 1024 / cur.weight
        self.min_vr = max(self.min_vr, min(cur.vr, me.vr))
        if tail + tick_ns >= held:  # ties go to the handler, as the analysis orders owners by name
            return switch, ("irq:arch_timer", None, tail + tick_ns), state, switch
        return switch, (cur.comm, cur.pid, held), state, switch

    def background_only(self, cpu: int, start: int, end: int, out: Chunk) -> None:
        """A CPU without a measured thread: its background bursts on an otherwise idle CPU."""
        self.tick_phases[cpu] = int(self.rng.integers(0, self.tick_ns))
        tasks = [(Task(b["comm"], int(b["pid"]), b.get("policy", "other"), int(b.get("prio", 0))),
                  float(b["rate_hz"]), b["burst"]) for b in self.p["background"]
                 if int(b["cpu"]) == cpu and float(b["rate_hz"]) > 0]
        arrivals: list[tuple[int, int]] = []
        for i, (_t, rate, _d) in enumerate(tasks):
            n = int(rate * (end - start) / 1e9 * 1.2) + 10
            times = start + np.cumsum(self.rng.exponential(1e9 / rate, n)).astype(np.int64)
            arrivals += [(int(x), i) for x in times[times < end - 1_000_000]]
        arrivals.sort()
        durs = {i: sample(d, self.rng, len(arrivals) + 1).tolist() for i, (_t, _r, d) in enumerate(tasks)}
        t = start
        for j, (arrive, i) in enumerate(arrivals):
            task = tasks[i][0]
            a = max(arrive, t + 2 * NS)
            e = a + durs[i][j]
            out.wk.append((a - NS, cpu, 0, task))
            out.sw.append((a, cpu, IDLE, 0, task))
            out.sw.append((e, cpu, task, 1, IDLE))
            out.run.append((a, e, cpu, task.pid))
            t = e


def _next_deadline(deadline: int, measured_at: int, interval: int) -> int:
    """cyclictest's update: one interval on, then on until after the time it measured."""
    nxt = deadline + interval
    if nxt < measured_at:
        nxt += -(-(measured_at - nxt) // interval) * interval
    return nxt
