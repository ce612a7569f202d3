#!/usr/bin/env python3
"""Coverage-guided fuzzing of the readers with atheris (libFuzzer for Python), the C kernels built
with AddressSanitizer and UBSan (KVMTRACE_NATIVE_SANITIZE=1, see kvmtrace/ingest/kernels.py).

    scripts/fuzz/atheris_readers.py -max_total_time=120            # the short CI run
    nice -n 19 scripts/fuzz/atheris_readers.py -max_total_time=1800 -jobs=1 WORK_DIR

Every input is a trace.dat, a text capture or a capture.json (its first byte chooses, its second
the engine); the readers must read it or raise CaptureError. Anything else, an ASan/UBSan report,
a timeout or an allocation past -rss_limit_mb is a crash: libFuzzer saves the input (crash-*) and
the run ends with a non-zero exit code. Seeds: the regression corpus (tests/fuzz/corpus) and the
bundled test fixtures. The sanitizers' runtime (atheris' asan_with_fuzzer.so, compatible with gcc's
instrumentation) is preloaded by re-executing this script; libFuzzer's own options are passed through.
"""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def _preload_asan() -> None:
    """Run again with gcc's libasan preloaded (the kernels' sanitizers need their runtime first)."""
    if os.environ.get("KVMTRACE_FUZZ_CHILD"):
        return
    import atheris

    # atheris' ASan+UBSan runtime with libFuzzer in it (gcc's libasan would take the coverage hooks)
    runtime = Path(atheris.path()) / "asan_with_fuzzer.so"
    libasan = str(runtime) if runtime.exists() else subprocess.run(
        ["gcc", "-print-file-name=libasan.so"], capture_output=True, text=True, check=False).stdout.strip()
    env = {**os.environ, "KVMTRACE_FUZZ_CHILD": "1", "KVMTRACE_NATIVE_SANITIZE": "1",
           "LD_PRELOAD": libasan, "ASAN_OPTIONS": "detect_leaks=0:allocator_may_return_null=1:abort_on_error=1",
           "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1", "PYTHONPATH": str(ROOT),
           "KVMTRACE_THREADS": "1"}
    os.execve(sys.executable, [sys.executable, __file__, *sys.argv[1:]], env)


KINDS = ("trace.dat", "trace.txt", "capture.json")


def seeds(folder: Path) -> None:
    """Seed inputs: each kept corpus file and a fixture, prefixed with its kind and an engine byte."""
    folder.mkdir(parents=True, exist_ok=True)
    found = [*ROOT.glob("tests/fuzz/corpus/*/trace.dat"), *ROOT.glob("tests/fuzz/corpus/*/trace.txt"),
             *ROOT.glob("tests/fuzz/corpus/*/capture.json"), ROOT / "tests/fixtures/board-device-irq/trace.dat"]
    for k, path in enumerate(found):
        kind = KINDS.index(path.name)
        data = path.read_bytes()
        if len(data) <= 200_000:
            (folder / f"seed-{k}").write_bytes(bytes([kind, k % 2]) + data)


def main() -> None:
    _preload_asan()
    import atheris

    with atheris.instrument_imports(include=["kvmtrace"]):
        from kvmtrace.capture import Manifest, read_tables
        from kvmtrace.errors import CaptureError
        from kvmtrace.ingest import kernels as native

    native.engine()  # build (sanitized) and load the kernels before fuzzing
    work = Path(tempfile.mkdtemp(prefix="kvmtrace-atheris-"))
    atexit.register(shutil.rmtree, work, True)

    def one_input(data: bytes) -> None:
        if len(data) < 3:
            return
        kind, engine, body = KINDS[data[0] % len(KINDS)], ("native", "numpy")[data[1] % 2], data[2:]
        os.environ["KVMTRACE_ENGINE"] = engine
        path = work / kind
        path.write_bytes(body)
        try:
            if kind == "capture.json":
                Manifest.load(path)
            else:
                read_tables(path)
        except CaptureError as exc:
            assert "\n" not in exc.one_line()

    args = list(sys.argv)
    corpus = [a for a in args[1:] if not a.startswith("-")]
    if not corpus:  # a work folder seeded with the project's inputs
        seed_dir = work / "corpus"
        seeds(seed_dir)
        args.append(str(seed_dir))
    for flag, value in (("-max_len", "200000"), ("-rss_limit_mb", "4096"), ("-timeout", "60"),
                        ("-malloc_limit_mb", "4096")):
        if not any(a.startswith(flag + "=") for a in args):
            args.append(f"{flag}={value}")
    atheris.Setup(args, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
