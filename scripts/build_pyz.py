#!/usr/bin/env python3
"""Build kvmtrace-record.pyz: the recorder as one file for a target with only Python 3.8+ (stdlib).

    python3 scripts/build_pyz.py [-o dist/kvmtrace-record.pyz]
    python3 dist/kvmtrace-record.pyz -o CAPTURE_DIR --workload cyclictest

The archive holds kvmtrace/record/*.py and kvmtrace/fileformats/*.py (standard library only),
kvmtrace/errors.py, a stub kvmtrace/__init__.py and
the microbenchmark sources (scripts/bench/*.c, compiled on the target when it has a C compiler;
or build them with scripts/bench/build.sh and copy kvmtrace-lat_* next to the pyz).
"""

from __future__ import annotations

import argparse
import re
import shutil
import tempfile
import zipapp
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKED = ("record", "fileformats")  # standard library only, Python 3.8+
MAIN = "import sys\nfrom kvmtrace.record.__main__ import main\nsys.exit(main())\n"


def stage(dest: Path) -> None:
    """Lay out the archive's files under ``dest``."""
    version = re.search(r'__version__ = "([^"]+)"', (ROOT / "kvmtrace" / "__init__.py").read_text())
    pkg = dest / "kvmtrace"
    (pkg / "record" / "bench").mkdir(parents=True)
    (pkg / "__init__.py").write_text(
        f'"""kvmtrace recorder (kvmtrace-record.pyz)."""\n\n__version__ = "{version.group(1) if version else "0"}"\n')
    (pkg / "fileformats").mkdir()
    for part in PACKED:
        for src in sorted((ROOT / "kvmtrace" / part).glob("*.py")):
            shutil.copy(src, pkg / part / src.name)
    shutil.copy(ROOT / "kvmtrace" / "errors.py", pkg / "errors.py")
    for src in sorted((ROOT / "scripts" / "bench").glob("*.c")):
        shutil.copy(src, pkg / "record" / "bench" / src.name)
    (dest / "__main__.py").write_text(MAIN)


def build(out: Path) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        stage(Path(tmp))
        zipapp.create_archive(tmp, out, interpreter="/usr/bin/env python3", compressed=True)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-o", "--output", type=Path, default=ROOT / "dist" / "kvmtrace-record.pyz")
    print(build(p.parse_args().output))


if __name__ == "__main__":
    main()
