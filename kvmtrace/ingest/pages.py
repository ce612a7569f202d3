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

import numpy as np

TYPE_PADDING = 29
TYPE_TIME_EXTEND = 30
TYPE_TIME_STAMP = 31
COMMIT_MASK = (1 << 27) - 1
MISSED_EVENTS = 1 << 31
MISSED_STORED = 1 << 30
TS_SHIFT = 27


@dataclass
class BadPage:
    """A page whose records stop making sense at some point; what follows in it is skipped."""

    page: int
    data_offset: int  # byte offset inside the page's data where decoding stopped
    reason: str
    records_before: int


@dataclass
class PageRecords:
    """Data records of one CPU, in stream order."""

    ts: np.ndarray  # int64 raw ring-buffer time (before trace-cmd's corrections)
    payload: np.ndarray  # int64 offset of each payload in the CPU's byte array
    length: np.ndarray  # int32 payload length in bytes
    page: np.ndarray  # int32 page number of each record
    lost_per_page: np.ndarray  # int64 missed-event count stored in page headers (0 if none)
    lost_flag_pages: np.ndarray  # bool: page flagged missed events without a stored count
    bad_pages: list[BadPage] = field(default_factory=list)
    empty_pages: int = 0


def walk_pages(data: np.ndarray, page_size: int, commit_size: int, data_offset: int,
               big_endian: bool) -> PageRecords:
    """Decode the record framing of every page of one CPU's data (no payload decoding)."""
    n_pages = len(data) // page_size
    e = ">" if big_endian else "<"
    if n_pages == 0:
        z = np.zeros(0, np.int64)
        return PageRecords(z, z, z.astype(np.int32), z.astype(np.int32), z, z.astype(bool))
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
                                      f"{max_data} data bytes", 0))
    size[oversize] = 0
    missed = (flags & np.uint64(MISSED_EVENTS)) != 0
    stored = missed & ((flags & np.uint64(MISSED_STORED)) != 0)
    lost_per_page = _stored_missed_counts(pages, size, stored, data_offset, commit_size, e)
    words = data[: n_pages * page_size].view(e + "u4")
    walker = _Walker(words, page_size, data_offset, size, big_endian)
    walker.run()
    bad.extend(walker.bad_pages)
    rec = walker.records()
    ts = _timestamps(rec, page_ts)
    is_data = rec["type_len"] <= 28
    lost_flag_pages = missed & ~stored
    return PageRecords(
        ts=ts[is_data], payload=rec["payload"][is_data], length=rec["length"][is_data].astype(np.int32),
        page=rec["page"][is_data].astype(np.int32), lost_per_page=lost_per_page,
        lost_flag_pages=lost_flag_pages, bad_pages=sorted(bad, key=lambda b: b.page),
        empty_pages=int(np.count_nonzero(size == 0)),
    )


def _stored_missed_counts(pages: np.ndarray, size: np.ndarray, stored: np.ndarray, data_offset: int,
                          long_size: int, e: str) -> np.ndarray:
    counts = np.zeros(len(size), np.int64)
    for p in np.flatnonzero(stored):
        start = data_offset + int(size[p])
        if start + long_size <= pages.shape[1]:
            raw = pages[p, start:start + long_size].tobytes()
            counts[p] = int.from_bytes(raw, "big" if e == ">" else "little")
    return counts


class _Walker:
    """Lockstep walk: one record per active page per step."""

    def __init__(self, words: np.ndarray, page_size: int, data_offset: int, size: np.ndarray,
                 big_endian: bool) -> None:
        self.words = words
        self.n_words = len(words)
        self.page_size = page_size
        self.data_offset = data_offset
        self.size = size
        self.big_endian = big_endian
        self.steps: list[tuple[np.ndarray, ...]] = []
        self.count = np.zeros(len(size), np.int64)
        self.bad_pages: list[BadPage] = []

    def run(self) -> None:
        active = np.flatnonzero(self.size > 0)
        pos = np.zeros(len(active), np.int64)  # byte position inside the page's data
        base = active.astype(np.int64) * self.page_size + self.data_offset
        while len(active):
            active, pos, base = self._step(active, pos, base)

    def _step(self, active: np.ndarray, pos: np.ndarray, base: np.ndarray
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        at = base + pos
        word_idx = at >> 2
        header = self.words[word_idx].astype(np.int64)
        nxt = self.words[np.minimum(word_idx + 1, self.n_words - 1)].astype(np.int64)
        if self.big_endian:
            type_len = header >> 27
            delta = header & COMMIT_MASK
        else:
            type_len = header & 31
            delta = header >> 5
        small = (type_len >= 1) & (type_len <= 28)
        is_big = type_len == 0
        is_pad = type_len == TYPE_PADDING
        is_time = type_len >= TYPE_TIME_EXTEND
        length = np.where(small, type_len * 4, 0)
        length = np.where(is_big, ((nxt - 4) + 3) & ~3, length)
        payload_at = np.where(is_big, at + 8, at + 4)
        rec_len = np.where(small, 4 + length, 0)
        rec_len = np.where(is_big, 8 + length, rec_len)
        rec_len = np.where(is_pad, 4 + nxt, rec_len)
        rec_len = np.where(is_time, 8, rec_len)
        delta = np.where(is_time, (nxt << TS_SHIFT) + delta, delta)
        page_size = self.size[active]
        end = pos + rec_len
        broken = (end > page_size) | (is_big & (nxt < 4)) | (rec_len <= 0)
        # a padding record with a zero delta fills the rest of the page
        null_pad = is_pad & (delta == 0)
        ok = ~broken
        if broken.any():
            self._note_broken(active[broken], pos[broken], type_len[broken], rec_len[broken],
                              page_size[broken])
        keep = ok
        self.steps.append((active[keep], self.count[active[keep]], type_len[keep], delta[keep],
                           payload_at[keep], length[keep]))
        self.count[active[keep]] += 1
        cont = ok & ~null_pad & (end < page_size)
        return active[cont], end[cont], base[cont]

    def _note_broken(self, pages: np.ndarray, pos: np.ndarray, type_len: np.ndarray, rec_len: np.ndarray,
                     page_len: np.ndarray) -> None:
        for p, o, t, r, s in zip(pages, pos, type_len, rec_len, page_len, strict=True):
            why = (f"record at data byte {int(o)} (type_len {int(t)}, length {int(r)}) "
                   f"runs past the page's {int(s)} committed bytes")
            self.bad_pages.append(BadPage(int(p), int(o), why, int(self.count[p])))

    def records(self) -> dict[str, np.ndarray]:
        starts = np.concatenate(([0], np.cumsum(self.count)))[:-1]
        total = int(self.count.sum())
        out = {
            "page": np.empty(total, np.int64), "type_len": np.empty(total, np.int64),
            "delta": np.empty(total, np.int64), "payload": np.empty(total, np.int64),
            "length": np.empty(total, np.int64),
        }
        for pages, seq, type_len, delta, payload, length in self.steps:
            dest = starts[pages] + seq
            out["page"][dest] = pages
            out["type_len"][dest] = type_len
            out["delta"][dest] = delta
            out["payload"][dest] = payload
            out["length"][dest] = length
        self.steps = []
        return out


def _timestamps(rec: dict[str, np.ndarray], page_ts: np.ndarray) -> np.ndarray:
    """Running timestamps: page time plus the deltas, reset by absolute time stamps."""
    n = len(rec["page"])
    if n == 0:
        return np.zeros(0, np.int64)
    page = rec["page"]
    is_abs = rec["type_len"] == TYPE_TIME_STAMP
    inc = np.where(is_abs, 0, rec["delta"])
    page_start = np.empty(n, bool)
    page_start[0] = True
    page_start[1:] = page[1:] != page[:-1]
    seg_start = page_start | is_abs
    seg_base = np.where(is_abs, rec["delta"], page_ts[page])
    cs = np.cumsum(inc)
    seg_id = np.cumsum(seg_start) - 1
    starts = np.flatnonzero(seg_start)
    offset_at_start = cs[starts] - inc[starts]
    msb = page_ts[page] & ~((1 << 59) - 1)
    base = np.where(is_abs[starts], seg_base[starts] | msb[starts], seg_base[starts])
    return base[seg_id] + (cs - offset_at_start[seg_id])
