"""Ground truth of a synth run: ``truth/*.parquet`` with the columns of docs/stages.md."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from kvmtrace.model.phases import phase_of
from kvmtrace.synth.episodes import CAUSE_SHARE
from kvmtrace.synth.sim import PATHS

INTERRUPT_SCHEMA: dict[str, pl.DataType] = {
    "vcpu_tid": pl.Int32(), "irq": pl.Int32(), "kind": pl.String(), "path": pl.String(), "cpu": pl.Int32(),
    "t_ns": pl.Int64(), "deadline_ns": pl.Int64(), "timer_ns": pl.Int64(), "host_irq_ns": pl.Int64(),
    "vcpu_wait_ns": pl.Int64(), "inject_ns": pl.Int64(), "exit_ns": pl.Int64(), "entry_ns": pl.Int64(),
    "total_ns": pl.Int64(), "latency_ns": pl.Int64(), "blocker_comm": pl.String(), "blocker_pid": pl.Int32(),
    "blocker_ns": pl.Int64(), "cause_kind": pl.String(), "cause": pl.String(),
}
# while the truth is built: with the top cause's share (a lower bound) and the kvm_entry time
WORK_SCHEMA: dict[str, pl.DataType] = {**INTERRUPT_SCHEMA, "cause_ns": pl.Int64(), "entry": pl.Int64()}
# the slow paths' interrupts (episodes.Episodes.intr): stage boundaries as times, -1 where none
ROW_SCHEMA: dict[str, pl.DataType] = {
    "kind": pl.String(), "irq": pl.Int32(), "path": pl.String(), "cpu": pl.Int32(), "vcpu_tid": pl.Int32(),
    **{c: pl.Int64() for c in ("deadline_ns", "t_ns", "wake", "sw", "upd", "kexit", "entry")},
    "blocker_comm": pl.String(), "blocker_pid": pl.Int32(), "blocker_ns": pl.Int64(), "cause_kind": pl.String(),
    "cause": pl.String(), "cause_ns": pl.Int64()}
ROW_TIMES = ("t_ns", "wake", "sw", "upd", "kexit", "entry")
CYCLICTEST_SCHEMA: dict[str, pl.DataType] = {"deadline_ns": pl.Int64(), "latency_ns": pl.Int64(),
                                             "tid": pl.Int32(), "cpu": pl.Int32(), "path": pl.String()}
KINDS = {0: "translation", 1: "access_flag", 2: "permission"}


class TruthBuilder:
    """Accumulates truth rows chunk by chunk (numpy arrays), writes Parquet at the end."""

    def __init__(self, params: dict[str, Any]) -> None:
        self.params = params
        self.intr: list[pl.DataFrame] = []
        self.exits: list[pl.DataFrame] = []
        self.faults: list[pl.DataFrame] = []
        self.cyclictest: list[pl.DataFrame] = []
        self.marks: list[tuple[int, int, str]] = []
        self.stalls: Any = None  # episodes.StallMap of the run, if any
        self.tmap: Any = None  # its machine time -> trace time (the rows come in machine time)

    def _t(self, t: Any) -> np.ndarray:
        t = np.asarray(t, np.int64)
        return t if self.tmap is None or not t.size else np.where(t >= 0, self.tmap(np.maximum(t, 0)), t)

    def add_cyclictest(self, deadline: np.ndarray, latency: np.ndarray, tid: int, cpu: int,
                       path: np.ndarray) -> None:
        """One row per loop; ``path`` indexes ``PATHS`` (blocked, running, host)."""
        n = len(deadline)
        if n:
            self.cyclictest.append(pl.DataFrame({
                "deadline_ns": deadline, "latency_ns": latency, "tid": np.full(n, tid, np.int32),
                "cpu": np.full(n, cpu, np.int32), "path": np.array(PATHS)[path],
            }, schema=CYCLICTEST_SCHEMA))

    def add_exits(self, t: np.ndarray, entry: np.ndarray, cpu: np.ndarray, tid: np.ndarray, ret: int,
                  ec: int | np.ndarray, cls: str) -> None:
        n = len(t)
        if n == 0:
            return
        a32 = self.params["arch"] == "arm32"
        self.exits.append(pl.DataFrame({
            "t_ns": self._t(t), "entry_ts": np.where(np.asarray(entry) > np.asarray(t), self._t(entry), -1),
            "vcpu_tid": np.asarray(tid, np.int32), "cpu": np.asarray(cpu, np.int32),
            "ret": np.full(n, ret, np.int32), "esr_ec": np.broadcast_to(np.asarray(ec, np.int32), (n,)),
            "exit_class": [cls] * n, "class_inferred": np.full(n, a32),
        }).with_columns(pl.when(pl.lit(a32)).then(None).otherwise(pl.col("ret")).cast(pl.Int32).alias("ret")))

    def add_faults(self, fault_ts: np.ndarray, exit_ts: np.ndarray, entry_ts: np.ndarray, rows: np.ndarray,
                   name: str) -> None:
        hsr = rows[:, 3].astype(np.int64)
        region = {"MMIO_UART": "uart", "MMIO_VIRTIO": "virtio", "MMIO_GIC": "gic"}.get(name, "ram")
        exit_ts, entry_ts = self._t(exit_ts), self._t(entry_ts)
        self.faults.append(pl.DataFrame({
            "t_ns": self._t(fault_ts), "vcpu_tid": rows[:, 1].astype(np.int32),
            "ipa": (rows[:, 2] & ~np.uint64(0xFFF)).astype(np.uint64), "esr": rows[:, 3].astype(np.uint64),
            "ec": (hsr >> 26).astype(np.int32), "kind": [KINDS[int(k)] for k in rows[:, 7]],
            "level": rows[:, 6].astype(np.int8), "write": rows[:, 5].astype(bool),
            "s1ptw": ((hsr >> 7) & 1).astype(bool), "isv": ((hsr >> 24) & 1).astype(bool),
            "mmio": rows[:, 8].astype(bool), "region": [region] * len(hsr),
            "handling_ns": np.asarray(entry_ts - exit_ts, np.int64),
        }))

    def add_interrupts(self, arr: np.ndarray, blocker_comm: list[str | None], blocker_pid: list[int | None],
                       blocker_ns: list[int | None], a32: bool, cause_kind: list[str | None],
                       cause: list[str | None], cause_ns: np.ndarray) -> None:
        path, cpu, tid, dl = (arr[:, i] for i in range(4))
        t0, wake, _irq_exit, sw, upd, kexit, entry = (self._t(arr[:, i]) for i in range(4, 11))
        b = path == 0
        df = pl.DataFrame({
            "vcpu_tid": tid.astype(np.int32), "irq": np.full(len(tid), 27, np.int32),
            "kind": ["timer"] * len(tid), "path": np.where(b, "blocked", "running"), "cpu": cpu.astype(np.int32),
            "t_ns": t0, "deadline_ns": dl, "wake": wake, "sw": sw, "upd": upd, "kexit": kexit, "entry": entry,
            "blocker_comm": blocker_comm, "blocker_pid": blocker_pid, "blocker_ns": blocker_ns,
            "cause_kind": cause_kind, "cause": cause, "cause_ns": cause_ns,
        }, schema_overrides={"blocker_comm": pl.String(), "blocker_pid": pl.Int32(), "blocker_ns": pl.Int64(),
                             "cause_kind": pl.String(), "cause": pl.String()})
        if a32:  # no timer or vgic tracepoints: the blocked path's stages end at the switch-in
            df = df.with_columns(pl.when(pl.col("path") == "blocked").then(pl.col("sw")).otherwise(pl.col("upd"))
                                 .alias("upd"), pl.lit(True).alias("no_inject"))
        self.intr.append(self._stages(df))

    def add_rows(self, rows: list[tuple[Any, ...]]) -> None:
        """The slow paths' interrupts (ROW_SCHEMA; machine times, -1 for none)."""
        df = pl.DataFrame(rows, schema=ROW_SCHEMA, orient="row")
        if self.tmap is not None:
            df = df.with_columns(pl.Series(c, self._t(df[c].to_numpy())) for c in ROW_TIMES)
        nulls = {c: pl.when(pl.col(c) >= 0).then(pl.col(c)) for c in ("deadline_ns", "wake", "sw", "upd", "kexit")}
        self.intr.append(self._stages(df.with_columns(**nulls)))

    @staticmethod
    def _stages(df: pl.DataFrame) -> pl.DataFrame:
        """Stage durations from the boundaries (docs/stages.md): t_ns, wake, sw(itch-in), upd (injection; null:
        none), kexit, entry."""
        null = pl.lit(None, dtype=pl.Int64)
        blocked, running = pl.col("path") == "blocked", pl.col("path") == "running"
        preempted = pl.col("path") == "preempted"  # injected at the switch-in of a preempted vCPU (t_ns)
        inj = pl.col("upd")
        inj_stage = null if "no_inject" in df.columns else (
            pl.when(blocked | preempted).then(inj - pl.col("sw")).otherwise(null))
        df = df.with_columns(
            (pl.col("t_ns") - pl.col("deadline_ns")).alias("timer_ns"),
            pl.when(blocked).then(pl.col("wake") - pl.col("t_ns")).when(pl.col("kind") == "device").then(null)
            .when(preempted).then(null).otherwise(inj - pl.col("t_ns")).alias("host_irq_ns"),
            pl.when(blocked).then(pl.col("sw") - pl.col("wake")).otherwise(null).alias("vcpu_wait_ns"),
            inj_stage.alias("inject_ns"),
            pl.when(running).then(pl.col("kexit") - inj).otherwise(null).alias("exit_ns"),
            pl.when(running).then(pl.col("entry") - pl.col("kexit"))
            .when(blocked).then(pl.col("entry") - pl.coalesce(inj, pl.col("sw")))
            .otherwise(pl.col("entry") - inj).alias("entry_ns"),
            (pl.col("entry") - pl.col("t_ns")).alias("total_ns"),
        ).with_columns((pl.col("timer_ns") + pl.col("total_ns")).alias("latency_ns"))
        return df.select(list(WORK_SCHEMA)).cast(WORK_SCHEMA).sort("t_ns")  # type: ignore[arg-type]

    def write(self, out: Path, phases: pl.DataFrame) -> None:
        out.mkdir(parents=True, exist_ok=True)
        # one table at a time, dropping the chunks' frames as they are consumed (peak memory)
        intr = pl.concat(self.intr) if self.intr else pl.DataFrame(schema=WORK_SCHEMA)
        self.intr = []
        if self.stalls is not None and intr.height:
            intr = with_stalls(intr, self.stalls)
        intr = intr.drop("cause_ns", "entry")
        # chunks come in time order, each sorted: sorting the whole table (memory!) only takes more vCPUs
        (intr if intr["t_ns"].is_sorted() else intr.sort("t_ns")).write_parquet(out / "interrupts.parquet")
        del intr
        if self.exits:
            ex = pl.concat(self.exits).sort("vcpu_tid", "t_ns")
            self.exits = []
            ex = ex.with_columns(pl.when(pl.col("entry_ts") > pl.col("t_ns")).then(pl.col("entry_ts"))
                                 .alias("entry_ts"))
            ex = ex.with_columns(
                (pl.col("entry_ts") - pl.col("t_ns")).cast(pl.Int64).alias("handling_ns"),
                (pl.col("t_ns") - pl.col("entry_ts").shift(1).over("vcpu_tid")).cast(pl.Int64).alias("guest_run_ns"),
                phase_of(pl.col("t_ns"), phases).alias("phase"),
            ).drop("entry_ts").sort("t_ns")
        else:
            ex = pl.DataFrame()
        ex.write_parquet(out / "exits.parquet")
        del ex
        if self.faults:
            fa = pl.concat(self.faults).with_columns(phase_of(pl.col("t_ns"), phases).alias("phase")).sort("t_ns")
            self.faults = []
        else:
            fa = pl.DataFrame()
        fa.write_parquet(out / "faults.parquet")
        ct = pl.concat(self.cyclictest) if self.cyclictest else pl.DataFrame(schema=CYCLICTEST_SCHEMA)
        (ct if ct["deadline_ns"].is_sorted() else ct.sort("deadline_ns")).write_parquet(out / "cyclictest.parquet")


def with_stalls(intr: pl.DataFrame, stalls: Any) -> pl.DataFrame:
    """Whole-machine stalls are a cause and a blocker too: the stall time in an interrupt's latency
    (deadline, else t_ns -> entry) and in its wait (wakeup -> switch-in), where it is the largest share."""
    start = pl.coalesce("deadline_ns", "t_ns")
    lo, hi, entry = (intr.select(start)).to_series().to_numpy(), intr["entry"].to_numpy(), intr["entry"].to_numpy()
    in_span = stalls.overlap(lo, hi)
    wake = (intr["t_ns"] + intr["host_irq_ns"].fill_null(0)).to_numpy()
    sw = (pl.Series(wake) + intr["vcpu_wait_ns"].fill_null(0)).to_numpy()
    in_wait = np.where(intr["vcpu_wait_ns"].is_null().to_numpy(), 0, stalls.overlap(wake, sw))
    lat = entry - lo
    intr = intr.with_columns(pl.Series("in_span", in_span), pl.Series("in_wait", in_wait), pl.Series("lat", lat))
    span_top = (pl.col("in_span") > pl.col("cause_ns")) & (pl.col("in_span") >= CAUSE_SHARE * pl.col("lat"))
    wait_top = (pl.col("in_wait") > 0) & (pl.col("in_wait") > pl.col("blocker_ns").fill_null(0))
    return intr.with_columns(
        pl.when(span_top).then(pl.lit("stall")).otherwise(pl.col("cause_kind")).alias("cause_kind"),
        pl.when(span_top).then(pl.lit("stall")).otherwise(pl.col("cause")).alias("cause"),
        pl.when(wait_top).then(pl.lit("stall")).otherwise(pl.col("blocker_comm")).alias("blocker_comm"),
        pl.when(wait_top).then(None).otherwise(pl.col("blocker_pid")).alias("blocker_pid"),
        pl.when(wait_top).then(pl.col("in_wait")).otherwise(pl.col("blocker_ns")).alias("blocker_ns"),
    ).drop("in_span", "in_wait", "lat")
