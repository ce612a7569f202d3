#!/usr/bin/env python3
"""Write the regression corpus (tests/fuzz/corpus_cases.py) into tests/fuzz/corpus/: one folder per
case with its input files and case.json. Deterministic: running it again gives the same files."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.fuzz.corpus_cases import CORPUS, all_cases


def main() -> int:
    cases = all_cases()
    for old in CORPUS.iterdir() if CORPUS.exists() else []:
        if old.is_dir():
            shutil.rmtree(old)
    for case in cases:
        folder = CORPUS / case.name
        folder.mkdir(parents=True)
        for name, data in case.files.items():
            (folder / name).write_bytes(data)
        (folder / "case.json").write_text(json.dumps(case.doc(), indent=1) + "\n")
    size = sum(p.stat().st_size for p in CORPUS.rglob("*") if p.is_file())
    print(f"{len(cases)} cases, {size / 1024:.0f} KiB in {CORPUS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
