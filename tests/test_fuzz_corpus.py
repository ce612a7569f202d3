"""The fuzzing campaigns' past failures (tests/fuzz/corpus, made by scripts/fuzz/make_corpus.py),
replayed: each is rejected with its one line (exit 2 from the CLI) or read, with both engines.

Kept inputs are read in this process (both engines); inputs made at test time (special files,
floods, bombs) go through the real CLI in a subprocess under the campaign's memory limit and timeout.
"""

from __future__ import annotations

import json
import re
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from kvmtrace.capture import open_capture
from kvmtrace.errors import CaptureError
from tests.fuzz.corpus_cases import CORPUS, Case, make_recipe
from tests.fuzz.oracle import have_trace_cmd, trace_cmd_counts
from tests.fuzz.runner import Job, SubprocessExecutor

CASES = sorted(p.parent for p in CORPUS.glob("*/case.json"))


def load(folder: Path) -> Case:
    return Case(**json.loads((folder / "case.json").read_text()))


def materialise(folder: Path, tmp_path: Path) -> tuple[Case, Path]:
    case = load(folder)
    work = tmp_path / case.name
    work.mkdir()
    for item in folder.iterdir():
        if item.name != "case.json":
            shutil.copyfile(item, work / item.name)
    if case.recipe:
        make_recipe(case, work)
    return case, work / case.target if case.target != "." else work


def read_and_analyze(target: Path) -> Any:
    """What ``info`` and ``analyze`` do with the input; an analysis may refuse it (one line)."""
    from kvmtrace.analysis.info import info_dict
    from kvmtrace.analysis.latency import analyze

    cap = open_capture(target, use_cache=False)
    info_dict(cap)
    try:
        analyze(cap, None, 5).document()
    except CaptureError as exc:
        assert "\n" not in exc.one_line()
    return cap


def test_the_corpus_is_there() -> None:
    assert len(CASES) >= 40
    assert {load(c).expect for c in CASES} == {"exit2", "read"}


@pytest.mark.parametrize("engine", ["native", "numpy"])
@pytest.mark.parametrize("folder", [c for c in CASES if not load(c).recipe], ids=lambda c: c.name)
def test_kept_input(folder: Path, engine: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    case, target = materialise(folder, tmp_path)
    monkeypatch.setenv("KVMTRACE_ENGINE", engine)
    if case.expect == "exit2":
        with pytest.raises(CaptureError) as exc:
            read_and_analyze(target)
        line = exc.value.one_line()
        assert "\n" not in line and re.search(case.message, line), f"{case.origin}: {line}"
        assert str(tmp_path) in line  # it names the file
        return
    cap = read_and_analyze(target)
    reasons = [s.reason for s in cap.tables.report.skipped]
    if case.message:
        assert any(case.message in r for r in reasons), f"{case.origin}: {reasons}"
    if target.name == "trace.dat" and have_trace_cmd() and not reasons:  # nothing skipped: as trace-cmd reads it
        theirs = trace_cmd_counts(str(target))
        if theirs is not None:
            ours = Counter(str(e) for e in cap.tables.events["event"].to_list())
            assert ours == theirs, f"{case.origin}: kvmtrace {sum(ours.values())}, trace-cmd {sum(theirs.values())}"


@pytest.mark.parametrize("folder", [c for c in CASES if load(c).recipe], ids=lambda c: c.name)
def test_made_input_through_the_cli(folder: Path, tmp_path: Path) -> None:
    case, target = materialise(folder, tmp_path)
    out = SubprocessExecutor(timeout=120).run(Job(["info", str(target), "--no-cache"]))
    assert out.kind == "exit2", f"{case.origin}: {out.summary()}"
    line = out.stderr.strip()
    assert line.startswith(f"kvmtrace: {tmp_path}") and re.search(case.message, line), line


@pytest.mark.parametrize("name", ["field-offset-past-record", "text-cpu-huge", "manifest-trace-null",
                                  "header-page-commit-16"])
def test_cli_reads_or_rejects_in_one_line(name: str, tmp_path: Path) -> None:
    case, target = materialise(CORPUS / name, tmp_path)
    for command in ("info", "analyze"):
        out = SubprocessExecutor().run(Job([command, str(target), "--no-cache"]))
        assert out.kind in ("exit2", "accepted"), out.summary()
        if case.expect == "exit2" or out.kind == "exit2":
            assert out.code == 2 and len(out.stderr.strip().splitlines()) == 1, out.stderr
