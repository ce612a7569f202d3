"""Walk ring-buffer pages into record arrays, all pages of a CPU at once (numpy lockstep).

Ring-buffer pages are independent: each starts with a u64 timestamp and a commit word (the
kernel's long: 8 bytes, or 4 on 32-bit kernels) whose low 27 bits give the data length and
whose bits 31/30 flag missed events (and that their count is stored after the data). Records
follow: a u32 header with a 5-bit ``type_len`` and a 27-bit time delta, then the payload.
Instead of walking one page after another, every step here advances one record in every
page still active, so the number of Python-level steps is the longest page's record count.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from kvmtrace.fileformats.tracedat import (  # the ring-buffer constants, kept in one place
    COMMIT_MASK,
    TYPE_PADDING,
    TYPE_TIME_EXTEND,
    TYPE_TIME_STAMP,
)
from kvmtrace.fileformats.tracedat import RB_MISSED_EVENTS as MISSED_EVENTS
from kvmtrace.fileformats.tracedat import RB_MISSED_STORED as MISSED_STORED
from kvmtrace.fileformats.tracedat import TS_BITS as TS_SHIFT
from kvmtrace.ingest import kernels
from kvmtrace.ingest.tracedat import native


@dataclass
class BadPage:
    """A page whose records stop making sense at some point; what follows in it is skipped."""

    page: int
    data_offset: int  # byte offset inside the page's data where decoding stopped
    reason: str


@dataclass
class PageRecords:
    """Data records of one CPU, in stream order."""

    ts: np.ndarray  # int64 raw ring-buffer time (before trace-cmd's corrections)
    payload: np.ndarray  # int64 offset of each payload in the CPU's byte array
    length: np.ndarray  # int16 payload length in bytes (a record fits in a page)
    lost_per_page: np.ndarray  # int64 missed-event count stored in page headers (0 if none)
    lost_flag_pages: np.ndarray  # bool: page flagged missed events without a stored count
    bad_pages: list[BadPage] = field(default_factory=list)
    # the common header of each record (type, flags, preempt, pid), when the native walk was asked
    header: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None = None


def walk_pages(data: np.ndarray, page_size: int, commit_size: int, data_offset: int,
               big_endian: bool, blob: tuple[np.ndarray, int] | None = None) -> PageRecords:
    """Decode the record framing of every page of one CPU's data (no payload decoding).

    ``blob``: the whole capture's bytes and where ``data`` starts in them; the native walk then
    also keeps each record's common header (type, flags, preempt, pid), read while in cache."""
    n_pages = len(data) // page_size
    e = ">" if big_endian else "<"
    if n_pages == 0:
        z = np.zeros(0, np.int64)
        return PageRecords(z, z, z.astype(np.int16), z, z.astype(bool))
    pages = data[: n_pages * page_size].reshape(n_pages, page_size)
    page_ts = pages[:, 0:8].copy().view(e + "u8").ravel().astype(np.int64)
    commit_word = pages[:, 8:8 + commit_size].copy().view(f"{e}u{commit_size}").ravel().astype(np.uint64)
    flags = commit_word & np.uint64(0xFFFFFFFF)
    size = (commit_word & np.uint64(COMMIT_MASK)).astype(np.int64)
    bad: list[BadPage] = []
    max_data = page_size - data_offset
    oversize = size > max_data
    for p in np.flatnonzero(oversize):
        bad.append(BadPage(int(p), 0, f"commit length {int(size[p])} exceeds the page's "
                                      f"{max_data} data bytes"))
    size[oversize] = 0
    missed = (flags & np.uint64(MISSED_EVENTS)) != 0
    stored = missed & ((flags & np.uint64(MISSED_STORED)) != 0)
    lost_per_page, unusable = _stored_missed_counts(pages, size, stored, data_offset, commit_size, e)
    lib = kernels.library()
    header = None
    if lib is not None and n_pages * page_size < 1 << 32:
        whole, start = blob if blob is not None else (data, 0)
        walked = native.walk(lib, whole, start, n_pages, page_size, data_offset, big_endian, size, page_ts,
                                  blob is not None)
        ts, payload, length, header = walked.ts, walked.payload, walked.length, walked.header
        bad.extend(BadPage(pg, pos, _broken_reason(pos, type_len, rec_len, int(size[pg])))
                   for pg, pos, type_len, rec_len in walked.broken)
    else:
        words = data[: n_pages * page_size].view(e + "u4")
        walker = _Walker(words, page_size, data_offset, size, page_ts, big_endian)
        walker.run()
        bad.extend(walker.bad_pages)
        ts, payload, length = walker.records()
    return PageRecords(
        ts=ts, payload=payload, length=length, lost_per_page=lost_per_page,
        lost_flag_pages=(missed & ~stored) | unusable, bad_pages=sorted(bad, key=lambda b: b.page), header=header,
    )


def _broken_reason(pos: int, type_len: int, rec_len: int, committed: int) -> str:
    return (f"record at data byte {pos} (type_len {type_len}, length {rec_len}) runs past the page's "
            f"{committed} committed bytes")


def _stored_missed_counts(pages: np.ndarray, size: np.ndarray, stored: np.ndarray, data_offset: int,
                          long_size: int, e: str) -> tuple[np.ndarray, np.ndarray]:
    """The missed-event counts stored after the data of the pages ``stored``, and the pages whose
    count is not there or not plausible (it would not fit 63 bits): those count as flagged only."""
    counts = np.zeros(len(size), np.int64)
    unusable = np.zeros(len(size), bool)
    for p in np.flatnonzero(stored):
        start = data_offset + int(size[p])
        value = int.from_bytes(pages[p, start:start + long_size].tobytes(), "big" if e == ">" else "little")
        if start + long_size <= pages.shape[1] and value < 1 << 63:
            counts[p] = value
        else:
            unusable[p] = True
    return counts, unusable


class _Walker:
    """Lockstep walk: one record per active page per step, timestamps kept running per page.

    Step ``k`` reads record ``k`` of every page still active, so a record's place in its CPU's
    stream is ``first_record_of_page + k``: no per-step bookkeeping beyond the state arrays.
    """

    def __init__(self, words: np.ndarray, page_size: int, data_offset: int, size: np.ndarray,
                 page_ts: np.ndarray, big_endian: bool) -> None:
        self.words = words
        self.n_words = len(words)
        self.page_size = page_size
        self.data_offset = data_offset
        self.size = size
        self.page_ts = page_ts
        self.big_endian = big_endian
        self.steps: list[tuple[Any, ...]] = []
        self.records_per_page = np.zeros(len(size), np.int64)
        self.any_special = False
        self.bad_pages: list[BadPage] = []
        # byte addresses fit 32 bits for data under 4 GiB: half the memory for every address array
        self.addr_type = np.uint32 if len(words) * 4 < 1 << 32 else np.int64

    def run(self) -> None:
        active = np.flatnonzero(self.size > 0).astype(np.int32)
        base = active.astype(np.int64) * self.page_size + self.data_offset
        state = _State(active, base, self.page_ts[active].copy(), base + self.size[active])
        step = 0
        while len(state.page):
            state = self._step(state, step)
            step += 1

    def _step(self, st: _State, step: int) -> _State:
        header = self.words[st.at >> 2]
        if self.big_endian:
            type_len, delta = header >> 27, header & COMMIT_MASK
        else:
            type_len, delta = header & 31, header >> 5
        length = type_len.astype(np.int64) << 2
        special = np.flatnonzero((type_len == 0) | (type_len > 28))
        if len(special):
            self.any_special = True
            delta = delta.astype(np.int64)
            payload = st.at + 4
            self._special(special, st, type_len, delta, length, payload)
            ts = st.ts + delta
            is_abs = special[type_len[special] == TYPE_TIME_STAMP]
            ts[is_abs] = delta[is_abs]
            rec_len = np.where(length < 0, -1, length + 4)
            rec_len[special] = self._special_len
            nxt = st.at + rec_len
            is_data = type_len <= 28
        else:
            payload = st.at + 4
            ts = st.ts + delta
            nxt = payload + length
            is_data = None
        broken = nxt > st.limit
        if len(special):
            broken |= (nxt <= st.at) | ((nxt & 3) != 0)  # a record ends off the 4-byte grid: the page is broken
        any_broken = bool(broken.any())
        if any_broken:
            self._note_broken(st, np.flatnonzero(broken), type_len, nxt - st.at)
            ok = np.flatnonzero(~broken)
            self.steps.append((st.page[ok], step, ts[ok], payload[ok].astype(self.addr_type),
                               length[ok].astype(np.int16), None if is_data is None else is_data[ok]))
        else:
            self.steps.append((st.page, step, ts, payload.astype(self.addr_type), length.astype(np.int16), is_data))
        cont = nxt < st.limit
        if len(special) or any_broken:
            cont &= ~broken
            cont &= ~((type_len == TYPE_PADDING) & (delta == 0))
        if cont.all():
            return _State(st.page, nxt, ts, st.limit)
        done = ~cont
        self.records_per_page[st.page[done]] = step + 1 - broken[done]
        keep = np.flatnonzero(cont)
        return _State(st.page[keep], nxt[keep], ts[keep], st.limit[keep])

    def _special(self, special: np.ndarray, st: _State, type_len: np.ndarray, delta: np.ndarray,
                 length: np.ndarray, payload: np.ndarray) -> None:
        """Fix up the rare records: big data (type 0), padding, time extend and absolute time."""
        at = st.at[special]
        word_after = self.words[np.minimum((at >> 2) + 1, self.n_words - 1)].astype(np.int64)
        tl = type_len[special]
        big, pad, time = tl == 0, tl == TYPE_PADDING, tl >= TYPE_TIME_EXTEND
        big_len = ((word_after - 4) + 3) & ~3
        length[special] = np.where(big, big_len, 0)
        payload[special] = np.where(big, at + 8, payload[special])
        rec = np.where(big, 8 + big_len, 8)
        rec = np.where(pad, 4 + word_after, rec)
        self._special_len = np.where(big & (word_after < 4), -1, rec)
        extended = (word_after << TS_SHIFT) + delta[special]
        msb = st.ts[special] & ~((1 << 59) - 1)
        delta[special] = np.where(time, extended, delta[special])
        delta[special] = np.where(tl == TYPE_TIME_STAMP, extended | msb, delta[special])

    def _note_broken(self, st: _State, idx: np.ndarray, type_len: np.ndarray, rec_len: np.ndarray) -> None:
        for i in idx:
            p = int(st.page[i])
            pos = int(st.at[i] - (p * self.page_size + self.data_offset))
            why = _broken_reason(pos, int(type_len[i]), int(rec_len[i]), int(self.size[p]))
            self.bad_pages.append(BadPage(p, pos, why))

    def records(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """ts, payload, length of every data record in stream (page-major) order."""
        starts = np.concatenate(([0], np.cumsum(self.records_per_page)))[:-1]
        total = int(self.records_per_page.sum())
        ts = np.empty(total, np.int64)
        payload = np.empty(total, self.addr_type)
        length = np.empty(total, np.int16)
        data = np.ones(total, bool) if self.any_special else None
        for page, step, t, p, ln, is_data in self.steps:
            dest = starts[page] + step
            if is_data is not None and data is not None:
                data[dest] = is_data
            ts[dest] = t
            payload[dest] = p
            length[dest] = ln
        self.steps = []
        if data is not None and not data.all():
            return ts[data], payload[data], length[data]
        return ts, payload, length


@dataclass
class _State:
    """Per active page: page number, address of its next record, running time, end of its data."""

    page: np.ndarray
    at: np.ndarray
    ts: np.ndarray
    limit: np.ndarray
