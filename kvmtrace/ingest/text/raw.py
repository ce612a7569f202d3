"""``-R`` payloads (``k1=v1 k2=v2 ...``) split and read with 8-byte words (SWAR), no per-line Python.

Every read is an unaligned little-endian word ending at a known position (``text.word_before``): the
key names right before each ``=``, and the values right-aligned at their end. A value is read here
only in the plain forms ``' '* digits``, ``' '* 0x hexdigits`` and (hex fields) ``' '* hexdigits``;
``ok`` is False for every other value, which the caller reads with the exact polars expression.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kvmtrace.ingest.text.bytetext import I64, U64, WHITESPACE, ByteText, Mask, Parsed, _swar8

ONES = 0x0101010101010101
ALL = np.uint64((1 << 64) - 1)
ZEROS = np.uint64(0x30 * ONES)  # '0' in every byte
HI = np.uint64(0xF0 * ONES)
LO = np.uint64(0x0F * ONES)
B7 = np.uint64(0x80 * ONES)


@dataclass
class Spans:
    """Per field of one event type, the byte span of its value in each line."""

    starts: list[I64]
    ends: list[I64]


def words_before(text: ByteText, end: I64) -> U64:
    """The 8 bytes before ``end`` (end >= 8) as little-endian words."""
    return text.words[end - 8]


def name_before(text: ByteText, end: I64, name: bytes) -> Mask:
    """Where the bytes right before ``end`` are ``name``."""
    size = len(name)
    ok = end >= max(size, 8)
    safe = np.where(ok, end, 8)
    pos = size
    chunk_end = 0
    while pos > 0:
        take = min(8, pos)
        part = name[pos - take : pos]
        word = words_before(text, np.maximum(safe - chunk_end, 8))
        want = int.from_bytes(part, "little") << (8 * (8 - take))
        shift = np.uint64(8 * (8 - take))
        ok &= (word >> shift) == np.uint64(want >> (8 * (8 - take)))
        pos -= take
        chunk_end += take
    return ok


def split(
    text: ByteText, eqs: I64, first: I64, ps: I64, pe: I64, keys: list[str]
) -> Spans | bool:
    """Value spans of ``k1=v1 k2=v2 ...`` payloads, split as the lazy -R regex splits them.

    The j-th key's ``=`` is the j-th ``=`` of the payload (``first``: index in ``eqs`` of the first
    ``=`` at or after ``ps``); each must sit right after its key (the first at the payload start, the
    others after a space). False when some line surely does not match the regex (it does not start
    with ``k1=`` or has fewer ``=`` than keys), True when unsure.
    """
    count = len(keys)
    if count == 0 or ps.size == 0:
        return True
    if int(first.max()) + count - 1 >= eqs.size:
        return False
    eq = [eqs[first + j] for j in range(count)]
    if bool((eq[-1] >= pe).any()):
        return False
    buf = text.buf
    raw = [k.encode() for k in keys]
    head_ok = (eq[0] == ps + len(raw[0])) & name_before(text, eq[0], raw[0])
    if not bool(head_ok.all()):
        # fields strips plugin garbage ("CAN'T FIND FIELD", "<CANT ...", "[FAILED ...") first
        return bool(np.isin(buf[ps[~head_ok]], np.frombuffer(b"C<[", dtype=np.uint8)).any())
    for j in range(1, count):
        if not bool(name_before(text, eq[j], b" " + raw[j]).all()):
            return True
    starts = [e + 1 for e in eq]
    ends = [eq[j + 1] - len(raw[j + 1]) - 1 for j in range(count - 1)]
    last = pe.copy()
    while True:  # the last value loses trailing whitespace (``\\s*$``)
        trail = (last > starts[-1]) & WHITESPACE[buf[np.maximum(last - 1, 0)]]
        if not bool(trail.any()):
            break
        last = last - trail
    ends.append(last)
    if any(bool((e < s).any()) for s, e in zip(starts, ends, strict=True)):
        return True
    return Spans(starts, ends)


def parse_ints(text: ByteText, vs: I64, ve: I64, hex_default: bool) -> Parsed:
    """``' '* '-'? ('0x')? digits`` in [vs, ve): magnitude, sign, and where it was read.

    Hex when the text has 0x or hex_default (as fields.parse_int); at most 16 hex / 19 decimal
    digits. Values of 1-8 plain digits (most of them) take a short way; the others the full one.
    """
    length = ve - vs
    if not vs.size or int(length.max()) > 8 or int(ve.min()) < 8:
        return _parse_ints(text, vs, ve, hex_default)
    short = _short(text, vs, ve, hex_default, signs=False)
    value, negative, ok = short.value, short.negative, short.ok
    other = np.flatnonzero(~ok)
    if other.size:  # "-1", " 12": the short way with signs and spaces, then the full one
        rest = _short(text, vs[other], ve[other], hex_default, signs=True)
        bad = np.flatnonzero(~rest.ok)
        if bad.size:
            full = _parse_ints(text, vs[other[bad]], ve[other[bad]], hex_default)
            rest.value[bad], rest.negative[bad], rest.ok[bad] = full.value, full.negative, full.ok
        value[other], negative[other], ok[other] = rest.value, rest.negative, rest.ok
    return Parsed(value, negative & ok, ok)


def _short(text: ByteText, vs: I64, ve: I64, hex_default: bool, signs: bool) -> Parsed:
    """Values of 1-8 bytes (ve >= 8): plain digits, or with ``signs`` also ``' '* '-'? digits``."""
    length = ve - vs
    word = text.words[ve - 8]
    inside = np.clip(length, 0, 8).astype(np.uint64)
    keep = _high_bytes(inside)
    word = (word & keep) | (ZEROS & ~keep)
    negative = np.zeros(vs.size, dtype=bool)
    plain = length >= 1  # and "0x..": the full way
    if signs:  # a leading '-' reads as '0' (the sign noted), leading spaces too
        shift = np.uint64(8) * (np.uint64(8) - inside)
        negative = (((word >> shift) & np.uint64(0xFF)) == 45) & (length >= 2)
        word += negative.astype(np.uint64) * np.uint64(3) << shift
        spaces = _zero_bytes(word ^ np.uint64(0x20 * ONES)) & keep
        others = keep & B7 & ~spaces
        lowest = others & (~others + np.uint64(1))
        word += spaces >> np.uint64(3)
        plain &= (spaces < lowest) & (others != 0)
    ok, value = _hex_word(word) if hex_default else _decimal_word(word)
    ok &= plain
    return Parsed(value, negative & ok, ok)


def _zero_bytes(word: U64) -> U64:
    """0x80 in the bytes of ``word`` that are 0."""
    low7 = np.uint64(0x7F * ONES)
    return ~(((word & low7) + low7) | word | low7)


def _parse_ints(text: ByteText, vs: I64, ve: I64, hex_default: bool) -> Parsed:
    buf = text.buf
    n = vs.size
    length = ve - vs
    ok = (length >= 1) & (ve >= 8)
    vs = vs.copy()
    lead = buf[np.minimum(vs, buf.size - 1)]
    pad = np.flatnonzero((lead == 32) & ok)
    if pad.size:  # padded columns (``cval=               0``)
        width = int(length[pad].max())
        safe = np.minimum(vs[pad], buf.size - width)
        win = text.window(safe, width)
        k = (win != 32).argmax(axis=1)
        vs[pad] = np.where(safe == vs[pad], vs[pad] + k, ve[pad])
        lead = buf[np.minimum(vs, buf.size - 1)]
    negative = (lead == 45) & ok
    if bool(negative.any()):
        vs += negative
        lead = buf[np.minimum(vs, buf.size - 1)]
    has0x = (ve - vs >= 3) & (lead == 48) & ((buf[np.minimum(vs + 1, buf.size - 1)] | 0x20) == 120)
    vs += 2 * has0x
    size = ve - vs
    base16 = has0x | hex_default
    ok &= (size >= 1) & np.where(base16, size <= 16, size <= 19)
    size = np.where(ok, size, 1)
    nwords = (int(size.max()) + 7) // 8 if n else 0
    value = np.zeros(n, dtype=np.uint64)
    any_hex = bool(base16.any())
    any_dec = not bool(base16.all())
    hex_value = np.zeros(n, dtype=np.uint64)
    dec_value = np.zeros(n, dtype=np.uint64)
    for j in range(nwords):
        inside = np.clip(size - 8 * j, 0, 8).astype(np.uint64)
        word = text.words[np.where(ok, ve - 8 * (j + 1), 0)]
        keep = _high_bytes(inside)  # the bytes before the value read as '0'
        word = (word & keep) | (ZEROS & ~keep)
        if any_dec:
            good, v = _decimal_word(word)
            ok &= good | base16
            dec_value = dec_value + v * np.uint64(10 ** (8 * j))  # 19 digits never wrap
        if any_hex:
            good, v = _hex_word(word)
            ok &= good | ~base16
            hex_value = hex_value | (v << np.uint64(32 * j))
    if any_dec:
        value = dec_value
    if any_hex:
        value = np.where(base16, hex_value, value)
    return Parsed(value, negative, ok)


def _high_bytes(count: U64) -> U64:
    """A mask of the high ``count`` bytes (0..8) of a word."""
    low = np.uint64(8) * (np.uint64(8) - count)  # bits below the kept bytes, 0..64
    half = low >> np.uint64(1)
    return (ALL << half) << (low - half)


def _decimal_word(word: U64) -> tuple[Mask, U64]:
    ok = (word & HI) == ZEROS
    low = word & LO
    ok &= ((low + np.uint64(0x06 * ONES)) & np.uint64(0x10 * ONES)) == 0
    return ok, _swar8(low)


def _hex_word(word: U64) -> tuple[Mask, U64]:
    t = word | np.uint64(0x20 * ONES)
    alpha = (t >> np.uint64(6)) & np.uint64(ONES)
    ok = (t & HI) == ZEROS + alpha * np.uint64(0x30)
    ok &= (~word & np.uint64(0x20 * ONES) & ~(alpha * np.uint64(0x20))) == 0  # not 0x10-0x19
    nib = (t & LO) + alpha * np.uint64(9)
    ten = (nib + np.uint64(0x76 * ONES)) & B7  # nibble >= 10
    ok &= ((ten ^ (alpha << np.uint64(7))) | ((nib + np.uint64(0x70 * ONES)) & B7)) == 0
    m16 = np.uint64(0x00FF00FF00FF00FF)
    a = ((nib & m16) << np.uint64(4)) | ((nib >> np.uint64(8)) & m16)
    m32 = np.uint64(0x0000FFFF0000FFFF)
    b = ((a & m32) << np.uint64(8)) | ((a >> np.uint64(16)) & m32)
    c = ((b & np.uint64(0xFFFFFFFF)) << np.uint64(16)) | (b >> np.uint64(32))
    return ok, c
