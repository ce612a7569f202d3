"""``kvmtrace vcpus`` in the terminal: the threads, time per state, who held the CPU while each vCPU was
runnable, and RT throttling when it happened."""

from __future__ import annotations

from rich.console import Console

from kvmtrace.analysis.vcpus import VcpusReport
from kvmtrace.render.tables import frame_table

HOLDERS_SHOWN = 8  # per vCPU thread


def render_vcpus(rep: VcpusReport, console: Console) -> None:
    console.print(frame_table(rep.threads, "vCPU threads"))
    console.print(frame_table(rep.time_per_state, "Time per state"))
    console.print(frame_table(rep.holders.group_by("vcpu_tid", maintain_order=True).head(HOLDERS_SHOWN),
                              "Who held the CPU while the vCPU was runnable (waking, preempted)"))
    if rep.throttling.intervals.height:
        console.print(rep.throttling.describe())
