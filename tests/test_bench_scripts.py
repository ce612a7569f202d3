"""The benchmark scripts: corpus.py's field-kind captures read alike by kvmtrace and trace-cmd, bench_read --corpus."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest

from kvmtrace.fileformats.formats import FieldFormat
from kvmtrace.ingest.tracedat.reader import read_tracedat
from tests.report_oracle import as_int, parse_fields, report

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "scripts" / "bench" / "corpus.py"
EVENTS = 20_000
SAMPLE = 400
ARRAY_RE = re.compile(r"(\w+)=ARRAY\[([0-9a-f, ]*)\]")

pytestmark = pytest.mark.skipif(shutil.which("trace-cmd") is None, reason="needs trace-cmd")


def load_fieldkinds() -> ModuleType:
    """scripts/bench/fieldkinds.py (not a package), as module ``bench_fieldkinds``."""
    name = "bench_fieldkinds"
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / "bench" / "fieldkinds.py")
    assert spec is not None and spec.loader is not None
    module = sys.modules.setdefault(name, importlib.util.module_from_spec(spec))
    spec.loader.exec_module(module)
    return module


FK = load_fieldkinds()
KINDS = {f"field-{k.name}": k for k in FK.KINDS}


def run_script(*args: str) -> str:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120, check=False)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return proc.stdout


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The field-kind members of the corpus, EVENTS events each."""
    folder = tmp_path_factory.mktemp("corpus")
    run_script(str(CORPUS), str(folder), "--events", str(EVENTS), "--only", ",".join(KINDS))
    return folder


def manifest(folder: Path) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in json.loads((folder / "corpus.json").read_text())["members"]}


def test_every_capture_read_alike_by_both(corpus: Path) -> None:
    members = manifest(corpus)
    assert set(members) == set(KINDS)
    for name, entry in members.items():
        path = str(corpus / entry["file"])
        events = read_tracedat(path).events.height
        assert events == entry["events"] == len(report(path).ts) >= EVENTS, name


@pytest.mark.parametrize("name", list(KINDS))
def test_values_equal_trace_cmd(corpus: Path, name: str) -> None:
    """A sample of rows: every payload field as kvmtrace reads it and as ``trace-cmd report -R`` prints it."""
    kind = KINDS[name]
    path = str(corpus / f"{name}.dat")
    tables, rep = read_tracedat(path), report(path)
    table = tables.table(kind.event)
    fmt = tables.formats[kind.event]
    rows = np.linspace(0, table.height - 1, SAMPLE).astype(int)
    given = list(FK.block_values(kind, EVENTS)) if kind.name == "tail-u32" else []
    for row in table[rows.tolist()].to_dicts():
        text = rep.rest[row["idx"]]
        for fld in fmt.payload_fields:
            theirs = printed(text, fld, kind.big_endian)
            if theirs is None:  # trace-cmd prints a trailing non-char array as ARRAY[]: the writer's values
                assert len(row[fld.name]) == row["n"] == as_int(parse_fields(text)["n"])
                theirs = given[row["idx"]][2][fld.name]
            assert same(row[fld.name], theirs, fld), (name, row["idx"], fld.name, row[fld.name], theirs)


def printed(text: str, fld: FieldFormat, big_endian: bool) -> Any:
    """One field's value in a ``-R`` line: an int, a string, or a list of ints (None: ARRAY[])."""
    arrays = dict(ARRAY_RE.findall(text))
    if fld.name in arrays:
        raw = bytes(int(b, 16) for b in arrays[fld.name].split(", ") if b)
        if not raw:
            return None
        size = fld.element_size
        return [int.from_bytes(raw[i:i + size], "big" if big_endian else "little") for i in range(0, len(raw), size)]
    value = parse_fields(text)[fld.name]
    return value if fld.is_string else as_int(value)


def same(ours: Any, theirs: Any, fld: FieldFormat) -> bool:
    """Equal, integers compared as ``fld``'s bits (trace-cmd prints 1- and 2-byte signed fields unsigned)."""
    if isinstance(ours, bool):
        return int(ours) == theirs
    if isinstance(ours, int):
        mask = (1 << (8 * fld.size)) - 1
        return ours & mask == theirs & mask
    return bool(ours == theirs)


def test_bench_read_corpus_prints_one_line_per_capture(corpus: Path) -> None:
    out = run_script(str(ROOT / "scripts" / "bench_read.py"), "--corpus", str(corpus), "--repeat", "1")
    lines = out.splitlines()
    for name, kind in KINDS.items():
        mine = [ln for ln in lines if ln.startswith(f"{name} ")]
        assert len(mine) == 1, name
        assert kind.label[:20] in mine[0] and f"{EVENTS:,}" in mine[0]
    assert any(ln.startswith("median ") for ln in lines)
    assert "captures miss a target" in out


def test_bench_read_engine_reaches_the_child(corpus: Path) -> None:
    out = run_script(str(ROOT / "scripts" / "bench_read.py"), "--corpus", str(corpus), "--repeat", "1",
                     "--engine", "numpy", "--only", "field-ints", "--no-trace-cmd")
    assert "engine numpy" in out and "reported by the reader: numpy" in out
    assert len([ln for ln in out.splitlines() if ln.startswith("field-ints ")]) == 1
