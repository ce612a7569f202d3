"""The native kernels (tracedat/kernels.c, text/kernels.c): built once per machine, loaded with ctypes.

``engine()`` says which engine reads trace.dat files: ``native`` when the kernels are built and
loaded, else ``numpy`` (the same results, 2-4x slower), with the reason. ``KVMTRACE_ENGINE``
chooses: ``auto`` (default), ``native`` (an error if it cannot be built) or ``numpy``.

The library is compiled with ``$CC`` (default ``cc``) into ``$KVMTRACE_NATIVE_DIR`` (default
``$XDG_CACHE_HOME/kvmtrace``, i.e. ``~/.cache/kvmtrace``), named by the hash of its source, so an
edited tracedat/kernels.c is rebuilt and concurrent first uses cannot see a half-written file.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import os
import platform
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np

from kvmtrace.errors import CaptureError

HERE = Path(__file__).parent
SOURCE = HERE / "tracedat" / "kernels.c"
SOURCES = (SOURCE, HERE / "text" / "kernels.c")  # compiled into the one library
ABI_VERSION = 3
_P = ctypes.c_void_p
_I64 = ctypes.c_int64
_I32 = ctypes.c_int32


class NativeUnavailable(CaptureError):
    """KVMTRACE_ENGINE=native but the kernels cannot be built or loaded (one line from the CLI)."""

    def __init__(self, message: str) -> None:
        super().__init__(None, None, message)


@dataclass(frozen=True)
class Engine:
    """Which engine reads trace.dat files, and why."""

    name: str  # "native" or "numpy"
    detail: str  # the library's path, or why numpy is used


def engine() -> Engine:
    choice = os.environ.get("KVMTRACE_ENGINE", "auto").strip().lower() or "auto"
    if choice == "numpy":
        return Engine("numpy", "KVMTRACE_ENGINE=numpy")
    lib, detail = _load()
    if lib is None and choice == "native":
        raise NativeUnavailable(f"KVMTRACE_ENGINE=native, but {detail}")
    return Engine("native" if lib is not None else "numpy", detail)


def library() -> ctypes.CDLL | None:
    """The loaded kernels when the engine is native, else None."""
    return _load()[0] if engine().name == "native" else None


@cache
def _load() -> tuple[ctypes.CDLL | None, str]:
    try:
        path = _build()
        lib = ctypes.CDLL(str(path))
    except (OSError, subprocess.SubprocessError) as exc:
        return None, f"native kernels unavailable ({exc})"
    if lib.kt_abi_version() != ABI_VERSION:
        return None, f"{path}: ABI version {lib.kt_abi_version()}, expected {ABI_VERSION}"
    _declare(lib)
    return lib, str(path)


def _cache_dir() -> Path:
    explicit = os.environ.get("KVMTRACE_NATIVE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "kvmtrace"


SANITIZE_FLAGS = ("-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-fno-omit-frame-pointer", "-g")


def sanitized() -> bool:
    """``KVMTRACE_NATIVE_SANITIZE=1``: the kernels built with AddressSanitizer and UBSan (for fuzzing;
    the process must preload libasan: scripts/fuzz/atheris_readers.py does)."""
    return os.environ.get("KVMTRACE_NATIVE_SANITIZE", "") not in ("", "0")


def _build() -> Path:
    source = b"\0".join(path.name.encode() + b"\0" + path.read_bytes() for path in SOURCES)
    cc = os.environ.get("CC", "cc")
    flags = ["-O1", *SANITIZE_FLAGS, "-DKT_RUNTIME_PRELOADED"] if sanitized() else ["-O2"]
    digest = hashlib.sha256(source + cc.encode() + " ".join(flags).encode()).hexdigest()[:16]
    out_dir = _cache_dir()
    variant = "-asan" if sanitized() else ""
    target = out_dir / f"kvmtrace-native-{digest}-{platform.machine()}{variant}.so"
    if target.exists():
        return target
    out_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=target.name, suffix=".tmp", dir=out_dir)
    os.close(fd)
    try:
        if sanitized():  # compiled instrumented, linked without a runtime: the process preloads one
            objects = [f"{tmp}.{k}.o" for k in range(len(SOURCES))]
            for src, obj in zip(SOURCES, objects, strict=True):
                _run([cc, *flags, "-std=c99", "-fPIC", "-c", "-o", obj, str(src)])
            _run([cc, "-shared", "-o", tmp, *objects])
            for obj in objects:
                os.unlink(obj)
        else:
            _run([cc, *flags, "-std=c99", "-shared", "-fPIC", "-o", tmp, *(str(path) for path in SOURCES)])
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    _drop_stale(out_dir, target)
    return target


STALE_BUILD_S = 3600  # a half-built library older than this was left by a build that died


def _drop_stale(out_dir: Path, target: Path) -> None:
    """Libraries built from other sources (an older or newer kvmtrace) for this machine and variant are
    removed when a new one is built, as the cache removes tables of other reader code; so are the
    leftovers of builds that died. A process that has one loaded keeps its mapping."""
    suffix = target.name.split("-", 3)[3]  # "<machine>[-asan].so"
    now = time.time()
    for path in out_dir.glob("kvmtrace-native-*"):
        stale = path != target and path.name.endswith(suffix)
        dead = path.name.endswith(".tmp") and now - _mtime(path) > STALE_BUILD_S
        if stale or dead:
            with contextlib.suppress(OSError):
                path.unlink()


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return time.time()


def _run(cmd: list[str]) -> None:
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    if res.returncode != 0:
        first = (res.stderr.strip().splitlines() or ["no output"])[0]
        raise OSError(f"{' '.join(cmd)} failed: {first}")


def _declare(lib: ctypes.CDLL) -> None:
    lib.kt_walk.restype = _I64
    lib.kt_walk.argtypes = [_P, *[_I64] * 5, _I32, *[_P] * 9, _I64, _P, _I64, _P]
    lib.kt_merge_scatter.restype = _I32
    lib.kt_merge_scatter.argtypes = [_P]  # a MergeScatter struct (tracedat/native.py)
    lib.kt_type_max_len.restype = None
    lib.kt_type_max_len.argtypes = [_P, _P, _I64, _I64, _P]
    lib.kt_text_fields.restype = _I32
    lib.kt_text_fields.argtypes = [_P, _I64, _P, _P, _I32, *[_P] * 8, _I64, _P]
    lib.kt_text_pack.restype = None
    lib.kt_text_pack.argtypes = [_P, _I64, *[_P] * 4]
    lib.kt_text_layout.restype = None
    lib.kt_text_layout.argtypes = [_P, _I64, _I64, _P, _P, *[_I32] * 5, *[_P] * 3]
    lib.kt_text_modal_codes.restype = _I64
    lib.kt_text_modal_codes.argtypes = [_P, _I64, _P, _P, _I64, _I64, _I64, *[_P] * 3]
    lib.kt_text_modal_fill.restype = _I64
    lib.kt_text_modal_fill.argtypes = [_P, _I64, _I64, *[_P] * 20]
    lib.kt_dynamic_spans.restype = _I64
    lib.kt_dynamic_spans.argtypes = [_P, _I64, _P, _P, _I64, _I64, _I32, _I32, _P, _P]
    lib.kt_gather_spans.restype = None
    lib.kt_gather_spans.argtypes = [_P, _P, _P, _I64, _P]
    lib.kt_text_intern.restype = _I64
    lib.kt_text_intern.argtypes = [_P, _I64, *[_P] * 4]
    lib.kt_text_move.restype = None
    lib.kt_text_move.argtypes = [_P, *[_I64] * 4]
    lib.kt_text_group.restype = None
    lib.kt_text_group.argtypes = [_I64, _P, _I64, *[_P] * 6]
    lib.kt_text_pack_codes.restype = None
    lib.kt_text_pack_codes.argtypes = [_P, _I64, *[_P] * 8]
    lib.kt_text_open_gaps.restype = None
    lib.kt_text_open_gaps.argtypes = [_P, _I64, _I64, _P, _I64]
    lib.kt_text_lines_part.restype = None
    lib.kt_text_lines_part.argtypes = [_P, _I64, _I64, _P, _P, _I32]
    lib.kt_text_count_lines.restype = _I64
    lib.kt_text_count_lines.argtypes = [_P, _I64]
    lib.kt_text_lines.restype = None
    lib.kt_text_lines.argtypes = [_P, _I64, _P, _P]


def ptr(a: np.ndarray | None) -> int | None:
    """The address of an array's data (None for NULL); the array must stay alive during the call."""
    return None if a is None else int(a.ctypes.data)


def pointers(arrays: Sequence[np.ndarray | None]) -> np.ndarray:
    """A C array of pointers to the given arrays' data (NULL for None)."""
    return np.array([0 if a is None else a.ctypes.data for a in arrays] or [0], dtype=np.uintp)


def intern_spans(lib: ctypes.CDLL, buf: np.ndarray, pos: np.ndarray, length: np.ndarray
                 ) -> tuple[np.ndarray, list[bytes]]:
    """kt_text_intern (any reader's bytes): a code per distinct byte string ``buf[pos : pos + length]``,
    numbered in order of first appearance, and those strings. Spans must lie inside ``buf``."""
    pos = np.ascontiguousarray(pos, np.int64)
    length = np.ascontiguousarray(length, np.int64)
    n = pos.size
    codes = np.empty(n, np.int32)
    reps = np.empty(max(n, 1), np.int64)
    count = int(lib.kt_text_intern(ptr(buf), n, ptr(pos), ptr(length), ptr(codes), ptr(reps)))
    if count < 0:
        raise MemoryError("kt_text_intern")
    values = [buf[s:s + k].tobytes() for s, k in zip(pos[reps[:count]].tolist(), length[reps[:count]].tolist(),
                                                     strict=True)]
    return codes, values
