"""Ground truth of a synth run: ``truth/*.parquet`` with the columns of docs/stages.md."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from kvmtrace.model.phases import phase_of
from kvmtrace.synth.sim import PATHS

INTERRUPT_SCHEMA: dict[str, pl.DataType] = {
    "vcpu_tid": pl.Int32(), "irq": pl.Int32(), "kind": pl.String(), "path": pl.String(), "cpu": pl.Int32(),
    "t_ns": pl.Int64(), "deadline_ns": pl.Int64(), "timer_ns": pl.Int64(), "host_irq_ns": pl.Int64(),
    "vcpu_wait_ns": pl.Int64(), "inject_ns": pl.Int64(), "exit_ns": pl.Int64(), "entry_ns": pl.Int64(),
    "total_ns": pl.Int64(), "latency_ns": pl.Int64(), "blocker_comm": pl.String(), "blocker_pid": pl.Int32(),
    "blocker_ns": pl.Int64(),
}
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
            "t_ns": np.asarray(t, np.int64), "entry_ts": np.asarray(entry, np.int64),
            "vcpu_tid": np.asarray(tid, np.int32), "cpu": np.asarray(cpu, np.int32),
            "ret": np.full(n, ret, np.int32), "esr_ec": np.broadcast_to(np.asarray(ec, np.int32), (n,)),
            "exit_class": [cls] * n, "class_inferred": np.full(n, a32),
        }).with_columns(pl.when(pl.lit(a32)).then(None).otherwise(pl.col("ret")).cast(pl.Int32).alias("ret")))

    def add_faults(self, fault_ts: np.ndarray, exit_ts: np.ndarray, entry_ts: np.ndarray, rows: np.ndarray,
                   name: str) -> None:
        hsr = rows[:, 3].astype(np.int64)
        region = {"MMIO_UART": "uart", "MMIO_VIRTIO": "virtio", "MMIO_GIC": "gic"}.get(name, "ram")
        self.faults.append(pl.DataFrame({
            "t_ns": np.asarray(fault_ts, np.int64), "vcpu_tid": rows[:, 1].astype(np.int32),
            "ipa": (rows[:, 2] & ~np.uint64(0xFFF)).astype(np.uint64), "esr": rows[:, 3].astype(np.uint64),
            "ec": (hsr >> 26).astype(np.int32), "kind": [KINDS[int(k)] for k in rows[:, 7]],
            "level": rows[:, 6].astype(np.int8), "write": rows[:, 5].astype(bool),
            "s1ptw": ((hsr >> 7) & 1).astype(bool), "isv": ((hsr >> 24) & 1).astype(bool),
            "mmio": rows[:, 8].astype(bool), "region": [region] * len(hsr),
            "handling_ns": np.asarray(entry_ts - exit_ts, np.int64),
        }))

    def add_interrupts(self, arr: np.ndarray, blocker_comm: list[str | None], blocker_pid: list[int | None],
                       blocker_ns: list[int | None], a32: bool) -> None:
        path, cpu, tid, dl, t0, wake, _irq_exit, sw, upd, kexit, entry = (arr[:, i] for i in range(11))
        b = path == 0
        null = pl.lit(None, dtype=pl.Int64)
        df = pl.DataFrame({
            "vcpu_tid": tid.astype(np.int32), "irq": np.full(len(tid), 27, np.int32),
            "kind": ["timer"] * len(tid), "path": np.where(b, "blocked", "running"), "cpu": cpu.astype(np.int32),
            "t_ns": t0, "deadline_ns": dl, "wake": wake, "sw": sw, "upd": upd, "kexit": kexit, "entry": entry,
            "blocker_comm": blocker_comm, "blocker_pid": blocker_pid, "blocker_ns": blocker_ns,
        }, schema_overrides={"blocker_comm": pl.String(), "blocker_pid": pl.Int32(), "blocker_ns": pl.Int64()})
        blocked = pl.col("path") == "blocked"
        df = df.with_columns(
            (pl.col("t_ns") - pl.col("deadline_ns")).alias("timer_ns"),
            pl.when(blocked).then(pl.col("wake") - pl.col("t_ns")).otherwise(pl.col("upd") - pl.col("t_ns"))
            .alias("host_irq_ns"),
            pl.when(blocked).then(pl.col("sw") - pl.col("wake")).otherwise(null).alias("vcpu_wait_ns"),
            (pl.when(blocked).then(pl.col("upd") - pl.col("sw")).otherwise(null) if not a32 else null)
            .alias("inject_ns"),
            pl.when(blocked).then(null).otherwise(pl.col("kexit") - pl.col("upd")).alias("exit_ns"),
            pl.when(blocked).then(pl.col("entry") - (pl.col("sw") if a32 else pl.col("upd")))
            .otherwise(pl.col("entry") - pl.col("kexit")).alias("entry_ns"),
            (pl.col("entry") - pl.col("t_ns")).alias("total_ns"),
        ).with_columns((pl.col("timer_ns") + pl.col("total_ns")).alias("latency_ns"))
        self.intr.append(df.select(list(INTERRUPT_SCHEMA)).cast(INTERRUPT_SCHEMA)  # type: ignore[arg-type]
                         .sort("t_ns"))

    def write(self, out: Path, phases: pl.DataFrame) -> None:
        out.mkdir(parents=True, exist_ok=True)
        # one table at a time, dropping the chunks' frames as they are consumed (peak memory)
        intr = pl.concat(self.intr) if self.intr else pl.DataFrame(schema=INTERRUPT_SCHEMA)
        self.intr = []
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
