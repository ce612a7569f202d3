"""The memory-latency and page-fault microbenchmarks: LMbench when installed, else our own C programs.

Our programs (``scripts/bench/lat_mem_rd.c``, ``lat_pagefault.c``) are found prebuilt as
``kvmtrace-lat_mem_rd`` / ``kvmtrace-lat_pagefault`` (``--bench-dir``, next to the pyz, or on
PATH), or compiled here from the sources shipped with the recorder when a C compiler exists.
"""

from __future__ import annotations

import glob
import os
import pkgutil
import shutil
import subprocess
import sys

from kvmtrace.record.tracefs import RecordError

PROGRAMS = ("lat_mem_rd", "lat_pagefault")
_LMBENCH_DIRS = ("/usr/lib/lmbench/bin/*", "/usr/local/lib/lmbench/bin/*", "/opt/lmbench/bin/*",
                 "/usr/lib/lmbench3/bin/*")


def lmbench_tool(name: str) -> str | None:
    """Path of an installed LMbench program, if any."""
    found = shutil.which(name)
    if found:
        return found
    for pattern in _LMBENCH_DIRS:
        for path in sorted(glob.glob(os.path.join(pattern, name))):
            if os.access(path, os.X_OK):
                return path
    return None


def _source(name: str) -> bytes | None:
    try:
        data = pkgutil.get_data("kvmtrace.record", f"bench/{name}.c")
    except OSError:
        data = None
    if data:
        return data
    repo = os.path.join(os.path.dirname(__file__), "..", "..", "scripts", "bench", f"{name}.c")
    try:
        with open(repo, "rb") as fh:
            return fh.read()
    except OSError:
        return None


def _search_dirs(bench_dir: str | None) -> list[str]:
    dirs = [bench_dir] if bench_dir else []
    argv0 = os.path.abspath(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    if argv0:
        dirs.append(os.path.dirname(argv0))
    return dirs


def compile_program(name: str, outdir: str) -> str:
    """Build our program from the shipped source with cc/gcc; RecordError when impossible."""
    src = _source(name)
    compiler = shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")
    if src is None or compiler is None:
        why = "its source is missing" if src is None else "no C compiler (cc/gcc) here"
        raise RecordError(f"{name}: LMbench not installed and cannot build kvmtrace-{name}: {why}; "
                          f"build it with scripts/bench/build.sh and pass --bench-dir")
    os.makedirs(outdir, exist_ok=True)
    src_path = os.path.join(outdir, f"{name}.c")
    with open(src_path, "wb") as fh:
        fh.write(src)
    exe = os.path.join(outdir, f"kvmtrace-{name}")
    res = subprocess.run([compiler, "-O2", "-std=gnu99", "-o", exe, src_path], capture_output=True, text=True)
    if res.returncode != 0:
        first = (res.stderr.strip().splitlines() or ["failed"])[0]
        raise RecordError(f"building kvmtrace-{name} with {compiler} failed: {first}")
    return exe


def find_program(name: str, bench_dir: str | None, build_dir: str,
                 prefer_lmbench: bool = True) -> tuple[str, str]:
    """(path, provider) of a benchmark (``lmbench`` or ``kvmtrace``); builds into ``build_dir``."""
    if prefer_lmbench:
        tool = lmbench_tool(name)
        if tool:
            return tool, "lmbench"
    for d in _search_dirs(bench_dir):
        path = os.path.join(d, f"kvmtrace-{name}")
        if os.access(path, os.X_OK):
            return path, "kvmtrace"
    found = shutil.which(f"kvmtrace-{name}")
    if found:
        return found, "kvmtrace"
    return compile_program(name, build_dir), "kvmtrace"
