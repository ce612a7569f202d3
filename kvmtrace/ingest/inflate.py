"""Bounded decompression: never more output than the caller allows, whatever the input claims.

``inflate_exact`` is for trace.dat v7 sections and chunks, whose header says how large they inflate:
the output must be exactly that (at most that much is ever produced). ``inflate_stream`` is for
gzip/zstd text files: every member, up to a limit (kvmtrace.ingest.limits).
"""

from __future__ import annotations

import zlib
from typing import IO, Any

import zstandard


class InflateError(Exception):
    """The compressed data is corrupt, or inflates to another size than expected."""


def inflate_exact(codec: str, raw: bytes | memoryview, size: int, zstd: Any = None) -> bytes:
    """``raw`` inflated, which must give exactly ``size`` bytes (``zstd``: a ZstdDecompressor to reuse)."""
    if size == 0:
        return b""
    if codec == "zstd":
        out = _zstd_exact(raw, size, zstd or zstandard.ZstdDecompressor())
    elif codec == "zlib":
        out = _zlib_exact(raw, size)
    else:
        raise InflateError(f"unsupported compression {codec!r}: expected none, zstd or zlib")
    if len(out) != size:
        raise InflateError(f"inflates to {len(out)} bytes, its header says {size}")
    return out


def _zstd_exact(raw: bytes | memoryview, size: int, dctx: Any) -> bytes:
    try:
        declared = zstandard.frame_content_size(raw)
        if declared >= 0 and declared != size:  # zstd would allocate what the frame declares
            raise InflateError(f"zstd frame declares {declared} bytes, its header says {size}")
        return bytes(dctx.decompress(raw, max_output_size=size))
    except zstandard.ZstdError as exc:
        raise InflateError(f"corrupt zstd data ({exc}) or more than {size} bytes") from None


def _zlib_exact(raw: bytes | memoryview, size: int) -> bytes:
    d = zlib.decompressobj()
    try:
        out = d.decompress(raw, size)
    except zlib.error as exc:
        raise InflateError(f"corrupt zlib data ({exc})") from None
    if d.unconsumed_tail:
        raise InflateError(f"zlib data inflates to more than {size} bytes")
    if not d.eof:
        raise InflateError(f"zlib data ends early: {len(out)} of {size} bytes")
    return out


def inflate_stream(codec: str, fh: IO[bytes], limit: int) -> bytes:
    """A gzip or zstd file inflated (every member), or InflateError past ``limit`` bytes."""
    if codec == "zstd":
        return _zstd_stream(fh, limit)
    return _gzip_stream(fh, limit)


def _zstd_stream(fh: IO[bytes], limit: int) -> bytes:
    out = bytearray()
    try:
        with zstandard.ZstdDecompressor().stream_reader(fh, read_across_frames=True) as reader:
            while len(out) <= limit:
                block = reader.read(min(1 << 22, limit + 1 - len(out)))
                if not block:
                    break
                out += block
    except zstandard.ZstdError as exc:
        raise InflateError(f"corrupt zstd data: {exc}") from None
    _check_limit(len(out), limit)
    return bytes(out)


def _gzip_stream(fh: IO[bytes], limit: int) -> bytes:
    out = bytearray()
    d = zlib.decompressobj(31)
    data = b""
    inside = False  # a member has begun and not ended
    while True:
        if not data:
            data = fh.read(1 << 20)
            if not data:
                break
        try:
            out += d.decompress(data, limit + 1 - len(out))
        except zlib.error as exc:
            raise InflateError(f"corrupt gzip data: {exc}") from None
        _check_limit(len(out), limit)
        inside = True
        if d.eof:  # another member may follow
            data, d, inside = d.unused_data, zlib.decompressobj(31), False
        else:
            data = d.unconsumed_tail
    if inside:
        raise InflateError("gzip data ends early (truncated file)")
    return bytes(out)


def _check_limit(size: int, limit: int) -> None:
    if size > limit:
        raise InflateError(f"inflates past {limit} bytes")
