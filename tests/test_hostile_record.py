"""A recorder killed with SIGKILL leaves its instance tracing; the next recorder removes it by itself
and says so (issue 11)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.test_record import ROOT, TRACEFS, _usable


@pytest.mark.tracefs
@pytest.mark.skipif(not _usable(), reason="needs root, tracefs and cyclictest")
def test_a_killed_recorders_instance_is_removed_at_the_next_start(tmp_path: Path) -> None:
    killed = subprocess.Popen([sys.executable, "-m", "kvmtrace.record", "-q", "-o", str(tmp_path / "a"),
                               "-e", "sched:sched_switch", "--duration", "30"], cwd=ROOT,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    instance = TRACEFS / "instances" / f"kvmtrace-{killed.pid}"
    for _ in range(100):
        if (instance / "tracing_on").exists() and (instance / "tracing_on").read_text().strip() == "1":
            break
        time.sleep(0.1)
    os.kill(killed.pid, signal.SIGKILL)
    killed.wait()
    assert instance.exists() and (instance / "tracing_on").read_text().strip() == "1"  # left tracing
    res = subprocess.run([sys.executable, "-m", "kvmtrace.record", "-o", str(tmp_path / "b"), "-e",
                          "sched:sched_switch", "--duration", "0.5"], cwd=ROOT, capture_output=True, text=True,
                         timeout=120, check=False)
    assert res.returncode == 0, res.stderr
    assert f"removed stale instance kvmtrace-{killed.pid}: its recorder (pid {killed.pid}) is gone" in res.stderr
    assert not instance.exists()
