"""The discrete-event simulation behind ``kvmtrace synth``.

One measured thread per CPU (a vCPU thread running the guest's cyclictest, or the host's own
cyclictest) competes with host tasks (a hog, background bursts) under a CFS/FIFO scheduler. The
simulation steps at the granularity of interrupts, exits and scheduling decisions. It is one lean
Python loop per cyclictest loop: every random duration comes from an endless stream drawn in bulk
with numpy (one independent stream per purpose, so draws do not depend on how purposes
interleave), the common case (no exit, no background burst pending) is inlined, and every step
appends a few integers to flat per-chunk lists (tasks by index), which ``expand`` reshapes into
numpy arrays. Deterministic for a seed.
"""

from __future__ import annotations

import itertools
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from kvmtrace.synth import episodes
from kvmtrace.synth.episodes import NO_EPISODE, Episodes, StallMap, chunk_foreign
from kvmtrace.synth.scenario import sample

NS = 1000  # ns per us in parameters
EC = {"WFx": 0x01, "SYS64": 0x18, "HVC64": 0x16, "DABT_LOW": 0x24, "IABT_LOW": 0x20}
EXIT_CLASSES = ("IRQ", "SYS64", "HVC64", "MMIO_UART", "MMIO_VIRTIO", "MMIO_GIC", "RAM", "IABT", "ACCESS", "NET",
                "DEVICE")
CLS = {name: i for i, name in enumerate(EXIT_CLASSES)}
WFX = 100  # class code of the WFx exit that blocks the vCPU
DEVICE = CLS["DEVICE"]  # the VMM's device interrupt kicks the guest out (the exit row's fault field: its kvm_irq_line)
REGIONS = {"MMIO_UART": ("uart", 0x09000000, 0x1000), "MMIO_VIRTIO": ("virtio", 0x0A000000, 0x4000),
           "MMIO_GIC": ("gic", 0x08000000, 0x10000)}
NICE_WEIGHT = {-10: 9548, -5: 3121, 0: 1024, 5: 335, 10: 110, 19: 15}
FAULTING = frozenset(CLS[n] for n in ("RAM", "IABT", "ACCESS", "MMIO_UART", "MMIO_VIRTIO", "MMIO_GIC"))
NEVER = 1 << 62
# blocker codes in the interrupt rows (else a task index)
NO_BLOCKER, IRQ_BLOCKER = -1, -2
PATHS = ("blocked", "running", "host")
# what guest_run returns instead of an interrupt time when it stops at an exit: the tick that finds
# the real-time budget spent (CUT), an exit whose handling the guest timer's interrupt falls into (NESTED)
CUT, NESTED = -1, -2


def stream(seed: int, name: str) -> np.random.Generator:
    """An independent random stream per purpose: draws do not depend on how purposes interleave."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(zlib.crc32(name.encode()),)))


def blocks(make: Callable[[], list[Any]]) -> Callable[[], Any]:
    """An endless stream handed out one value per call, drawn ``make()`` values at a time."""
    return itertools.chain.from_iterable(iter(make, None)).__next__


def uniform(rng: np.random.Generator) -> Callable[[], float]:
    return blocks(lambda: rng.random(65536).tolist())


def exp_gaps(rng: np.random.Generator, scale: float) -> Callable[[], int]:
    """Exponential gaps (int ns, truncated) of a Poisson process."""
    return blocks(lambda: rng.exponential(scale, 4096).astype(np.int64).tolist())


class Draws:
    """A stream handed out ``take(n)`` values at a time, drawn in fixed blocks by ``make``: the values
    do not depend on how the takes are sized (how the run is cut into chunks)."""

    def __init__(self, make: Callable[[], np.ndarray]) -> None:
        self.make = make
        self.buf: np.ndarray | None = None

    def take(self, n: int) -> np.ndarray:
        buf = self.buf if self.buf is not None else self.make()
        while buf.shape[0] < n:
            buf = np.concatenate((buf, self.make()))
        self.buf = buf[n:]
        return buf[:n]


class Pool:
    """Bulk-drawn values of a distribution; ``next()`` hands them out one at a time."""

    def __init__(self, rng: np.random.Generator, dist: dict[str, Any], block: int = 65536) -> None:
        self.next: Callable[[], int] = blocks(lambda: sample(dist, rng, block).tolist())


class ExitStream:
    """Exits of a guest run as a Poisson process in *guest* time, classes by rate."""

    def __init__(self, seed: int, name: str, spec: dict[str, Any]) -> None:
        rng = stream(seed, name)
        rates = {k: float(v.get("rate_hz", 0)) for k, v in spec.items() if k in CLS}
        names = [k for k, r in rates.items() if r > 0]
        self.rate = rate = sum(rates[k] for k in names)
        handling: list[Callable[[], int]] = [lambda: 0] * len(EXIT_CLASSES)
        for k in names:
            handling[CLS[k]] = Pool(stream(seed, f"{name}:{k}"), spec[k]["handling"]).next
        self.handling = handling
        # guest ns until the next exit, its class and handling (consumed by guest_run)
        self.pending: tuple[int, int, int] | None = None
        if rate:
            p = np.array([rates[k] for k in names]) / rate
            codes = np.array([CLS[k] for k in names], np.int64)
            n = 16384  # per block: the gaps, then the classes (the two streams advance together)
            self._gap = blocks(lambda: np.maximum(np.rint(rng.exponential(1e9 / rate, n)), 200)
                               .astype(np.int64).tolist())
            self._cls = blocks(lambda: codes[rng.choice(len(names), size=n, p=p)].tolist())

    def next(self) -> tuple[int, int, int]:
        """(guest ns until the exit, class code, handling ns)."""
        if not self.rate:
            return NEVER, -1, 0
        gap = self._gap()
        cls = self._cls()
        return gap, cls, self.handling[cls]()


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
    idx: int = 0  # index in Simulator.tasks (0: the idle task)

    def __post_init__(self) -> None:
        self.weight = NICE_WEIGHT.get(self.nice, 1024)


IDLE = Task("swapper", 0)


class Chunk:
    """What one chunk of simulation of one CPU produced: flat int lists, ``expand`` reshapes them.

    Rows of the measured thread's CPU ``cpu``; ``tid`` is the measured thread (vCPU or cyclictest)."""

    # record -> its fields, in the order they are appended (flat lists)
    FIELDS: ClassVar[dict[str, tuple[str, ...]]] = {
        "sw": ("ts", "prev", "prev_state", "next"),  # sched_switch (tasks by index)
        "wk": ("ts", "pid", "woken"),  # sched_wakeup: current pid, woken task index
        "ticks": ("t_in", "t_out", "pid"),  # host timer interrupt (irq_handler_entry/exit)
        "run": ("start", "end", "pid"),  # a host task ran (ticks are placed in it)
        "exits": ("ts", "handling", "cls", "fault"),  # kvm_exit: handling -1 until the entry, fault index
        # blocked-path interrupts: deadline, host irq entry, wakeup, irq exit, switch to the vCPU, timer
        # update, kvm_entry; the WFx exit, the switch away from the vCPU, the task that held the CPU
        # (index, since when) and its prev_state, the blocker (code, ns), guest handling
        "blocked": ("deadline", "t0", "wake", "irq_exit", "switch", "upd", "entry", "since", "sw_out", "holder",
                    "prev_state", "blocker", "blocker_ns", "held_since", "gh"),
        "running": ("deadline", "t0", "upd", "kexit", "entry", "gh"),  # running-path interrupts
        "wfi": ("w", "switch", "deadline"),  # WFx: exit, switch-out, the deadline KVM arms a hrtimer for
        "cyclictest": ("deadline", "latency", "path"),  # path: index in PATHS
        # the slow paths' events, one by one (code: Ev in episodes.py; pid -1: whoever runs on cpu then)
        "ev": ("code", "ts", "cpu", "pid", "a", "b", "c"),
        "xexits": ("t", "entry", "ret", "ec", "cls"),  # exits whose events are in ``ev`` (truth only)
    }

    def __init__(self, cpu: int = 0, tid: int = 0, me: int = 0, back: int = 0,
                 tmap: Callable[[np.ndarray], np.ndarray] | None = None) -> None:
        self.cpu, self.tid = cpu, tid
        self.me, self.back = me, back  # task indexes: the measured thread, who runs when it sleeps
        self.tmap = tmap  # machine time -> trace time (whole-machine stalls), None: the same
        self.sw: list[int] = []
        self.wk: list[int] = []
        self.ticks: list[int] = []
        self.run: list[int] = []
        self.exits: list[int] = []
        self.blocked: list[int] = []
        self.running: list[int] = []
        self.wfi: list[int] = []
        self.cyclictest: list[int] = []
        self.ev: list[int] = []
        self.xexits: list[int] = []
        # interrupts of the slow paths, with their stage boundaries (times): see TruthBuilder.add_rows
        self.intr: list[tuple[Any, ...]] = []
        self.marks: list[tuple[int, int, str]] = []  # ts, cpu, text
        self._tables: dict[str, np.ndarray] = {}

    def size(self) -> int:
        """Weighted row count (switches, exits x3, interrupts x10, ticks x2), the flush criterion."""
        nb, nr = len(self.blocked) // 15, len(self.running) // 6
        return (len(self.sw) // 4 + 2 * nb + (len(self.exits) // 4 + nb + nr) * 3 + (nb + nr) * 10
                + (len(self.ticks) // 3 + nb) * 2 + len(self.ev) // 7 + 10 * len(self.intr))

    def table(self, name: str) -> np.ndarray:
        """The rows appended to record ``name``, as an (n, fields) int64 array (cached). Times are machine
        times: the trace clock is applied where events and truth are written (EventSink, TruthBuilder)."""
        flat = getattr(self, name)
        hit = self._tables.get(name)
        if hit is None or hit.size != len(flat):
            hit = self._tables[name] = np.array(flat, np.int64).reshape(-1, len(self.FIELDS[name]))
        return hit

    def rows(self, name: str, pid: np.ndarray) -> np.ndarray:
        """Record ``name`` with the rows the interrupt records imply, in time order (``pid``: pid by
        task index)."""
        base = self.table(name)
        b, r = self.table("blocked"), self.table("running")
        nb = b.shape[0]
        w, sw_out, entry = b[:, 7], b[:, 8], b[:, 6]
        me, back = np.full(nb, self.me, np.int64), np.full(nb, self.back, np.int64)
        if name == "exits":
            extra = [np.column_stack((w, entry - w, np.full(nb, WFX), np.full(nb, -1))),
                     np.column_stack((r[:, 3], r[:, 4] - r[:, 3], np.full(r.shape[0], WFX + 1),
                                      np.full(r.shape[0], -1)))]
        elif name == "wfi":
            extra = [np.column_stack((w, sw_out, b[:, 0]))]
        elif name == "sw":
            extra = [np.column_stack((sw_out, me, np.ones(nb, np.int64), back)),
                     np.column_stack((b[:, 4], b[:, 9], b[:, 10], me))]
        elif name == "wk":
            extra = [np.column_stack((b[:, 2], pid[b[:, 9]], me))]
        elif name == "ticks":
            extra = [np.column_stack((b[:, 1], b[:, 3], pid[b[:, 9]]))]
        elif name == "run":
            held = b[b[:, 9] != 0]  # not while idle
            extra = [np.column_stack((held[:, 13], held[:, 1], pid[held[:, 9]]))]
        elif name == "cyclictest":  # the latency from the deadline (a trace time) to the entry on the trace clock
            tm = self.tmap if self.tmap is not None else (lambda t: t)
            extra = [np.column_stack((b[:, 0], tm(entry) - b[:, 0] + b[:, 14], np.zeros(nb, np.int64))),
                     np.column_stack((r[:, 0], tm(r[:, 4]) - r[:, 0] + r[:, 5], np.ones(r.shape[0], np.int64)))]
        else:
            return base
        out = np.concatenate([base, *extra])
        return out[np.argsort(out[:, 0], kind="stable")]


class LatencyStats:
    """cyclictest's Min/Act/Avg/Max over the loops of the chunks added."""

    def __init__(self) -> None:
        self.min, self.max, self.sum, self.last = NEVER, 0, 0, 0

    def add(self, ch: Chunk) -> None:
        cyc = ch.rows("cyclictest", np.zeros(0, np.int64))
        if cyc.shape[0]:
            lat = cyc[:, 1]
            self.min = min(self.min, int(lat.min()))
            self.max = max(self.max, int(lat.max()))
            self.sum += int(lat.sum())
            self.last = int(lat[-1])


@dataclass
class CpuTasks:
    """The tasks of one measured CPU: the measured thread, the hog (if pinned there) and the background
    tasks with their arrival gaps and bursts (``nxt``: each one's next arrival, a merged Poisson process)."""

    me: Task
    hog: Task | None
    bgs: list[tuple[Task, Callable[[], int], Pool]] = field(default_factory=list)
    nxt: list[int] = field(default_factory=list)

    @property
    def back(self) -> Task:
        """Who runs when nothing else wants the CPU: the hog, else the idle task."""
        return self.hog if self.hog is not None else IDLE


class Simulator:
    """Runs one scenario; ``run_cpu`` hands chunks of results in time order to a sink."""

    def __init__(self, params: dict[str, Any], seed: int) -> None:
        self.p = params
        self.seed = seed
        st = params["stages"]
        self.pool = {k: Pool(stream(seed, f"stage:{k}"), v) for k, v in st.items()}
        self.post = Pool(stream(seed, "post"), params["cyclictest"]["post_us"])
        self.busy = Pool(stream(seed, "busy"), params["guest"]["busy"])
        self.busy_prob = float(params["guest"]["busy_prob"])
        self.coin = uniform(stream(seed, "busy_prob"))
        self.u = uniform(stream(seed, "faults"))
        self.tick_ns = int(1e9 // int(params["hz"]))
        self.cfs = {k: int(v) * NS for k, v in params["cfs"].items()}
        self.counter_hz = int(params["counter_hz"])
        self.counter_off = int(float(params["counter_offset_s"]) * 1e9)
        self.tasks: list[Task] = [IDLE]
        self.fault_rows: list[tuple[int, ...]] = []  # ts, tid, ipa, hsr, class, write, level, kind
        self.ram_cursor = int(params["guest_ram"]["start"])
        self.ram_end = self.ram_cursor + (int(params["guest_ram"]["size_mb"]) << 20)
        self.tick_phases: dict[int, int] = {}
        self.tick_phase = 0
        self.bg_end = -1
        self.min_vr = 0.0
        self.lm_fresh = False
        # events the measured CPUs cause on CPUs without a measured thread (Chunk "ev" rows), and the
        # VMM thread's runs there (cpu, waker irq, irq entry, wakeup, irq exit, switch in, switch out):
        # they are written with that CPU's own events, at the end
        self.foreign: list[int] = []
        self.vmm_runs: list[tuple[int, ...]] = []
        self.vmm: Task | None = None
        self.free_cpu = -1  # a CPU without a measured thread (the VMM's main thread runs there)
        self.vmm_lead = Pool(stream(seed, "vmm:lead"), params["vmm"]["lead"]).next
        self.vmm_run = Pool(stream(seed, "vmm:run"), params["vmm"]["run"]).next
        self.cut: tuple[int, int, int] = (0, 0, 0)  # the exit guest_run stopped at: ts, class, handling
        self.stalls = StallMap.draw(params, seed)
        self.tmap = self.stalls.trace if self.stalls is not None else None
        self.chunk = self.new_chunk()

    def new_chunk(self, cpu: int = 0, tid: int = 0, me: int = 0, back: int = 0) -> Chunk:
        return Chunk(cpu, tid, me, back, self.tmap)

    def vmm_task(self) -> Task:
        """The VMM's main thread (QEMU's I/O loop): it injects device interrupts and kicks vCPUs."""
        if self.vmm is None:
            self.vmm = self.task(self.p["vcpu_comm"], int(self.p["vmm_pid"]))
        return self.vmm

    def task(self, comm: str, pid: int, policy: str = "other", prio: int = 0, nice: int = 0) -> Task:
        t = Task(comm, pid, policy, prio, nice)
        t.idx = len(self.tasks)
        self.tasks.append(t)
        return t

    # ------------------------------------------------------------------ one CPU
    def run_cpu(self, vcpu: dict[str, Any], loops: int, start: int, marks_cpu: int,
                flush_every: int, sink: Callable[[Chunk], None]) -> int:
        """Simulate one measured CPU from ``start``: the guest's boot and benchmark phases, then
        ``loops`` cyclictest loops. Full chunks go to ``sink``, the last stays in ``self.chunk``.
        Returns when the CPU's run ends."""
        cpu = int(vcpu["cpu"])
        tasks = self.cpu_tasks(vcpu, cpu, start)
        self.tick_phase = int(stream(self.seed, f"tick_phase:{cpu}").integers(0, self.tick_ns))
        self.tick_phases[cpu] = self.tick_phase  # the host tick grid of this CPU, for every chunk
        self.min_vr = 0.0
        self.chunk = self.new_chunk(cpu, tasks.me.pid, tasks.me.idx, tasks.back.idx)
        now = start
        if self.p["side"] == "guest":
            now = self.guest_phases(tasks, cpu, start, marks_cpu)
        interval = int(self.p["cyclictest"]["interval_us"]) * NS
        self.chunk.marks.append((now, marks_cpu, f"L2_CYCLICTEST_START dur={loops * interval // 10**9}"))
        loop = CyclictestLoop(self, tasks, cpu, start, now, flush_every, sink)
        loop.run(loops)
        return self.finish_cpu(loop, loops, marks_cpu)

    def cpu_tasks(self, vcpu: dict[str, Any], cpu: int, start: int) -> CpuTasks:
        """Create the tasks of CPU ``cpu``: the measured thread, the hog if it is pinned here, and the
        background tasks with their arrival and burst streams."""
        p = self.p
        if p["side"] == "guest":
            me = self.task(p["vcpu_comm"], int(vcpu["tid"]), vcpu.get("policy", "other"), int(vcpu.get("prio", 0)),
                           int(vcpu.get("nice", 0)))
        else:
            me = self.task("cyclictest", int(p["cyclictest"]["tid"]), "fifo", int(p["cyclictest"]["prio"]))
        hog_p = p.get("hog")
        hog = None
        if hog_p and int(hog_p["cpu"]) == cpu:
            hog = self.task(hog_p["comm"], int(hog_p["pid"]), hog_p.get("policy", "other"),
                            int(hog_p.get("prio", 0)), int(hog_p.get("nice", 0)))
        tasks = CpuTasks(me, hog)
        for b in p["background"]:
            if int(b["cpu"]) != cpu:
                continue
            t = self.task(b["comm"], int(b["pid"]), b.get("policy", "other"), int(b.get("prio", 0)))
            i = len(tasks.bgs)
            rate = float(b["rate_hz"])
            gaps = exp_gaps(stream(self.seed, f"bg:{cpu}:{i}:gap"), 1e9 / rate if rate > 0 else 1.0)
            tasks.bgs.append((t, gaps, Pool(stream(self.seed, f"bg:{cpu}:{i}:burst"), b["burst"])))
            tasks.nxt.append(start + gaps() if rate > 0 else NEVER)
        return tasks

    def guest_phases(self, tasks: CpuTasks, cpu: int, start: int, marks_cpu: int) -> int:
        """The vCPU thread gets the CPU at ``start`` and the guest runs continuously through its boot
        and benchmark phases (those the scenario has). Returns when they end."""
        p, me, hog, ch = self.p, tasks.me, tasks.hog, self.chunk
        now = start
        ch.sw += (now, tasks.back.idx, 0, me.idx)
        if hog is not None:
            ch.run += (start - 50 * NS, now, hog.pid)
        now += 10 * NS
        if p.get("boot"):
            ch.marks.append((now, marks_cpu, "L2_BOOT_START"))
            ex = ExitStream(self.seed, f"exits:boot:{cpu}", p["boot"]["exits"])
            now = self.guest_run(now, int(float(p["boot"]["guest_ms"]) * 1e6), ex, me, None)[0]
            self.chunk.marks.append((now + 2 * NS, marks_cpu, f"L2_SHELL uptime={(now - start) / 1e9:.2f}"))
            now += 5 * NS
        if p.get("lmbench"):
            now = self.lmbench_phase(me, cpu, now, marks_cpu)
        return now

    def lmbench_phase(self, me: Task, cpu: int, now: int, marks_cpu: int) -> int:
        """lat_mem_rd in the guest from ``now``: a stage-2 fault per fresh page. Returns when it ends."""
        p = self.p
        lm = p["lmbench"]
        self.chunk.marks.append((now, marks_cpu, "L2_LMBENCH_START lat_mem_rd"))
        spec = {"RAM": {"rate_hz": int(lm["mb"]) * 256 / (float(lm["guest_ms"]) / 1000),
                        "handling": p["exits"]["RAM"]["handling"]}, "IRQ": p["exits"]["IRQ"]}
        self.lm_fresh = True
        ex = ExitStream(self.seed, f"exits:lmbench:{cpu}", spec)
        now = self.guest_run(now, int(float(lm["guest_ms"]) * 1e6), ex, me, None)[0]
        self.lm_fresh = False
        self.chunk.marks.append((now + 2 * NS, marks_cpu, "L2_LMBENCH_END"))
        return now + 5 * NS

    def finish_cpu(self, loop: CyclictestLoop, loops: int, marks_cpu: int) -> int:
        """After the last loop: the guest runs to its last WFI, cyclictest prints its summary and the
        end marker. Returns when the CPU's run ends."""
        me, back, now = loop.me, loop.back, loop.now
        cur = loop.cur
        loop.stats.add(self.chunk)  # run() flushes the last chunk
        if loop.in_guest:
            end, _ = self.guest_run(now, loop.need, loop.ex, me, None)
            ch = self.chunk
            ch.exits += (end, -1, WFX, -1)
            ch.wfi += (end, end + 8 * NS, end + loop.interval)
            cur = back
            ch.sw += (end + 8 * NS, me.idx, 1, back.idx)
            now = end + 20 * NS
        if loops:
            self.chunk.marks.append((now + 100 * NS, marks_cpu, self.cyclictest_summary(me, loops, loop.stats)))
        self.chunk.marks.append((now + 200 * NS, marks_cpu, "L2_CYCLICTEST_END"))
        for k, line in enumerate(self.p.get("results") or []):  # the run's benchmark figures, as markers
            self.chunk.marks.append((now + (300 + 10 * k) * NS, marks_cpu, f"kvmtrace result {line}"))
        hog = loop.hog
        if hog is not None and cur is hog:
            self.chunk.run += (now, now + 50 * NS, hog.pid)
        return now + 300 * NS

    def cyclictest_summary(self, me: Task, loops: int, stats: LatencyStats) -> str:
        """The line cyclictest prints at its end (``T: 0 (tid) P:.. I:.. C:.. Min:.. ...``)."""
        ct = self.p["cyclictest"]
        return (f"T: 0 ({me.pid if self.p['side'] == 'host' else ct['tid']:5d}) P:{ct['prio']} "
                f"I:{ct['interval_us']} C:{loops:9d} Min:{stats.min // NS:7d} Act:{stats.last // NS:5d} "
                f"Avg:{stats.sum // loops // NS:5d} Max:{stats.max // NS:9d}")

    # ------------------------------------------------------------------ pieces
    def guest_run(self, now: int, need: int, ex: ExitStream, me: Task, irq_at: int | None,
                  cut_at: int = NEVER, nest: int = -1) -> tuple[int, int | None]:
        """Run the guest from ``now`` for ``need`` ns of guest time, taking exits.

        Returns (wall time when the guest executes WFI, None) or, when ``irq_at`` falls while the
        guest runs, (guest time still needed, wall time of the interrupt). Stops with (guest time
        still needed, CUT) at the host tick ``cut_at`` (an exit in the host delays it to the exit's end),
        and with (..., NESTED) at an exit of class ``nest`` whose handling ``irq_at`` falls into;
        ``self.cut`` is (that time, the exit's class, its handling)."""
        if ex.pending is None:
            ex.pending = ex.next()
        gap, cls, handling = ex.pending
        while True:
            if cut_at <= now + (gap if gap < need else need) and (irq_at is None or cut_at < irq_at):
                used = cut_at - now if cut_at > now else 0
                ex.pending = (gap - used, cls, handling)
                self.cut = (now + used, 0, 0)
                return need - used, CUT
            if irq_at is not None and irq_at <= now + (gap if gap < need else need):
                used = irq_at - now if irq_at > now else 0
                if used < gap:
                    ex.pending = (gap - used, cls, handling)
                return need - used, (irq_at if irq_at > now + 100 else now + 100)
            if need <= gap:
                ex.pending = (gap - need, cls, handling)
                return now + need, None
            now += gap
            need -= gap
            if cls == nest and irq_at is not None and irq_at < now + handling:
                self.cut = (now, cls, handling)
                ex.pending = ex.next()
                return need, NESTED
            self.emit_exit(now, cls, handling, me, now - gap)
            now += handling
            ex.pending = gap, cls, handling = ex.next()

    def emit_exit(self, ts: int, cls: int, handling: int, me: Task, since: int = 0) -> None:
        """An exit at ``ts`` of a guest that runs since ``since``."""
        fault = -1
        if cls in FAULTING:
            fault = len(self.fault_rows)
            self.fault_rows.append(self.make_fault(ts, EXIT_CLASSES[cls], me.pid))
        elif cls == DEVICE:  # the VMM injected a device interrupt while the guest ran; its kick (an IPI) exits it
            fault = self.vmm_episode(max(ts - self.vmm_lead(), since + NS // 2), False)
        self.chunk.exits += (ts, handling, cls, fault)

    def vmm_episode(self, t_line: int, kick: bool) -> int:
        """The VMM's main thread on the free CPU, woken by a host NIC interrupt (device) or its own timer
        (kick), injects the device SPI with kvm_irq_line (device) or signals the vCPU thread (kick) at
        ``t_line``. Returns ``t_line``."""
        c, vmm, spi = self.free_cpu, self.vmm_task(), int(self.p["vmm"]["spi"])
        if c < 0:
            raise ValueError("the VMM's device interrupts and kicks need a CPU without a vCPU (ncpus)")
        irq_in = t_line - 14 * NS
        wake = irq_in + 3 * NS
        irq_out = wake + 1500
        until = t_line + self.vmm_run()
        last = self.vmm_runs[-1] if self.vmm_runs else None
        if last is not None and last[0] == c and irq_in <= last[6] + 4 * NS:  # still running: no wakeup
            self.vmm_runs[-1] = (*last[:6], max(last[6], until))
        else:
            self.vmm_runs.append((c, episodes.TIMER_IRQ if kick else episodes.NIC_IRQ, irq_in, wake, irq_out,
                                  irq_out + 4 * NS, until))
        if not kick:
            self.foreign += (episodes.Ev.IRQLINE, t_line, c, vmm.pid, spi, 1, 0,
                             episodes.Ev.VGIC, t_line + 1500, c, vmm.pid, spi, 1, 0)
        return t_line

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

    def host_until(self, cur: Task, cur_since: int, now: int, until: int, hog: Task | None,
                   bgs: list[tuple[Task, Callable[[], int], Pool]], nxt: list[int]) -> tuple[Task, int, int]:
        """Host tasks run on the CPU from ``now`` to ``until``: background bursts preempt the hog."""
        ch = self.chunk
        t = now
        while True:
            i = min(range(len(nxt)), key=nxt.__getitem__) if nxt else -1
            if i < 0 or nxt[i] >= until:
                break
            task, gaps, pool = bgs[i]
            arrive = max(nxt[i], t)
            # wakeups while the task could not run coalesce into one burst
            nxt[i] = arrive + max(gaps(), 1000)
            if arrive >= until - 2 * NS:
                continue
            dur = pool.next()
            prev = cur
            if prev is hog and hog is not None:
                ch.run += (cur_since, arrive, hog.pid)
                hog.vr += (arrive - cur_since) * 1024 / hog.weight
            ch.wk += (arrive - 2 * NS, prev.pid, task.idx)
            ch.sw += (arrive, prev.idx, 0, task.idx)
            end = arrive + dur
            task.vr = max(task.vr, self.min_vr - self.cfs["latency_us"] / 2)
            if end < until:
                back = hog if hog is not None else IDLE
                ch.sw += (end, task.idx, 1, back.idx)
                ch.run += (arrive, end, task.pid)
                task.vr += dur
                cur, cur_since, t = back, end + NS, end + NS
            else:
                task.vr += until - arrive
                self.bg_end = end
                return task, arrive, until
        self.bg_end = -1
        return cur, cur_since, max(t, now)

    def wait(self, me: Task, cur: Task, cur_since: int, wake: int, irq_exit: int,
             hog: Task | None, sched: int) -> tuple[int, int, int, int]:
        """When the woken thread gets the CPU (``sched`` after it may): (switch, the holder's prev_state,
        the holder's share of the wait, the host ticks' share). The rest of the waking interrupt's handler
        (``irq_exit - wake``) is the waking handler's (docs/stages.md)."""
        if cur is IDLE:
            return irq_exit + sched, 0, 0, 0
        cfs = self.cfs
        me.vr = max(me.vr, self.min_vr - cfs["latency_us"] / 2)
        finite = cur is not hog
        end = self.bg_end if finite else NEVER
        cfs_pair = False
        if me.policy == "fifo" and (cur.policy != "fifo" or cur.prio < me.prio):
            switch = irq_exit + sched
        elif cur.policy == "fifo" and (me.policy != "fifo" or cur.prio >= me.prio):
            switch = end
        else:
            # both CFS: wakeup preemption, else the tick decides (or the holder sleeps)
            cur_vr = cur.vr + (wake - cur_since) * 1024 / cur.weight
            if cur_vr - me.vr > cfs["wakeup_gran_us"]:
                switch = irq_exit + sched
            else:
                switch, cfs_pair = end, True
        tick_ns = 0
        if switch > irq_exit + sched:
            slice_ns = max(cfs["latency_us"] * cur.weight // (cur.weight + me.weight), cfs["min_gran_us"])
            period = self.tick_ns
            tick = ((irq_exit - self.tick_phase) // period + 1) * period + self.tick_phase
            tick_pool, ticks = self.pool["tick"].next, self.chunk.ticks
            while tick < end:
                tick_end = tick + tick_pool()
                if tick_end >= end - NS:
                    break
                ran = tick - cur_since
                vr_now = cur.vr + ran * 1024 / cur.weight
                ticks += (tick, tick_end, cur.pid)
                tick_ns += tick_end - tick
                if cfs_pair and ((ran >= slice_ns and me.vr < vr_now) or vr_now - me.vr > slice_ns):
                    switch = tick_end + self.pool["sched"].next()
                    break
                tick += period
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
        return switch, state, held, tick_ns

    def background_only(self, cpu: int, start: int, end: int, out: Chunk) -> None:
        """A CPU without a measured thread: its background bursts, the VMM thread's runs and the events the
        measured CPUs caused here (``foreign``), on an otherwise idle CPU or around its hog."""
        rng = stream(self.seed, f"background_only:{cpu}")
        self.tick_phases[cpu] = int(rng.integers(0, self.tick_ns))
        tasks = [(self.task(b["comm"], int(b["pid"]), b.get("policy", "other"), int(b.get("prio", 0))),
                  float(b["rate_hz"]), b["burst"]) for b in self.p["background"]
                 if int(b["cpu"]) == cpu and float(b["rate_hz"]) > 0]
        arrivals: list[tuple[int, int]] = []
        for i, (_t, rate, _d) in enumerate(tasks):
            n = int(rate * (end - start) / 1e9 * 1.2) + 10
            times = start + np.cumsum(rng.exponential(1e9 / rate, n)).astype(np.int64)
            arrivals += [(int(x), i) for x in times[times < end - 1_000_000]]
        arrivals.sort()
        durs = {i: sample(d, rng, len(arrivals) + 1).tolist() for i, (_t, _r, d) in enumerate(tasks)}
        hog_p = self.p.get("hog")
        hog = (self.task(hog_p["comm"], int(hog_p["pid"]), hog_p.get("policy", "other"), int(hog_p.get("prio", 0)),
                         int(hog_p.get("nice", 0))) if hog_p and int(hog_p["cpu"]) == cpu else None)
        back = hog if hog is not None else IDLE
        vmm = sorted(r for r in self.vmm_runs if r[0] == cpu)  # (cpu, irq, irq in, wakeup, irq out, in, out)
        busy = [(r[2] - 2 * NS, r[6] + 2 * NS) for r in vmm]  # a burst does not run into a VMM run
        runs: list[tuple[int, int, Task]] = [(r[5], r[6], self.vmm_task()) for r in vmm]
        t, k = start, 0
        for j, (arrive, i) in enumerate(arrivals):
            a = max(arrive, t + 2 * NS)
            e = a + durs[i][j]
            while k < len(busy) and busy[k][1] <= a - NS:
                k += 1
            while k < len(busy) and busy[k][0] < e:  # wait for the VMM's run to end
                a = busy[k][1] + 2 * NS
                e = a + durs[i][j]
                k += 1
            runs.append((a, e, tasks[i][0]))
            out.wk += (a - NS, back.pid, tasks[i][0].idx)
            t = e
        runs.sort(key=lambda r: r[0])
        for r in vmm:
            out.ev += (episodes.Ev.IRQ_IN, r[2], cpu, back.pid, r[1], 0, 0, episodes.Ev.IRQ_OUT, r[4], cpu, back.pid,
                       r[1], 0, 0)
            out.wk += (r[3], back.pid, self.vmm_task().idx)
        prev = start
        for a, e, task in runs:
            out.sw += (a, back.idx, 0, task.idx)
            out.sw += (e, task.idx, 1, back.idx)
            out.run += (a, e, task.pid)
            if hog is not None and a > prev:
                out.run += (prev, a, hog.pid)
            prev = e
        if hog is not None and end > prev:
            out.run += (prev, end, hog.pid)
        starts = np.array([r[0] for r in runs], np.int64)
        ends = np.array([r[1] for r in runs], np.int64)
        pids = np.array([r[2].pid for r in runs], np.int64)

        def pid_at(ts: np.ndarray) -> np.ndarray:
            i = np.searchsorted(starts, ts, side="right") - 1
            inside = (i >= 0) & (ts < ends[np.maximum(i, 0)])
            return np.where(inside, pids[np.maximum(i, 0)], back.pid)

        chunk_foreign(self, out, pid_at)


class CyclictestLoop(Episodes):
    """cyclictest's loops on one measured CPU. Each deadline's timer interrupt takes the running path
    (it fires while the guest runs) or the blocked path (the measured thread sleeps, host tasks run
    until the interrupt wakes it). Rows go to ``sim.chunk``; full chunks go to ``sink``.

    Hot loop: the common case is inline, slow paths (background bursts, a contended wakeup) call the
    Simulator and mark the chunk size ``dirty``; otherwise ``sz`` (``Chunk.size()``) is kept up to date
    without recounting."""

    def __init__(self, sim: Simulator, tasks: CpuTasks, cpu: int, start: int, now: int, flush_every: int,
                 sink: Callable[[Chunk], None]) -> None:
        p = sim.p
        self.sim, self.cpu, self.flush_every, self.sink = sim, cpu, flush_every, sink
        self.me, self.hog, self.back, self.bgs, self.nxt = tasks.me, tasks.hog, tasks.back, tasks.bgs, tasks.nxt
        self.in_guest = p["side"] == "guest"
        self.interval = int(p["cyclictest"]["interval_us"]) * NS
        self.ex = ExitStream(sim.seed, f"exits:cyclictest:{cpu}", p["exits"])
        self.ex.pending = self.ex.next()  # guest ns until the next exit, its class and handling
        self.stats = LatencyStats()
        self.now = now
        self.need = 20 * NS  # guest time left before the guest executes WFI
        self.cur: Task = self.back  # task on the CPU while the measured thread is not running
        self.cur_since = start
        # when the measured thread last got the CPU, for its vruntime: counted from the cyclictest
        # phase on, as the model runs the guest's boot alone, where CFS would have shared the CPU
        # with a hog (counting it gave the hog the whole boot as credit: a ~760 ms first wait)
        self.last_in = now
        self.blocked_at, self.sw_ts = now, 0  # the vCPU's last WFx exit and switch away
        self.nmin = min(self.nxt) if self.nxt else NEVER  # the next background arrival
        # whole-machine stalls: deadlines are trace times, the simulation runs on machine time
        self.tr = sim.stalls.trace1 if sim.stalls is not None else None
        self.m_of = sim.stalls.machine1 if sim.stalls is not None else None
        self.prev_dl = self.reprog_at = 0  # the guest timer's previous deadline, until it was reprogrammed
        self.early_done = False
        self._streams(sim)
        self._wakeup_rules(sim)
        self._episodes(sim)
        if not self.in_guest:
            sim.chunk.sw += (now, self.me.idx, 1, self.cur.idx)
        self.sz = sim.chunk.size()
        self.dirty = False  # a slow path appended rows: recount the chunk's size

    def _streams(self, sim: Simulator) -> None:
        """The random durations of the loop, one stream each."""
        pool = sim.pool
        self.timer, self.host_irq, self.irq_tail = pool["timer"].next, pool["host_irq"].next, pool["irq_tail"].next
        self.r_exit, self.r_entry, self.block = pool["r_exit"].next, pool["r_entry"].next, pool["block"].next
        self.inject, self.entry, self.guest_handling = pool["inject"].next, pool["entry"].next, \
            pool["guest_handling"].next
        self.host_user, self.sched, self.post = pool["host_user"].next, pool["sched"].next, sim.post.next
        self.busy, self.coin, self.busy_prob = sim.busy.next, sim.coin, sim.busy_prob

    def _wakeup_rules(self, sim: Simulator) -> None:
        """Who wins when the measured thread wakes while the hog runs (FIFO priority, else CFS)."""
        me, hog = self.me, self.hog
        self.hog_other = hog is not None and hog.policy == "other"
        self.me_first = hog is not None and me.policy == "fifo" and (hog.policy != "fifo" or hog.prio < me.prio)
        hog_first = hog is not None and hog.policy == "fifo" and (me.policy != "fifo" or hog.prio >= me.prio)
        self.cfs_both = hog is not None and not self.me_first and not hog_first
        self.half_latency = sim.cfs["latency_us"] / 2
        self.gran = sim.cfs["wakeup_gran_us"]

    def run(self, loops: int) -> None:
        """Run ``loops`` loops: a deadline each, its interrupt, the latency cyclictest measures."""
        interval, timer, flush_every, m_of = self.interval, self.timer, self.flush_every, self.m_of
        deadline_at = (self.now if self.tr is None else self.tr(self.now)) + interval
        for _ in range(loops):
            deadline = deadline_at
            t0 = (deadline if m_of is None else m_of(deadline)) + timer()
            lat = self.deliver(deadline, t0)
            if self.dirty:
                self.sz = self.sim.chunk.size()
                self.dirty = False
            # like cyclictest: the next deadline is one interval on, skipping periods already missed
            deadline_at = deadline + interval
            if deadline_at < deadline + lat:
                deadline_at += -(-(deadline + lat - deadline_at) // interval) * interval
            if self.sz >= flush_every:
                self.flush()

    def deliver(self, deadline: int, t0: int) -> int:
        """The interrupt of ``deadline`` (its host interrupt due at ``t0``) reaches cyclictest: by the
        running or the blocked path, or a slow path (episodes.py). Returns the latency."""
        if not self.in_guest:
            return self.blocked_path(deadline, t0)
        self.early_done = False
        while True:
            t_irq = self.guest_until(t0)
            if t_irq is None:
                if self.expired(self.now, deadline):  # WFI with the timer pending: KVM does not block
                    return self.running_path(deadline, self.wfx_no_block())
                lat = self.blocked_path(deadline, t0)
            elif t_irq >= 0:
                return self.running_path(deadline, t_irq)
            elif t_irq == NESTED:
                return self.nested_softirq(deadline, t0)
            else:
                lat = self.throttled(deadline)
            if lat >= 0:
                return lat

    def guest_until(self, t0: int) -> int | None:
        """The guest runs until the interrupt due at ``t0`` (returns when the host takes it) or until it
        executes WFI first (returns None; ``now`` is then); CUT or NESTED: see Simulator.guest_run."""
        ch = self.sim.chunk
        exits = len(ch.exits)
        cut_at = NEVER
        if self.rt is not None:  # the first host tick after the real-time budget is spent throttles the vCPU
            spent, tick, phase = self.rt.exhausted_at(self.last_in, self.now), self.sim.tick_ns, self.sim.tick_phase
            cut_at = ((spent - phase) // tick + 1) * tick + phase
        left, t_irq = self.sim.guest_run(self.now, self.need, self.ex, self.me, t0, cut_at, self.nest)
        self.sz += 3 * ((len(ch.exits) - exits) >> 2)
        if t_irq is None:
            self.now = left
        else:
            self.need = left
        return t_irq

    def running_path(self, deadline: int, t_irq: int) -> int:
        """The interrupt arrives while the guest runs: injection, exit, entry. Returns the latency."""
        upd = t_irq + self.host_irq()
        kexit = upd + self.r_exit()
        entry = kexit + self.r_entry()
        gh = self.guest_handling()
        self.sim.chunk.running += (deadline, t_irq, upd, kexit, entry, gh)
        self.now = entry
        self.prev_dl, self.reprog_at = deadline, entry + gh
        self.need += gh + self.post() + (self.busy() if self.coin() < self.busy_prob else 0)
        self.sz += 13
        return (entry if self.tr is None else self.tr(entry)) - deadline + gh

    def blocked_path(self, deadline: int, t0: int) -> int:
        """The measured thread sleeps; host tasks run until the interrupt at ``t0`` wakes it. Returns
        the latency (AGAIN: woken early, the guest runs again)."""
        if self.in_guest:
            t0 = self.vcpu_blocks(t0)
            if not self.early_done:
                self.early_done = True  # one of these per deadline
                lat = self.extra_timer(deadline, t0) if self.extra is not None else NO_EPISODE
                if lat == NO_EPISODE and self.early is not None:
                    lat = self.early_wakeup(deadline, t0)
                if lat != NO_EPISODE:
                    return lat
            if self.migrate and self.cur is IDLE:
                return self.migrated_wakeup(deadline, t0)
        if self.nmin < t0:
            self.host_runs_until(t0)
        wake = t0 + self.host_irq()
        irq_exit = wake + self.irq_tail()
        # (the holder's vruntime is charged for [cur_since, switch) once, by wakeup's paths)
        switch, prev_state, blocker, blocker_ns = self.wakeup(wake, irq_exit, self.sched())
        if self.in_guest:
            lat = self.vcpu_resumes(deadline, t0, wake, irq_exit, switch, prev_state, blocker, blocker_ns)
        else:
            lat = self.cyclictest_resumes(deadline, t0, wake, irq_exit, switch, prev_state)
        self.cur = self.back
        self.last_in = switch
        if self.dirty:
            self.sz = self.sim.chunk.size()
            self.dirty = False
        return lat

    def vcpu_blocks(self, t0: int) -> int:
        """The guest executed WFI: the vCPU thread blocks and leaves the CPU. Returns when the
        interrupt can come (not before the switch away)."""
        now = self.now
        sw_ts = self.sw_ts = now + self.block()
        self.cur = self.back
        self.blocked_at = now
        now = self.now = self.cur_since = sw_ts + 12 * NS  # save_state events follow the switch
        ran = sw_ts - self.last_in
        me = self.me
        me.vr += (ran if ran > 0 else 0) * 1024 / me.weight
        if self.rt is not None:
            self.rt.run(self.last_in, sw_ts)
        return t0 if t0 > now + 2 * NS else now + 2 * NS

    def host_runs_until(self, t0: int) -> None:
        """Slow path: background bursts arrive before ``t0`` (they preempt the hog)."""
        self.cur, self.cur_since, self.now = self.sim.host_until(self.cur, self.cur_since, self.now, t0, self.hog,
                                                                 self.bgs, self.nxt)
        self.nmin = min(self.nxt)
        self.dirty = True

    def wakeup(self, wake: int, irq_exit: int, sched: int) -> tuple[int, int, int, int]:
        """When the woken thread gets the CPU: (switch, the holder's prev_state, blocker code, ns): the
        waking handler (with the ticks) or the holder, whichever had more of the wait (ties: the handler)."""
        cur = self.cur
        if cur is IDLE:
            if irq_exit > wake:
                return irq_exit + sched, 0, IRQ_BLOCKER, irq_exit - wake
            return irq_exit + sched, 0, NO_BLOCKER, -1
        switch, prev_state, held, ticks = self.wait_parts(wake, irq_exit, sched)
        irq_ns = irq_exit - wake + ticks
        if irq_ns >= held:
            return switch, prev_state, IRQ_BLOCKER, irq_ns
        return switch, prev_state, cur.idx, held

    def wait_parts(self, wake: int, irq_exit: int, sched: int) -> tuple[int, int, int, int]:
        """When the woken thread gets the CPU: (switch, the holder's prev_state, the holder's share of the
        wait after the waking handler, the host ticks' share). Inline when the CPU is idle or the hog
        yields at once, else ``Simulator.wait``."""
        cur = self.cur
        if cur is IDLE:
            return irq_exit + sched, 0, 0, 0
        if cur is self.hog and self.hog_yields(wake):
            switch = self.hog_yields_at(wake, irq_exit, sched)
            return switch, 0, switch - irq_exit, 0
        self.dirty = True
        return self.sim.wait(self.me, cur, self.cur_since, wake, irq_exit, self.hog, sched)

    def hog_yields(self, wake: int) -> bool:
        """Whether the hog yields at once (FIFO priority, or CFS wakeup preemption)."""
        if not (self.me_first or self.cfs_both):
            return False
        me, hog = self.me, self.hog
        assert hog is not None
        floor = self.sim.min_vr - self.half_latency  # sleeper credit, as wait() applies it
        if me.vr < floor:
            me.vr = floor
        return self.me_first or hog.vr + (wake - self.cur_since) * 1024 / hog.weight - me.vr > self.gran

    def hog_yields_at(self, wake: int, irq_exit: int, sched: int) -> int:
        """The hog yields to the woken thread: when it switches."""
        me, hog, sim = self.me, self.hog, self.sim
        assert hog is not None
        switch = irq_exit + sched
        if switch < irq_exit + NS:
            switch = irq_exit + NS
        if self.hog_other:
            hog.vr += (switch - self.cur_since) * 1024 / hog.weight
        lo = hog.vr if hog.vr <= me.vr else me.vr
        if lo > sim.min_vr:
            sim.min_vr = lo
        return switch

    def vcpu_resumes(self, deadline: int, t0: int, wake: int, irq_exit: int, switch: int, prev_state: int,
                     blocker: int, blocker_ns: int) -> int:
        """The woken vCPU thread runs: timer update, entry, the guest's handler. One row:
        ``Chunk.rows`` makes the WFx exit, wfi, switches, wakeup, tick, run rows of it. Returns the latency."""
        upd = switch + self.inject()
        entry = upd + self.entry()
        gh = self.guest_handling()
        self.sim.chunk.blocked += (deadline, t0, wake, irq_exit, switch, upd, entry, self.blocked_at, self.sw_ts,
                                   self.cur.idx, prev_state, blocker, blocker_ns, self.cur_since, gh)
        self.now = entry
        self.prev_dl, self.reprog_at = deadline, entry + gh
        self.need = gh + self.post() + (self.busy() if self.coin() < self.busy_prob else 0)
        self.sz += 17
        return (entry if self.tr is None else self.tr(entry)) - deadline + gh

    def cyclictest_resumes(self, deadline: int, t0: int, wake: int, irq_exit: int, switch: int,
                           prev_state: int) -> int:
        """The woken host cyclictest runs, measures, and sleeps again. Returns the latency."""
        ch, cur, me_idx = self.sim.chunk, self.cur, self.me.idx
        ch.wk += (wake, cur.pid, me_idx)
        ch.ticks += (t0, irq_exit, cur.pid)
        ch.sw += (switch, cur.idx, prev_state, me_idx)
        if cur is not IDLE:
            ch.run += (self.cur_since, t0, cur.pid)
        user = self.host_user()
        lat = switch - deadline + user
        sleep_at = switch + user + self.post()
        ch.cyclictest += (deadline, lat, 2)
        ch.sw += (sleep_at, me_idx, 1, self.back.idx)
        self.now = self.cur_since = sleep_at + NS
        self.sz += 4
        return lat

    def flush(self) -> None:
        """Hand the full chunk to the sink and start the next."""
        ch = self.sim.chunk
        self.stats.add(ch)
        self.sink(ch)
        me = self.me
        self.sim.chunk = self.sim.new_chunk(self.cpu, me.pid, me.idx, self.back.idx)
        self.sz = 0
