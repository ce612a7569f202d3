"""``kvmtrace synth``: run a scenario, write trace.dat (+ trace.txt), capture.json and truth/."""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from kvmtrace.capture import Manifest
from kvmtrace.fileformats.writer import CallableCompressor, TraceDatWriter
from kvmtrace.model.phases import phases_from_markers
from kvmtrace.synth.emit import EventSink, comm_bytes, load_formats
from kvmtrace.synth.episodes import CAUSE_SHARE, HOST_IRQS, IPI_IRQ, NET_RX, NIC_IRQ, Ev, counter, net_split
from kvmtrace.synth.scenario import sample
from kvmtrace.synth.sim import (
    CLS,
    EC,
    EXIT_CLASSES,
    IRQ_BLOCKER,
    NO_BLOCKER,
    REGIONS,
    WFX,
    Chunk,
    Draws,
    Simulator,
    stream,
)
from kvmtrace.synth.truth import TruthBuilder

WFI_PC = 0xFFFFC2A278ADA268
HRTIMER_BASE = np.uint64(0xFFFF000012340000)  # the vCPUs' background hrtimers (address + tid)
BG_TIMER_FN = np.uint64(0xFFFF8000080B2F40)  # kvm_bg_timer_expire
HRTIMER_MODE_ABS_HARD = 8
PCS = np.array([0xFFFFC2A27855A034, 0xFFFFC2A279494038, 0xFFFFC2A278401784, 0xFFFFC2A277F77DF0,
                0xFFFFC2A2786677A8, 0xFFFFC2A278C01A20], np.uint64)
MARK_IP = 0xFFFF8000081C2F40
MARKER_TASK = ("init", 463)
FLUSH_ITEMS = 400_000


@dataclass
class Result:
    """What a synth run wrote and emitted."""

    out: Path
    events: int
    counts: dict[str, int]
    seconds: float
    loops: int
    kept: list[dict[str, Any]] = field(default_factory=list)


class Expander:
    """Turns simulator chunks into event batches for one architecture."""

    def __init__(self, sim: Simulator, sink: EventSink, truth: TruthBuilder, arch: str, vcpu_comm: str) -> None:
        self.sim, self.sink, self.truth, self.arch = sim, sink, truth, arch
        self.a32 = arch == "arm32"
        self.host_timer_irq = 30 if self.a32 else 13
        # the random fields of the events (one stream each, independent of the chunking)
        self.draws: dict[str, Draws] = {}
        tick = sim.p["stages"]["tick"]
        self._draw_spec: dict[str, tuple[str, Any]] = {"tick": ("dist", tick), "pc": ("int", len(PCS)),
                                                       "pc_running": ("int", len(PCS)), "iss": ("int", 1 << 22)}
        self.vcpu_comm = vcpu_comm
        self.hrtimer = bool(sim.p["record"]["hrtimer"])  # False: recorded without the timer events
        self._tables: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None

    def __call__(self, ch: Chunk) -> None:
        self.sched(ch)
        self.ticks(ch)
        self.run_ticks(ch)
        self.wfi(ch)
        self.exits(ch)
        self.interrupts(ch)
        self.generic(ch)
        cyc = ch.rows("cyclictest", self._task_tables()[1])
        self.truth.add_cyclictest(cyc[:, 0], cyc[:, 1], ch.tid, ch.cpu, cyc[:, 2])
        self.sim.fault_rows.clear()
        stalls = self.sim.stalls
        self.truth.marks.extend(ch.marks if stalls is None else [(stalls.trace1(t), c, x) for t, c, x in ch.marks])
        if ch.marks:
            self.markers(ch.marks)
        self.sink.flush()

    def take(self, name: str, n: int, spec: tuple[str, Any] | None = None) -> np.ndarray:
        """``n`` values of the named stream: durations of a distribution, or integers below a bound."""
        d = self.draws.get(name)
        if d is None:
            kind, arg = spec or self._draw_spec[name]
            rng = stream(self.sim.seed, f"expand:{name}")
            make = ((lambda: sample(arg, rng, 65536)) if kind == "dist"
                    else (lambda: rng.integers(0, arg, 65536)))
            d = self.draws[name] = Draws(make)
        return d.take(n)

    # -- tasks by index (Simulator.tasks; 0 is the idle task)
    def _task_tables(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        tasks = self.sim.tasks
        if self._tables is None or self._tables[0].shape[0] != len(tasks):
            self._tables = (np.array([comm_bytes(t.comm) for t in tasks], dtype="S16"),
                            np.array([t.pid for t in tasks], np.int64),
                            np.array([t.kprio for t in tasks], np.int64))
        return self._tables

    def _comms(self, idx: np.ndarray, cpu: int) -> np.ndarray:
        comm = self._task_tables()[0][idx]
        comm[idx == 0] = f"swapper/{cpu}".encode()
        return comm

    # -- scheduling
    def sched(self, ch: Chunk) -> None:
        _comm, pid, prio = self._task_tables()
        sw = ch.rows("sw", pid)
        if sw.shape[0]:
            prev, nxt = sw[:, 1], sw[:, 3]
            self.sink.add("sched_switch", sw[:, 0], ch.cpu, pid[prev].astype(np.int32), order=5,
                          prev_comm=self._comms(prev, ch.cpu), prev_pid=pid[prev], prev_prio=prio[prev],
                          prev_state=sw[:, 2], next_comm=self._comms(nxt, ch.cpu), next_pid=pid[nxt],
                          next_prio=prio[nxt])
        wk = ch.rows("wk", pid)
        if wk.shape[0]:
            woken = wk[:, 2]
            extra: dict[str, Any] = {"success": 1} if self.a32 else {}
            self.sink.add("sched_wakeup", wk[:, 0], ch.cpu, wk[:, 1], order=3,
                          comm=self._comms(woken, ch.cpu), pid=pid[woken],
                          prio=prio[woken], target_cpu=ch.cpu, **extra)

    def ticks(self, ch: Chunk) -> None:
        arr = ch.rows("ticks", self._task_tables()[1])
        if arr.shape[0]:
            self._irq_pair(arr[:, 0], arr[:, 1], ch.cpu, arr[:, 2])

    def _irq_pair(self, t_in: np.ndarray, t_out: np.ndarray, cpu: int | np.ndarray, pid: np.ndarray) -> None:
        self.sink.add("irq_handler_entry", t_in, cpu, pid.astype(np.int32), order=2, text="arch_timer",
                      irq=self.host_timer_irq)
        self.sink.add("irq_handler_exit", t_out, cpu, pid.astype(np.int32), order=4, irq=self.host_timer_irq,
                      ret=1)

    def run_ticks(self, ch: Chunk) -> None:
        """Host ticks while a host task runs (outside the waits, which place their own)."""
        arr = ch.rows("run", self._task_tables()[1])
        if not arr.shape[0]:
            return
        a, b, pid = arr[:, 0], arr[:, 1], arr[:, 2]
        tick = self.sim.tick_ns
        phase = self.sim.tick_phases.get(ch.cpu, 0)
        first = ((a + 2000 - phase) // tick + 1) * tick + phase
        count = np.maximum((b - 60_000 - first) // tick + 1, 0)
        if count.sum() == 0:
            return
        rep = np.repeat(np.arange(len(a)), count)
        k = np.arange(rep.size) - np.repeat(np.cumsum(count) - count, count)
        t_in = first[rep] + k * tick
        dur = self.take("tick", rep.size)
        free = self._clear_of_handlers(ch, t_in, t_in + dur)  # one handler at a time (the slow paths' irqs)
        self._irq_pair(t_in[free], (t_in + dur)[free], ch.cpu, pid[rep][free])

    @staticmethod
    def _clear_of_handlers(ch: Chunk, t_in: np.ndarray, t_out: np.ndarray) -> np.ndarray:
        """Which of these intervals keep 2 us clear of the interrupt handlers of ``ch.ev``."""
        ev = ch.table("ev")
        if not ev.shape[0]:
            return np.ones(t_in.shape[0], bool)
        ev = ev[ev[:, 2] == ch.cpu]
        starts = np.sort(ev[ev[:, 0] == Ev.IRQ_IN, 1])
        ends = np.sort(ev[ev[:, 0] == Ev.IRQ_OUT, 1])
        if not starts.shape[0]:
            return np.ones(t_in.shape[0], bool)
        j = np.searchsorted(starts, t_out + 2000) - 1
        return ~((j >= 0) & (ends[np.maximum(j, 0)] > t_in - 2000))

    # -- the vCPU
    def wfi(self, ch: Chunk) -> None:
        arr = ch.rows("wfi", self._task_tables()[1])
        if not arr.shape[0]:
            return
        w, sw, deadline = arr[:, 0], arr[:, 1], arr[:, 2]
        cpu, tid, cval = ch.cpu, np.full(arr.shape[0], ch.tid, np.int64), self.cval(deadline)
        wfx_ts = w + (sw - w) // 3
        if self.a32:
            self.sink.add("kvm_wfi", wfx_ts, cpu, tid, order=1, vcpu_pc=WFI_PC & 0xFFFFFFFF)
            return
        self.sink.add("kvm_wfx_arm64", wfx_ts, cpu, tid, order=1, vcpu_pc=WFI_PC, is_wfe=0)
        # CTL as read from the hardware: ENABLE, and ISTATUS once the counter has reached CVAL
        ctl = 1 | np.where(self.cval(self.trace(sw + 3000)) >= cval, 4, 0)
        self.sink.add("kvm_timer_save_state", sw + 3000, cpu, tid, order=6, ctl=ctl, cval=cval.astype(np.uint64),
                      timer_idx=1)
        self.sink.add("kvm_timer_save_state", sw + 6000, cpu, tid, order=7, ctl=0, cval=0, timer_idx=0)
        # KVM arms a host hrtimer (its background timer) for the blocked vCPU's deadline
        if self.hrtimer:
            self.sink.add("hrtimer_start", sw + 7000, cpu, tid, order=8,
                          hrtimer=HRTIMER_BASE + tid.astype(np.uint64), function=BG_TIMER_FN, expires=deadline,
                          softexpires=deadline, mode=HRTIMER_MODE_ABS_HARD)

    def trace(self, t: np.ndarray) -> np.ndarray:
        """Simulated (machine) times on the trace clock, for the fields that hold a time."""
        return t if self.sim.tmap is None else self.sim.tmap(t)

    def cval(self, deadline: np.ndarray) -> np.ndarray:
        """The guest counter's CVAL for a deadline (no int64 overflow for long traces)."""
        return np.asarray(counter(deadline, self.sim.counter_hz, self.sim.counter_off))

    def _kvm_exit(self, ts: np.ndarray, cpu: int | np.ndarray, tid: np.ndarray, ret: int, ec: int | np.ndarray,
                  pc: Any) -> None:
        if self.a32:
            self.sink.add("kvm_exit", ts, cpu, tid, order=1, vcpu_pc=np.asarray(pc, np.uint64) & 0xFFFFFFFF)
        else:
            self.sink.add("kvm_exit", ts, cpu, tid, order=1, ret=ret, esr_ec=ec, vcpu_pc=pc)

    def _kvm_entry(self, ts: np.ndarray, cpu: int | np.ndarray, tid: np.ndarray, pc: Any) -> None:
        mask = 0xFFFFFFFF if self.a32 else 0xFFFFFFFFFFFFFFFF
        self.sink.add("kvm_entry", ts, cpu, tid, order=9, vcpu_pc=np.asarray(pc, np.uint64) & np.uint64(mask))

    def exits(self, ch: Chunk) -> None:
        """kvm_exit / kvm_entry and the events between them for each guest exit of the chunk, with truth."""
        arr = ch.rows("exits", self._task_tables()[1])
        if not arr.shape[0]:
            return
        ts, h, cls, fault = arr[:, 0], arr[:, 1], arr[:, 2], arr[:, 3]
        cpu, tid = np.full(ts.shape[0], ch.cpu, np.int64), np.full(ts.shape[0], ch.tid, np.int64)
        # WFx: kvm_exit only here (the entry belongs to the interrupt that wakes the vCPU)
        sel = cls == WFX
        self._kvm_exit(ts[sel], cpu[sel], tid[sel], 2, EC["WFx"], np.uint64(WFI_PC))
        self.truth.add_exits(ts[sel], ts[sel] + h[sel], cpu[sel], tid[sel], 2, EC["WFx"], "WFx")
        sel = cls == WFX + 1  # running-path timer interrupt: events come with the interrupt
        if sel.any():
            self.truth.add_exits(ts[sel], ts[sel] + h[sel], cpu[sel], tid[sel], 0, 0, "IRQ")
        pcs = PCS[self.take("pc", len(ts))]
        for name in EXIT_CLASSES:
            sel = np.flatnonzero(cls == CLS[name])
            if sel.size == 0:
                continue
            t, hh, c, p, pc, f = ts[sel], h[sel], cpu[sel], tid[sel], pcs[sel], fault[sel]
            if name == "IRQ":
                self._irq_exits(t, hh, c, p, pc)
            elif name == "NET":
                self._net_exits(t, hh, c, p, pc)
            elif name == "DEVICE":
                self._device_exits(t, hh, c, p, pc, f)
            elif name == "SYS64":
                self._sys64_exits(t, hh, c, p, pc)
            elif name == "HVC64":
                self._hvc_exits(t, hh, c, p, pc)
            else:
                self._fault_exits(name, t, hh, c, p, pc, f)

    def _irq_exits(self, t: np.ndarray, hh: np.ndarray, c: np.ndarray, p: np.ndarray, pc: np.ndarray) -> None:
        """A host interrupt while the guest runs: the handler, then kvm_exit and kvm_entry."""
        self._irq_pair(t, t + hh * 6 // 10, c, p)
        kx = t + hh * 7 // 10
        self._kvm_exit(kx, c, p, 0, 0, pc)
        self._kvm_entry(t + hh, c, p, pc)
        self.truth.add_exits(kx, t + hh, c, p, 0, 0, "IRQ")

    def _net_exits(self, t: np.ndarray, hh: np.ndarray, c: np.ndarray, p: np.ndarray, pc: np.ndarray) -> None:
        """A host NIC interrupt while the guest runs: its handler raises NET_RX, the softirq runs before
        kvm_exit is traced (interrupts are taken before it), then kvm_entry."""
        irq_out, soft_in, soft_out, kx = net_split(t, hh)
        self.sink.add("irq_handler_entry", t, c, p, order=2, text=HOST_IRQS[NIC_IRQ], irq=NIC_IRQ)
        self.sink.add("softirq_raise", t + (irq_out - t) // 2, c, p, order=3, vec=NET_RX)
        self.sink.add("irq_handler_exit", irq_out, c, p, order=4, irq=NIC_IRQ, ret=1)
        self.sink.add("softirq_entry", soft_in, c, p, order=5, vec=NET_RX)
        self.sink.add("softirq_exit", soft_out, c, p, order=5, vec=NET_RX)
        self._kvm_exit(kx, c, p, 0, 0, pc)
        self._kvm_entry(t + hh, c, p, pc)
        self.truth.add_exits(kx, t + hh, c, p, 0, 0, "IRQ")

    def _device_exits(self, t: np.ndarray, hh: np.ndarray, c: np.ndarray, p: np.ndarray, pc: np.ndarray,
                      line: np.ndarray) -> None:
        """The VMM's device interrupt (its kvm_irq_line at ``line``, on the free CPU) kicks the running guest
        out: the IPI's handler, kvm_exit, kvm_entry. A device interrupt on the running path."""
        ipi_out = t + np.maximum(hh * 4 // 10, 1500)
        kx = t + hh * 6 // 10
        self.sink.add("irq_handler_entry", t, c, p, order=2, text=HOST_IRQS[IPI_IRQ], irq=IPI_IRQ)
        self.sink.add("irq_handler_exit", ipi_out, c, p, order=4, irq=IPI_IRQ, ret=1)
        self._kvm_exit(kx, c, p, 0, 0, pc)
        self._kvm_entry(t + hh, c, p, pc)
        self.truth.add_exits(kx, t + hh, c, p, 0, 0, "IRQ")
        spi = int(self.sim.p["vmm"]["spi"])
        self.truth.add_rows([("device", spi, "running", int(cpu), int(tid), -1, int(ln), -1, -1, int(ln), int(x),
                              int(e), None, None, None, None, None, 0)
                             for cpu, tid, ln, x, e in zip(c, p, line, kx, t + hh, strict=True)])

    def _sys64_exits(self, t: np.ndarray, hh: np.ndarray, c: np.ndarray, p: np.ndarray, pc: np.ndarray) -> None:
        """A trapped system register access: kvm_handle_sys_reg; the entry skips the instruction."""
        self._kvm_exit(t, c, p, 2, EC["SYS64"], pc)
        iss = self.take("iss", t.shape[0]) << 1
        self.sink.add("kvm_handle_sys_reg", t + hh // 3, c, p, order=2,
                      hsr=((EC["SYS64"] << 26) | (1 << 25) | iss).astype(np.uint64))
        self._kvm_entry(t + hh, c, p, pc + np.uint64(4))
        self.truth.add_exits(t, t + hh, c, p, 2, EC["SYS64"], "SYS64")

    def _hvc_exits(self, t: np.ndarray, hh: np.ndarray, c: np.ndarray, p: np.ndarray, pc: np.ndarray) -> None:
        """A hypercall (PSCI version): kvm_hvc / kvm_hvc_arm64."""
        self._kvm_exit(t, c, p, 2, EC["HVC64"], pc)
        if self.a32:
            self.sink.add("kvm_hvc", t + hh // 3, c, p, order=2, vcpu_pc=pc & np.uint64(0xFFFFFFFF),
                          r0=0x84000001, imm=0)
        else:
            self.sink.add("kvm_hvc_arm64", t + hh // 3, c, p, order=2, vcpu_pc=pc, r0=0x84000001, imm=0)
        self._kvm_entry(t + hh, c, p, pc)
        self.truth.add_exits(t, t + hh, c, p, 2, EC["HVC64"], "HVC32" if self.a32 else "HVC64")

    def _fault_exits(self, name: str, t: np.ndarray, hh: np.ndarray, c: np.ndarray, p: np.ndarray,
                     pc: np.ndarray, f: np.ndarray) -> None:
        """Stage-2 aborts of class ``name`` (RAM, IABT, ACCESS, MMIO_*): kvm_guest_fault and what the
        class adds (access fault, MMIO), with exit and fault truth (``f``: rows of ``sim.fault_rows``)."""
        rows = np.array([self.sim.fault_rows[i] for i in f.tolist()], dtype=np.uint64)
        ipa, hsr, hxfar, write = rows[:, 2], rows[:, 3], rows[:, 4], rows[:, 5]
        ec = (hsr >> np.uint64(26)).astype(np.int64)
        self._kvm_exit(t, c, p, 2, ec, pc)
        page = ipa & ~np.uint64(0xFFF)
        fault_ts = t + np.maximum(hh // 8, 50)
        if self.a32:
            self.sink.add("kvm_guest_fault", fault_ts, c, p, order=2, vcpu_pc=pc & np.uint64(0xFFFFFFFF),
                          hsr=hsr, hxfar=hxfar & np.uint64(0xFFFFFFFF), ipa=page)
        else:
            self.sink.add("kvm_guest_fault", fault_ts, c, p, order=2, vcpu_pc=pc, hsr=hsr, hxfar=hxfar,
                          ipa=page)
        if name == "ACCESS":
            self.sink.add("kvm_access_fault", t + hh // 2, c, p, order=3, ipa=page)
        if name.startswith("MMIO_"):
            self._mmio(name, t, hh, c, p, ipa, write)
        self._kvm_entry(t + hh, c, p, pc)
        cname = "IABT_LOW" if name == "IABT" else "DABT_LOW"
        self.truth.add_exits(t, t + hh, c, p, 2, ec, cname)
        self.truth.add_faults(fault_ts, t, t + hh, rows, name)

    def _mmio(self, name: str, t: np.ndarray, hh: np.ndarray, c: np.ndarray, p: np.ndarray, ipa: np.ndarray,
              write: np.ndarray) -> None:
        """kvm_mmio for an MMIO abort; UART and virtio go to userspace (kvm_userspace_exit, and a read's
        value comes back in a second kvm_mmio), the GIC is emulated in the kernel."""
        val = self.take(f"mmio:{name}", t.shape[0], ("int", 256)).astype(np.uint64)
        wr = write.astype(bool)
        user = name != "MMIO_GIC"
        first_type = np.where(wr, 2, np.where(user, 0, 1))
        self.sink.add("kvm_mmio", t + hh // 4, c, p, order=3, type=first_type, len=4, gpa=ipa,
                      val=np.where(wr | ~user, val, 0))
        if user:
            self.sink.add("kvm_userspace_exit", t + hh // 3, c, p, order=4, reason=6, errno=0)
            rd = ~wr
            self.sink.add("kvm_mmio", (t + hh * 8 // 10)[rd], c[rd], p[rd], order=5, type=1, len=4,
                          gpa=ipa[rd], val=val[rd])

    def interrupts(self, ch: Chunk) -> None:
        bl, rn = ch.table("blocked"), ch.table("running")
        nb, nr = bl.shape[0], rn.shape[0]
        if not nb + nr:
            return
        # one row per interrupt, the blocked ones first: path, cpu, tid, deadline, t0, wake, irq_exit, switch,
        # update, kvm_exit, entry, blocked since, cval
        arr = np.full((nb + nr, 13), -1, np.int64)
        arr[:nb, 0], arr[nb:, 0] = 0, 1
        arr[:, 1], arr[:, 2] = ch.cpu, ch.tid
        arr[:nb, 3:9], arr[:nb, 10:12] = bl[:, 0:6], bl[:, 6:8]
        holder_pid = self._task_tables()[1][bl[:, 9]]
        arr[nb:, 3:5], arr[nb:, 8:11] = rn[:, 0:2], rn[:, 2:5]
        arr[:, 12] = self.cval(arr[:, 3])
        path, cpu, tid, _dl, t0, wake, _ix, _sw, upd, kexit, entry, since, cval = (arr[:, i] for i in range(13))
        b = path == 0
        r = ~b
        if self.a32:
            self._kvm_entry(entry[b], cpu[b], tid[b], np.uint64(WFI_PC))
            self.sink.add("irq_handler_entry", t0[r], cpu[r], tid[r], order=2, text="kvm guest timer", irq=27)
            self.sink.add("irq_handler_exit", upd[r], cpu[r], tid[r], order=4, irq=27, ret=1)
            self._kvm_exit(kexit[r], cpu[r], tid[r], 0, 0, np.uint64(WFI_PC))
            self._kvm_entry(entry[r], cpu[r], tid[r], np.uint64(WFI_PC))
        else:
            u, e, c, t = upd[b], entry[b], cpu[b], tid[b]
            span = e - u
            self.sink.add("kvm_timer_update_irq", u, c, t, order=2, vcpu_id=0, irq=27, level=1)
            self.sink.add("vgic_update_irq_pending", u + span // 10, c, t, order=3, vcpu_id=0, irq=27, level=1)
            self.sink.add("kvm_timer_restore_state", u + span * 5 // 10, c, t, order=4, ctl=1,
                          cval=cval[b].astype(np.uint64), timer_idx=1)
            self.sink.add("kvm_timer_restore_state", u + span * 6 // 10, c, t, order=5, ctl=0, cval=0, timer_idx=0)
            self.sink.add("kvm_vcpu_wakeup", u + span * 8 // 10, c, t, order=6,
                          ns=(self.trace(wake[b]) - self.trace(since[b])).astype(np.uint64), waited=1, valid=1)
            self._kvm_entry(e, c, t, np.uint64(WFI_PC))
            if self.hrtimer:
                self._bg_timer_expiry(t0[b], wake[b], arr[b, 6], c, t, holder_pid.astype(np.int32))
            u, x, e, c, t = upd[r], kexit[r], entry[r], cpu[r], tid[r]
            pcs = PCS[self.take("pc_running", int(r.sum()))]
            self.sink.add("irq_handler_entry", t0[r], c, t, order=1, text="kvm guest vtimer", irq=12)
            self.sink.add("kvm_timer_update_irq", u, c, t, order=2, vcpu_id=0, irq=27, level=1)
            self.sink.add("vgic_update_irq_pending", u + (x - u) * 3 // 10, c, t, order=3, vcpu_id=0, irq=27,
                          level=1)
            self.sink.add("irq_handler_exit", u + (x - u) * 6 // 10, c, t, order=4, irq=12, ret=1)
            self._kvm_exit(x, c, t, 0, 0, pcs)
            self._kvm_entry(e, c, t, pcs)
        _comm, pid, _prio = self._task_tables()
        code, held = bl[:, 11], bl[:, 12]
        names = np.array([t.comm for t in self.sim.tasks], object)[np.maximum(code, 0)]
        names[code == IRQ_BLOCKER] = "irq:arch_timer"
        names[code == NO_BLOCKER] = None
        pids = pid[np.maximum(code, 0)].astype(object)
        pids[code < 0] = None
        held_ns = held.astype(object)
        held_ns[code == NO_BLOCKER] = None
        none = [None] * nr
        kinds, causes, cause_ns = self._causes(bl, rn, names)
        self.truth.add_interrupts(arr, names.tolist() + none, pids.tolist() + none, held_ns.tolist() + none,
                                  self.a32, kinds, causes, cause_ns)

    def _causes(self, bl: np.ndarray, rn: np.ndarray, blocker_names: np.ndarray) -> tuple[list[Any], list[Any],
                                                                                           np.ndarray]:
        """Each interrupt's top cause (kind, name, a lower bound of its share) where it holds CAUSE_SHARE of
        the latency (docs/synth.md, "Truth"): the vCPU thread's own host work, the waking handler, the
        task that held the CPU, or the idle CPU."""
        dl, t0, wake, irq_exit, switch, entry, sw_out = (bl[:, i] for i in (0, 1, 2, 3, 4, 6, 8))
        holder, code, held = bl[:, 9], bl[:, 11], bl[:, 12]
        if self.sim.stalls is not None:  # machine times (stalls are their own cause: TruthBuilder)
            dl = np.array([self.sim.stalls.machine1(int(d)) for d in dl.tolist()], np.int64)

        def ran(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
            return np.maximum(hi - lo, 0)

        gone = np.maximum(dl, sw_out)  # the deadline may pass while the vCPU thread is still blocking
        share = np.column_stack((
            ran(switch, entry) + ran(dl, sw_out),  # vcpu: its own host work
            ran(t0, wake) + np.where(code == IRQ_BLOCKER, held, 0),  # irq:arch_timer (the rest of it, the ticks)
            np.where(code >= 0, held, 0),  # the task that held the CPU
            np.where(holder == 0, ran(irq_exit, switch) + ran(gone, t0), 0),  # idle
        ))
        best = share.argmax(axis=1)
        lat = (entry if self.sim.tmap is None else self.sim.tmap(entry)) - bl[:, 0]
        ok = share[np.arange(share.shape[0]), best] >= CAUSE_SHARE * lat
        kind_of = np.array(["vcpu", "irq", "task", "idle"], object)[best]
        name_of = np.array([self.vcpu_comm, "irq:arch_timer", None, "idle"], object)[best]
        name_of[best == 2] = blocker_names[best == 2]
        keep = ok.tolist()
        kinds = [k if o else None for k, o in zip(kind_of.tolist(), keep, strict=True)] + [None] * rn.shape[0]
        names = [k if o else None for k, o in zip(name_of.tolist(), keep, strict=True)] + [None] * rn.shape[0]
        ns = np.concatenate((np.where(ok, share.max(axis=1), 0), np.zeros(rn.shape[0], np.int64)))
        return kinds, names, ns

    def generic(self, ch: Chunk) -> None:
        """The slow paths' events (``Chunk.ev``, codes ``episodes.Ev``), their interrupts and exits."""
        ev = ch.table("ev")
        _comm, tpid, tprio = self._task_tables()
        comms = np.array([t.comm for t in self.sim.tasks], object)
        add = self.sink.add
        for c in np.unique(ev[:, 0]).tolist() if ev.shape[0] else []:
            r = ev[ev[:, 0] == c]
            ts, cpu, pid, a, b, cc = r[:, 1], r[:, 2], r[:, 3].astype(np.int32), r[:, 4], r[:, 5], r[:, 6]
            if c == Ev.IRQ_IN:
                for irq in np.unique(a).tolist():
                    sel = a == irq
                    add("irq_handler_entry", ts[sel], cpu[sel], pid[sel], order=2, text=HOST_IRQS[irq], irq=irq)
            elif c == Ev.IRQ_OUT:
                add("irq_handler_exit", ts, cpu, pid, order=4, irq=a, ret=1)
            elif c in (Ev.SOFT_RAISE, Ev.SOFT_IN, Ev.SOFT_OUT):
                name = {Ev.SOFT_RAISE: "softirq_raise", Ev.SOFT_IN: "softirq_entry", Ev.SOFT_OUT: "softirq_exit"}[c]
                add(name, ts, cpu, pid, order=3 if c == Ev.SOFT_RAISE else 5, vec=a)
            elif c == Ev.UPD:
                add("kvm_timer_update_irq", ts, cpu, pid, order=2, vcpu_id=0, irq=a, level=b)
            elif c == Ev.VGIC:
                add("vgic_update_irq_pending", ts, cpu, pid, order=3, vcpu_id=0, irq=a, level=b)
            elif c in (Ev.SAVE, Ev.RESTORE):
                add("kvm_timer_save_state" if c == Ev.SAVE else "kvm_timer_restore_state", ts, cpu, pid,
                    order=6 if c == Ev.SAVE else 4, ctl=a, cval=b.astype(np.uint64), timer_idx=cc)
            elif c == Ev.VWAKE:
                add("kvm_vcpu_wakeup", ts, cpu, pid, order=6, ns=a.astype(np.uint64), waited=b, valid=1)
            elif c == Ev.WFX:
                add("kvm_wfx_arm64", ts, cpu, pid, order=1, vcpu_pc=WFI_PC, is_wfe=0)
            elif c == Ev.ENTRY:
                self._kvm_entry(ts, cpu, pid, self._pcs(a))
            elif c == Ev.KEXIT:
                self._kvm_exit(ts, cpu, pid, a, b, self._pcs(cc))
            elif c == Ev.IRQLINE:
                add("kvm_irq_line", ts, cpu, pid, order=2, type=1, vcpu_idx=0, irq_num=a, level=b)
            elif c == Ev.UEXIT:
                add("kvm_userspace_exit", ts, cpu, pid, order=4, reason=a, errno=b)
            elif c == Ev.HR_IN and self.hrtimer:
                add("hrtimer_expire_entry", ts, cpu, pid, order=3, hrtimer=HRTIMER_BASE + a.astype(np.uint64),
                    now=self.trace(b), function=BG_TIMER_FN)
            elif c == Ev.HR_START and self.hrtimer:
                add("hrtimer_start", ts, cpu, pid, order=8, hrtimer=HRTIMER_BASE + a.astype(np.uint64),
                    function=BG_TIMER_FN, expires=b, softexpires=b, mode=HRTIMER_MODE_ABS_HARD)
            elif c == Ev.HR_OUT and self.hrtimer:
                add("hrtimer_expire_exit", ts, cpu, pid, order=4, hrtimer=HRTIMER_BASE + a.astype(np.uint64))
            elif c == Ev.WAKEUP:
                add("sched_wakeup", ts, cpu, pid, order=3, comm=np.array([comm_bytes(x) for x in comms[a]], "S16"),
                    pid=tpid[a], prio=tprio[a], target_cpu=b)
        x = ch.table("xexits")
        if x.shape[0]:
            for cls in np.unique(x[:, 4]).tolist():
                sel = x[:, 4] == cls
                n = int(sel.sum())
                self.truth.add_exits(x[sel, 0], x[sel, 1], np.full(n, ch.cpu), np.full(n, ch.tid), int(x[sel][0, 2]),
                                     int(x[sel][0, 3]), "WFx" if cls == WFX else EXIT_CLASSES[cls])
        if ch.intr:
            self.truth.add_rows(ch.intr)

    @staticmethod
    def _pcs(idx: np.ndarray) -> np.ndarray:
        """Guest PCs by index (-1: the WFI instruction's)."""
        return np.where(idx < 0, np.uint64(WFI_PC), PCS[np.maximum(idx, 0)])

    def _bg_timer_expiry(self, t0: np.ndarray, wake: np.ndarray, irq_exit: np.ndarray, cpu: int | np.ndarray,
                         tid: np.ndarray, pid: np.ndarray) -> None:
        """The vCPU's background hrtimer expires inside the host IRQ (``pid`` was running), before it
        wakes the vCPU."""
        at = t0 + (wake - t0) // 2
        self.sink.add("hrtimer_expire_entry", at, cpu, pid, order=3, hrtimer=HRTIMER_BASE + tid.astype(np.uint64),
                      now=self.trace(at), function=BG_TIMER_FN)
        self.sink.add("hrtimer_expire_exit", wake + np.maximum((irq_exit - wake) // 2, 1), cpu, pid, order=4,
                      hrtimer=HRTIMER_BASE + tid.astype(np.uint64))

    def markers(self, marks: list[tuple[int, int, str]]) -> None:
        for ts, cpu, text in marks:
            ip = MARK_IP & 0xFFFFFFFF if self.a32 else MARK_IP
            self.sink.add("print", np.array([ts]), cpu, MARKER_TASK[1], order=8, text=text + "\n", ip=ip)


def _loops_for_events(params: dict[str, Any], seed: int, events: int) -> int:
    """Loops that make about ``events`` events (from pilot runs of the same scenario)."""
    def count(loops: int) -> int:
        pilot = dict(params)
        pilot["cyclictest"] = {**params["cyclictest"], "loops": loops}
        return simulate(pilot, seed, None, dry=True).events

    small, large = 2000, 8000
    fixed, e_small, e_large = count(0), count(small), count(large)
    per_loop = max((e_large - e_small) / (large - small), 1.0)
    return max(int((events - fixed) / per_loop), 1)


def zstd_compressor() -> CallableCompressor:
    import zstandard

    version = ".".join(str(p) for p in zstandard.ZSTD_VERSION)
    return CallableCompressor("zstd", version, zstandard.ZstdCompressor(level=3).compress)


def simulate(params: dict[str, Any], seed: int, out: Path | None, *, dry: bool = False, zstd: bool = False,
             text: bool = False, keep: bool = False) -> Result:
    """Run the scenario; write the capture directory ``out`` unless ``dry``."""
    started = time.perf_counter()
    arch = params["arch"]
    long_size = 4 if arch == "arm32" else 8
    writer = TraceDatWriter(version=7 if zstd else 6, long_size=long_size, trace_clock="mono",
                            compression=zstd_compressor() if zstd else None)
    formats = load_formats(arch)
    if not params["record"]["hrtimer"]:  # trace-cmd record -e kvm -e sched -e irq: no timer events
        formats = {name: f for name, f in formats.items() if f[0] != "timer"}
    for _name, (system, fmt_text) in formats.items():
        if system == "ftrace":
            writer.add_ftrace_format(fmt_text)
        else:
            writer.add_event_format(system, fmt_text)
    sim = Simulator(params, seed)
    sink = EventSink(writer, formats, keep=keep, pack=not (dry or out is None))
    truth = TruthBuilder(params)
    truth.stalls, truth.tmap, sink.tmap = sim.stalls, sim.tmap, sim.tmap
    exp = Expander(sim, sink, truth, arch, params["vcpu_comm"])
    start = int(float(params["start_s"]) * 1e9)
    loops = int(params["cyclictest"]["loops"])
    end = _run_cpus(params, sim, exp, start, loops)
    if sim.stalls is not None:
        end = sim.stalls.trace1(end)
    _describe_trace(writer, params, long_size)
    events = sum(sink.counts.values())
    result = Result(out=out or Path("."), events=events, counts=dict(sink.counts), seconds=0.0, loops=loops,
                    kept=sink.kept)
    if dry or out is None:
        writer.close()
    else:
        _write_capture(out, writer, truth, params, seed, result, (start, end), text)
    result.seconds = time.perf_counter() - started
    return result


def _run_cpus(params: dict[str, Any], sim: Simulator, exp: Expander, start: int, loops: int) -> int:
    """Simulate every measured CPU from ``start``, then the CPUs without a measured thread (background
    bursts, and the markers, written last); ``exp`` expands each chunk. Returns when the run ends."""
    measured_cpus = {int(v["cpu"]) for v in params["vcpus"]} if params["side"] == "guest" else {0}
    free = [c for c in range(int(params["ncpus"])) if c not in measured_cpus]
    marks_cpu = free[-1] if free else min(measured_cpus)
    late_marks: list[tuple[int, int, str]] = []  # markers on a CPU without a measured thread, written last
    end = start
    runs = params["vcpus"] if params["side"] == "guest" else [{"cpu": 0, "tid": params["cyclictest"]["tid"]}]
    sim.tick_phases = {}
    sim.free_cpu = free[-1] if free else -1

    def sink_chunk(ch: Chunk) -> None:
        if free:
            late_marks.extend(ch.marks)
            ch.marks = []
        exp(ch)

    for v in runs:
        end = max(end, sim.run_cpu(v, loops, start, marks_cpu, FLUSH_ITEMS, sink_chunk))
        last = sim.chunk
        sim.chunk = sim.new_chunk()
        sink_chunk(last)
    for c in free:  # events of CPUs without a measured thread
        late = sim.new_chunk(c, 0)
        sim.background_only(c, start, end, late)
        if c == marks_cpu:
            late.marks = late_marks
        exp(late)
    return end


def _describe_trace(writer: TraceDatWriter, params: dict[str, Any], long_size: int) -> None:
    """The trace.dat header parts besides the events: task names, uname, kallsyms, the buffer."""
    cmdlines = {0: "<idle>", MARKER_TASK[1]: MARKER_TASK[0], int(params["vmm_pid"]): params["vcpu_comm"]}
    for v in params["vcpus"]:
        cmdlines[int(v["tid"])] = params["vcpu_comm"]
    for b in params["background"]:
        cmdlines[int(b["pid"])] = b["comm"]
    if params.get("hog"):
        cmdlines[int(params["hog"]["pid"])] = params["hog"]["comm"]
    if params["side"] == "host":
        cmdlines[int(params["cyclictest"]["tid"])] = "cyclictest"
    cmdlines.pop(0)
    writer.set_cmdlines(cmdlines)
    writer.uname = params["uname"]
    writer.tracecmd_version = "kvmtrace-synth"
    mark_ip = MARK_IP & 0xFFFFFFFF if params["arch"] == "arm32" else MARK_IP
    writer.kallsyms = f"{mark_ip:0{2 * long_size}x} T tracing_mark_write\n"
    writer.add_buffer("", ncpus=int(params["ncpus"]))


def _write_capture(out: Path, writer: TraceDatWriter, truth: TruthBuilder, params: dict[str, Any], seed: int,
                   result: Result, span: tuple[int, int], text: bool) -> None:
    """Write the capture directory: trace.dat, truth/ (phases from the markers, over ``span``),
    capture.json, and trace.txt (trace-cmd report) with ``text``."""
    out.mkdir(parents=True, exist_ok=True)
    writer.write(out / "trace.dat")
    writer.close()
    phases = phases_from_markers(
        pl.DataFrame({"ts": [m[0] for m in truth.marks], "text": [m[2] for m in truth.marks]},
                     schema={"ts": pl.Int64(), "text": pl.String()}).sort("ts"), *span)
    truth.write(out / "truth", phases)
    _manifest(params, seed, phases, result).write(out)
    if text:
        with open(out / "trace.txt", "w") as fh:
            subprocess.run(["trace-cmd", "report", "-t", "-i", str(out / "trace.dat")], stdout=fh,
                           stderr=subprocess.DEVNULL, check=True)


def _manifest(params: dict[str, Any], seed: int, phases: pl.DataFrame, result: Result) -> Manifest:
    ram = params["guest_ram"]
    memory = [{"name": "ram", "start": int(ram["start"]), "size": int(ram["size_mb"]) << 20}]
    memory += [{"name": name, "start": base, "size": size} for name, base, size in REGIONS.values()]
    workloads = [{"name": "cyclictest", "side": params["side"], "priority": params["cyclictest"]["prio"],
                  "policy": "SCHED_FIFO", "interval_us": params["cyclictest"]["interval_us"],
                  "loops": result.loops}]
    if params.get("lmbench"):
        workloads.append({"name": "lmbench", "side": "guest", "tool": "lat_mem_rd", **params["lmbench"]})
    return Manifest(
        side="host",
        host={"arch": "arm" if params["arch"] == "arm32" else "arm64", "kernel": params["uname"].split()[2],
              "uname": params["uname"], "cpu_model": params["cpu_model"], "kvm_mode": "synthetic",
              "ncpus": params["ncpus"]},
        tracing={"clock": "mono", "events": sorted(result.counts), "tool": "kvmtrace synth",
                 "counter_hz": params["counter_hz"], "counter_offset_s": params["counter_offset_s"]},
        workloads=workloads,
        phases=[{"name": r["name"], "start_ns": r["start_ns"], "end_ns": r["end_ns"]}
                for r in phases.iter_rows(named=True)],
        guest_memory=memory,
        extra={"synth": {"scenario": params.get("name"), "seed": seed, "events": result.events,
                         "event_counts": result.counts, "params": params}},
    )
