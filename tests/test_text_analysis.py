"""The same capture read from trace.dat and from its trace-cmd report text gives the same analysis.

The text carries no trace clock (capture.json names trace.dat), so the monotonic clock is estimated
from hrtimer events: deadlines may then differ by at most the uncertainty the analysis states."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

import kvmtrace
from kvmtrace.synth import preset, simulate


@pytest.fixture(scope="module")
def hog(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("hog")
    simulate(preset("hog"), 3, out, text=True)
    return out


def test_text_and_tracedat_interrupts_agree(hog: Path) -> None:
    dat = kvmtrace.open(hog / "trace.dat", use_cache=False).interrupts()
    txt = kvmtrace.open(hog / "trace.txt", use_cache=False).interrupts()
    assert txt.height == dat.height > 1000
    j = dat.join(txt, on="t_idx", suffix="_txt")
    assert j.height == dat.height
    same = ["kind", "path", "cpu", "t_ns", "host_irq_ns", "vcpu_wait_ns", "inject_ns", "entry_ns", "blocker_pid"]
    for col in same:
        assert j[col].equals(j[f"{col}_txt"], check_names=False), col
    with_deadline = j.filter(pl.col("deadline_ns").is_not_null())
    assert with_deadline.height > 1000 and with_deadline["deadline_ns_txt"].null_count() == 0
    off = (with_deadline["deadline_ns_txt"] - with_deadline["deadline_ns"]).abs()
    assert (off <= with_deadline["deadline_uncertainty_ns_txt"]).all()
