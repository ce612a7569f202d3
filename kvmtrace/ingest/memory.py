"""How the readers ask for memory: without numpy's transparent-huge-page advice.

numpy advises MADV_HUGEPAGE on every large array. With the kernel's default THP defrag policy
(``madvise``), a fault in such a region may stop to compact memory until a 2 MiB page is free;
a reader writes gigabytes of fresh columns once, so that stall is its largest cost on a busy or
virtualised machine. Measured on the project's 2-core VM, reading the 20 M-event replica after
an idle pause: 1.45-1.76 s without the advice, 2.3-3.8 s with it (docs/benchmarks.md).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager


def _setter() -> Callable[[bool], bool] | None:
    """numpy's switch for the advice (numpy 2: numpy._core, numpy 1: numpy.core), if any."""
    for module in ("numpy._core.multiarray", "numpy.core.multiarray"):
        try:
            return getattr(importlib.import_module(module), "_set_madvise_hugepage", None)
        except ImportError:
            continue
    return None


_set_madvise_hugepage = _setter()


@contextmanager
def without_hugepage_advice() -> Iterator[None]:
    """numpy allocates without MADV_HUGEPAGE inside the block (process-wide; restored after)."""
    if _set_madvise_hugepage is None:
        yield
        return
    before = _set_madvise_hugepage(False)
    try:
        yield
    finally:
        _set_madvise_hugepage(before)
