"""Bulk event encoding for the synthesiser: numpy payloads, numpy page packing, the stdlib writer.

The simulator hands over *batches*: one event type, arrays of timestamps, CPUs, pids and field
values (scalars broadcast). :class:`EventSink` groups them per CPU, sorts them by time, lays them
out in kernel ring-buffer pages (event headers, TIME_EXTEND when a delta does not fit 27 bits,
tail padding) with numpy, and appends the pages to :class:`TraceDatWriter` with
``add_raw_pages``. Field offsets come from the format files, never from hard-coded layouts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kvmtrace.fileformats.formats import EventFormat, parse_format
from kvmtrace.fileformats.tracedat import TS_MASK, TYPE_PADDING, TYPE_TIME_EXTEND
from kvmtrace.fileformats.writer import EventEncoder, TraceDatWriter

DATA = Path(__file__).resolve().parents[1] / "data" / "formats"
EXTRA_ARM64 = Path(__file__).resolve().parent / "formats_arm64"
SYSTEM_PREFIXES = ("irq_", "sched_", "ftrace_", "timer_")


def load_formats(arch: str) -> dict[str, tuple[str, str]]:
    """event name -> (system, format text) for ``arm64`` (Linux 6.1) or ``arm32`` (Linux 3.9)."""
    dirs = [DATA / "arm64-6.1", EXTRA_ARM64] if arch == "arm64" else [DATA / "arm32-3.9"]
    out: dict[str, tuple[str, str]] = {}
    for d in dirs:
        for p in sorted(d.glob("*.format")):
            system = next((pre[:-1] for pre in SYSTEM_PREFIXES if p.stem.startswith(pre)), "kvm")
            text = p.read_text()
            fmt = parse_format(text, system)
            out[fmt.name] = (system, text)
    return out


def _dtype_for(fmt: EventFormat, size: int) -> np.dtype[Any]:
    names, formats, offsets = [], [], []
    for f in fmt.fields:
        if f.kind == "tail" or f.size == 0:
            continue
        if f.kind == "array":
            code: Any = f"S{f.size}"
        elif f.kind in ("data_loc", "rel_loc"):
            code = "<u4"
        else:
            code = ("<i" if f.signed else "<u") + str(f.size)
        names.append(f.name)
        formats.append(code)
        offsets.append(f.offset)
    return np.dtype({"names": names, "formats": formats, "offsets": offsets, "itemsize": size})


@dataclass
class _Group:
    """Events of one CPU that share one payload layout (event type plus string variant)."""

    ts: list[np.ndarray] = field(default_factory=list)
    order: list[np.ndarray] = field(default_factory=list)
    payload: list[np.ndarray] = field(default_factory=list)  # (n, words) uint32


class EventSink:
    """Collects event batches for one chunk of simulated time, then packs and writes them."""

    def __init__(self, writer: TraceDatWriter, formats: dict[str, tuple[str, str]],
                 keep: bool = False, pack: bool = True) -> None:
        self.writer = writer
        self.formats = {name: parse_format(text, system) for name, (system, text) in formats.items()}
        self.long_size = writer.long_size
        self.page_size = writer.page_size
        self._groups: dict[tuple[int, str, str], _Group] = {}
        self._variant_cache: dict[tuple[str, str], tuple[bytes, int, int]] = {}
        self.counts: dict[str, int] = {}
        self.keep = keep
        self.pack = pack  # False: only count the events (a dry run)
        self.kept: list[dict[str, Any]] = []  # with keep=True: what was emitted, for tests
        self.tmap: Any = None  # simulated (machine) time -> trace time, when the run has stalls

    # -- input
    def add(self, name: str, ts: Any, cpu: Any, common_pid: Any, order: int = 0, text: str | None = None,
            **values: Any) -> None:
        """Add events of type ``name``. ``text`` fills the format's one string field
        (``__data_loc`` or trailing ``buf[]``); ``values`` fill the other fields (arrays or scalars)."""
        ts = np.asarray(ts, dtype=np.int64)
        n = ts.shape[0] if ts.ndim else 1
        ts = np.broadcast_to(ts, (n,))
        if n == 0:
            return
        if self.tmap is not None:
            ts = self.tmap(ts)
        fmt = self.formats[name]
        cpus = np.broadcast_to(np.asarray(cpu, dtype=np.int64), (n,))
        prefix, size, loc_at = self._variant(name, text or "")
        dt = _dtype_for(fmt, size)
        rec = np.zeros(n, dtype=dt)
        rec["common_type"] = fmt.id
        rec["common_pid"] = common_pid
        for key, val in values.items():
            rec[key] = val
        raw = rec.view(np.uint8).reshape(n, size).copy()
        if prefix:
            raw[:, loc_at:] = np.frombuffer(prefix, np.uint8)[loc_at:]
        words = raw.view("<u4")
        self.counts[name] = self.counts.get(name, 0) + n
        order_arr = np.full(n, order, np.int8)
        one_cpu = np.ndim(cpu) == 0
        for c in ([int(cpu)] if one_cpu else np.unique(cpus).tolist()):
            sel = slice(None) if one_cpu else cpus == c
            g = self._groups.setdefault((c, name, text or ""), _Group())
            g.ts.append(ts[sel])
            g.order.append(order_arr[sel])
            g.payload.append(words[sel])
        if self.keep:
            self.kept.append({"name": name, "ts": ts.copy(), "cpu": cpus.copy(),
                              "pid": np.broadcast_to(np.asarray(common_pid, np.int64), (n,)).copy(),
                              "text": text, "values": {k: np.broadcast_to(np.asarray(v), (n,)).copy()
                                                       for k, v in values.items()}})

    def _variant(self, name: str, text: str) -> tuple[bytes, int, int]:
        """(template bytes for the string part, padded record size, where string bytes start)."""
        key = (name, text)
        hit = self._variant_cache.get(key)
        if hit is not None:
            return hit
        fmt = self.formats[name]
        has_string = any(f.kind in ("data_loc", "rel_loc", "tail") for f in fmt.fields)
        if has_string:
            template = EventEncoder(fmt).encode({"common_type": 0, _string_field(fmt): text})
            # keep only the string-bearing part: data_loc word(s) and the bytes after the fixed part
            loc_at = min(f.offset for f in fmt.fields if f.kind in ("data_loc", "rel_loc", "tail"))
            size = (len(template) + 3) & ~3
            template = template.ljust(size, b"\0")
            out = (template, size, loc_at)
        else:
            size = max(4, (fmt.fixed_size + 3) & ~3)
            out = (b"", size, size)
        if size > 112:
            raise ValueError(f"{name}: payload of {size} bytes needs a length word; keep it short")
        self._variant_cache[key] = out
        return out

    # -- output
    def flush(self) -> None:
        """Pack everything collected so far into pages and hand them to the writer."""
        if not self.pack:
            self._groups.clear()
            return
        by_cpu: dict[int, list[tuple[str, _Group]]] = {}
        for (cpu, name, _text), g in self._groups.items():
            by_cpu.setdefault(cpu, []).append((name, g))
        for cpu in sorted(by_cpu):
            pages = self._pack(by_cpu[cpu])
            if pages.size:
                self.writer.add_raw_pages(cpu, pages.tobytes())
        self._groups.clear()

    def _pack(self, groups: list[tuple[str, _Group]]) -> np.ndarray:
        """One CPU's events (grouped by payload layout) as ring-buffer pages, in time order."""
        ts, nwords, inv, bounds, words = _merge_groups(groups)
        delta = np.empty(ts.shape[0], np.int64)
        delta[0] = 0
        np.subtract(ts[1:], ts[:-1], out=delta[1:])
        start_arr, ext, csum = self._page_starts(delta, nwords)
        delta[start_arr] = 0  # the first event of a page: its time is the page's
        first = np.zeros(ts.shape[0], bool)
        first[start_arr] = True
        page_of = np.cumsum(first) - 1
        hdr = 8 + self.long_size
        pos = csum[:-1] - csum[start_arr][page_of] + hdr + page_of * self.page_size  # byte offset
        buf = self._page_headers(ts, start_arr, csum)
        wpos = pos // 4
        e = np.flatnonzero(ext)
        buf[wpos[e]] = (((delta[e] & TS_MASK) << 5) | TYPE_TIME_EXTEND).astype(np.uint32)
        buf[wpos[e] + 1] = (delta[e] >> 27).astype(np.uint32)
        hword = wpos + 2 * ext
        d = np.where(ext, 0, delta)
        buf[hword] = ((d << 5) | nwords).astype(np.uint32)
        for gi, w in enumerate(words):
            at = hword[inv[bounds[gi]:bounds[gi + 1]]] + 1
            buf[at[:, None] + np.arange(w.shape[1])] = w
        return buf.view(np.uint8)

    def _page_starts(self, delta: np.ndarray, nwords: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Cut the events into pages: (index of each page's first event, TIME_EXTEND needed per event,
        cumulative event bytes). A page's first event needs no TIME_EXTEND (the page header has its time)."""
        n = delta.shape[0]
        ext = delta > TS_MASK
        size = 4 + 4 * nwords + 8 * ext
        cap = self.page_size - 8 - self.long_size
        csum = np.concatenate(([0], np.cumsum(size)))
        starts = []
        i = 0
        find = csum.searchsorted
        while i < n:
            starts.append(i)
            j = int(find(csum[i] + cap + (8 if ext[i] else 0), "right")) - 1
            i = j if j > i else i + 1
        start_arr = np.array(starts, np.int64)
        ext[start_arr] = False
        size = 4 + 4 * nwords + 8 * ext
        return start_arr, ext, np.concatenate(([0], np.cumsum(size)))

    def _page_headers(self, ts: np.ndarray, start_arr: np.ndarray, csum: np.ndarray) -> np.ndarray:
        """The page buffer (uint32 words) with each page's header (timestamp, commit) and the padding
        event after its data, as the kernel leaves it."""
        n, npages = ts.shape[0], start_arr.shape[0]
        hdr = 8 + self.long_size
        cap = self.page_size - hdr
        buf = np.zeros(npages * self.page_size // 4, np.uint32)
        ends = np.append(start_arr[1:], n)
        used = csum[ends] - csum[start_arr]
        page_words = np.arange(npages, dtype=np.int64) * (self.page_size // 4)
        page_ts = ts[start_arr]
        buf[page_words] = (page_ts & 0xFFFFFFFF).astype(np.uint32)
        buf[page_words + 1] = (page_ts >> 32).astype(np.uint32)
        buf[page_words + 2] = used.astype(np.uint32)
        if self.long_size == 8:
            buf[page_words + 3] = 0
        space = cap - used
        pad_at = (page_words * 4 + hdr + used) // 4
        big = space >= 8
        buf[pad_at[big]] = (1 << 5) | TYPE_PADDING
        buf[pad_at[big] + 1] = (space[big] - 4).astype(np.uint32)
        small = (space >= 4) & ~big
        buf[pad_at[small]] = TYPE_PADDING
        return buf


def _merge_groups(groups: list[tuple[str, _Group]]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray,
                                                             list[np.ndarray]]:
    """Merge one CPU's groups by time, then ``order``: (sorted timestamps, payload words per sorted event,
    sorted position of each event by group, group bounds in that numbering, payload words per group)."""
    ts_parts, order_parts, words = [], [], []
    for _name, g in groups:
        ts_parts.append(np.concatenate(g.ts))
        order_parts.append(np.concatenate(g.order))
        words.append(np.concatenate(g.payload))
    counts = np.array([t.shape[0] for t in ts_parts], np.int64)
    bounds = np.concatenate(([0], np.cumsum(counts)))
    ts = np.concatenate(ts_parts)
    order = np.concatenate(order_parts)
    # by time, then order; stable (timsort: the groups are sorted runs already)
    perm = np.argsort((ts << 4) | order, kind="stable")
    ts = ts[perm]
    n = ts.shape[0]
    inv = np.empty(n, np.int64)  # sorted position of each event, by group
    inv[perm] = np.arange(n, dtype=np.int64)
    nwords = np.repeat(np.array([w.shape[1] for w in words], np.int64), counts)[perm]
    return ts, nwords, inv, bounds, words


def _string_field(fmt: EventFormat) -> str:
    for f in fmt.fields:
        if f.kind in ("data_loc", "rel_loc", "tail"):
            return f.name
    raise ValueError(f"{fmt.name} has no string field")


def comm_bytes(comm: str) -> bytes:
    """A task name as the kernel stores it in a 16-byte comm (15 characters and a NUL)."""
    return comm.encode()[:15]
