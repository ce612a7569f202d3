"""The native kernels (native.c): built once per machine with the C compiler, loaded with ctypes.

``engine()`` says which engine reads trace.dat files: ``native`` when the kernels are built and
loaded, else ``numpy`` (the same results, 2-4x slower), with the reason. ``KVMTRACE_ENGINE``
chooses: ``auto`` (default), ``native`` (an error if it cannot be built) or ``numpy``.

The library is compiled with ``$CC`` (default ``cc``) into ``$KVMTRACE_NATIVE_DIR`` (default
``$XDG_CACHE_HOME/kvmtrace``, i.e. ``~/.cache/kvmtrace``), named by the hash of its source, so an
edited native.c is rebuilt and concurrent first uses cannot see a half-written file.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import subprocess
import tempfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np

from kvmtrace.errors import CaptureError
from kvmtrace.ingest.fields import is_plain, plain_code, string_width
from kvmtrace.ingest.formats import EventFormat

SOURCE = Path(__file__).with_name("native.c")
ABI_VERSION = 1
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


def _build() -> Path:
    source = SOURCE.read_bytes()
    cc = os.environ.get("CC", "cc")
    digest = hashlib.sha256(source + cc.encode()).hexdigest()[:16]
    out_dir = _cache_dir()
    target = out_dir / f"kvmtrace-native-{digest}-{platform.machine()}.so"
    if target.exists():
        return target
    out_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=target.name, suffix=".tmp", dir=out_dir)
    os.close(fd)
    try:
        cmd = [cc, "-O2", "-std=c99", "-shared", "-fPIC", "-o", tmp, str(SOURCE)]
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
        if res.returncode != 0:
            first = (res.stderr.strip().splitlines() or ["no output"])[0]
            raise OSError(f"{' '.join(cmd)} failed: {first}")
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


def _declare(lib: ctypes.CDLL) -> None:
    lib.kt_walk.restype = _I64
    lib.kt_walk.argtypes = [_P, *[_I64] * 5, _I32, *[_P] * 6, _I64, _P, _I64, _P]
    lib.kt_merge.restype = _I32
    lib.kt_merge.argtypes = [_I32, *[_P] * 4, _I32, *[_P] * 6]
    lib.kt_scatter.restype = None
    lib.kt_scatter.argtypes = [_I64, *[_P] * 6, _I64, _P, _I32, *[_P] * 13]


def ptr(a: np.ndarray | None) -> int | None:
    """The address of an array's data (None for NULL); the array must stay alive during the call."""
    return None if a is None else int(a.ctypes.data)


def pointers(arrays: Sequence[np.ndarray | None]) -> np.ndarray:
    """A C array of pointers to the given arrays' data (NULL for None)."""
    return np.array([0 if a is None else a.ctypes.data for a in arrays] or [0], dtype=np.uintp)


def walk(lib: ctypes.CDLL, blob: np.ndarray, start: int, n_pages: int, page_size: int, data_offset: int,
         big_endian: bool, size: np.ndarray, page_ts: np.ndarray, header: bool
         ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None, list[tuple[int, int, int, int]]]:
    """kt_walk on one CPU's pages (at ``start`` in ``blob``): ts, payload address (from ``start``),
    length and, with ``header``, the 8 raw common-header bytes of each data record (uint64), and
    the broken records (page, offset in its data, type_len, record length).

    The outputs are sized for the most records the pages could hold (8 bytes each); the part
    never written is never touched, so it costs address space, not memory."""
    blob = np.ascontiguousarray(blob)
    capacity = n_pages * ((page_size - data_offset) // 8 + 1)
    ts = np.empty(capacity, np.int64)
    payload = np.empty(capacity, np.uint32)
    length = np.empty(capacity, np.int16)
    raw_header = np.empty(capacity, np.uint64) if header else None
    broken = np.zeros((n_pages, 4), np.int64)
    n_broken = np.zeros(1, np.int64)
    size = np.ascontiguousarray(size, np.int64)
    page_ts = np.ascontiguousarray(page_ts, np.int64)
    n = lib.kt_walk(ptr(blob), len(blob), start, n_pages, page_size, data_offset, int(big_endian), ptr(size),
                    ptr(page_ts), ptr(ts), ptr(payload), ptr(length), ptr(raw_header), capacity, ptr(broken),
                    n_pages, ptr(n_broken))
    if n < 0:
        raise AssertionError("kt_walk: record capacity exceeded")  # impossible: a record takes 8 bytes at least
    bad = [(int(pg), int(pos), int(tl), int(rec)) for pg, pos, tl, rec in broken[: int(n_broken[0])]]
    return ts[:n], payload[:n], length[:n], None if raw_header is None else raw_header[:n], bad


def merge(lib: ctypes.CDLL, ts: list[np.ndarray], columns: list[list[np.ndarray]], parts: int = 1
          ) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]] | None:
    """kt_merge: streams (each in time order) in global time order, ties to the lower stream.
    ``columns[c][s]`` is column c of stream s. Returns the merged times, each record's stream
    number (uint16) and the merged columns; None when a stream is not in time order.

    With ``parts`` > 1 the time range is cut at quantiles of the longest stream and the parts are
    merged on parallel threads (records with equal times stay in one part, so the order is the same)."""
    k = len(ts)
    if k > 65535:
        raise ValueError(f"kt_merge: {k} streams, at most 65535")
    ts = [np.ascontiguousarray(t, np.int64) for t in ts]
    columns = [[np.ascontiguousarray(part) for part in col] for col in columns]
    n = sum(len(t) for t in ts)
    out_ts, out_stream = np.empty(n, np.int64), np.empty(n, np.uint16)
    out = [np.empty(n, col[0].dtype) for col in columns]
    cuts = _cuts(ts, parts)
    if cuts is None:
        return None
    starts = cuts.sum(axis=1)

    def run(p: int) -> int:
        lo, hi, at = cuts[p], cuts[p + 1], int(starts[p])
        end = int(starts[p + 1])
        ts_parts = [t[a:b] for t, a, b in zip(ts, lo, hi, strict=True)]
        src = [col[s][lo[s]:hi[s]] for s in range(k) for col in columns]
        dst = [o[at:end] for o in out]
        counts = np.array([len(t) for t in ts_parts] or [0], np.int64)
        sizes = np.array([o.itemsize for o in out] or [0], np.int32)
        work = (np.empty(max(k, 1), np.int32), np.empty(max(k, 1), np.int64), np.empty(max(k, 1), np.int64))
        ts_ptrs, src_ptrs, dst_ptrs = pointers(ts_parts), pointers(src), pointers(dst)  # alive during the call
        return int(lib.kt_merge(k, ptr(ts_ptrs), ptr(counts), ptr(out_ts[at:end]), ptr(out_stream[at:end]),
                                len(columns), ptr(sizes), ptr(src_ptrs), ptr(dst_ptrs), *(ptr(w) for w in work)))

    if len(cuts) > 2:
        with ThreadPoolExecutor(max_workers=len(cuts) - 1) as pool:
            codes = list(pool.map(run, range(len(cuts) - 1)))
    else:
        codes = [run(0)]
    if any(c != 0 for c in codes):
        return None
    return out_ts, out_stream, out


def _cuts(ts: list[np.ndarray], parts: int) -> np.ndarray | None:
    """(parts + 1, streams) positions where each stream is cut: at the same times in every stream,
    taken at quantiles of the longest one. None when a stream is visibly not in time order at a cut
    (kt_merge checks the rest)."""
    lens = np.array([len(t) for t in ts], np.int64)
    longest = ts[int(lens.argmax())] if len(ts) else np.zeros(0, np.int64)
    pivots = sorted({int(longest[len(longest) * i // parts]) for i in range(1, parts)} if len(longest) else set())
    rows = [np.zeros(len(ts), np.int64)]
    for pivot in pivots:
        rows.append(np.array([np.searchsorted(t, pivot, side="left") for t in ts], np.int64))
    rows.append(lens)
    cuts = np.array(rows)
    for t, column in zip(ts, cuts.T, strict=True):
        for c in column[1:-1]:
            if 0 < c < len(t) and t[c - 1] > t[c]:
                return None
    if (np.diff(cuts, axis=0) < 0).any():
        return None
    return cuts


@dataclass
class TypeColumns:
    """One event type's rows as kt_scatter fills them, in global order."""

    fmt: EventFormat
    idx: np.ndarray  # uint32 row in the common table
    ts: np.ndarray
    cpu: np.ndarray
    pid: np.ndarray
    addr: np.ndarray | None  # uint32 payload address, when some field is not plain (strings, arrays)
    raw: dict[str, np.ndarray]  # plain field -> raw values (file byte order; char arrays (n, width) uint8)


def scatter(lib: ctypes.CDLL, type_id: np.ndarray, addr: np.ndarray, ts: np.ndarray, cpu: np.ndarray,
            pid: np.ndarray, blob: np.ndarray, endian: str, types: list[tuple[int, EventFormat, int]]
            ) -> list[TypeColumns]:
    """kt_scatter: every event of the given (type id, format, count) types copied into its type's
    key columns and plain fields (fields.is_plain), in one pass over the common arrays."""
    out = [_allocate(fmt, count, endian) for _tid, fmt, count in types]
    lut = np.full(int(type_id.max(initial=0)) + 1, -1, np.int32)
    for slot, (tid, _fmt, _count) in enumerate(types):
        if tid < len(lut):
            lut[tid] = slot
    fields = [(slot, f, col.raw[f.name]) for slot, col in enumerate(out) for f in col.fmt.payload_fields
              if f.name in col.raw]
    first = np.zeros(max(len(out), 1), np.int32)
    count = np.zeros(max(len(out), 1), np.int32)
    for slot, _f, _dst in fields:
        count[slot] += 1
    first[1:len(out)] = np.cumsum(count)[: len(out) - 1]
    rec_size = np.array([max((f.offset + f.size for f in c.fmt.payload_fields if f.name in c.raw), default=0)
                         for c in out] or [0], np.int64)
    f_offset = np.array([f.offset for _s, f, _d in fields] or [0], np.int32)
    f_size = np.array([f.size for _s, f, _d in fields] or [0], np.int32)
    f_stride = np.array([dst.strides[0] for _s, _f, dst in fields] or [0], np.int32)
    f_dst = pointers([dst for _s, _f, dst in fields])
    cursor = np.zeros(max(len(out), 1), np.int64)
    keys = [pointers([getattr(c, k) for c in out]) for k in ("idx", "ts", "cpu", "pid", "addr")]
    arrays = [np.ascontiguousarray(a) for a in (type_id, addr, ts, cpu, pid, blob)]
    lib.kt_scatter(len(type_id), *(ptr(a) for a in arrays), len(blob), ptr(lut), len(lut), ptr(cursor),
                   *(ptr(k) for k in keys), ptr(rec_size), ptr(first), ptr(count), ptr(f_offset), ptr(f_size),
                   ptr(f_stride), ptr(f_dst))
    return out


def _allocate(fmt: EventFormat, n: int, endian: str) -> TypeColumns:
    raw = {}
    for f in fmt.payload_fields:
        if is_plain(f):
            raw[f.name] = (np.zeros((n, string_width(f)), np.uint8) if f.is_string
                           else np.empty(n, np.dtype(plain_code(f, endian))))
    needs_addr = len(raw) < len(fmt.payload_fields)
    return TypeColumns(fmt, np.empty(n, np.uint32), np.empty(n, np.int64), np.empty(n, np.int32),
                       np.empty(n, np.int32), np.empty(n, np.uint32) if needs_addr else None, raw)
