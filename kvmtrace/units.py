"""Units: how kvmtrace shows times and counts in text (terminal, verdicts, HTML). Tables keep ns."""

from __future__ import annotations

import math


def fmt_ns(ns: float | None) -> str:
    """A duration at a readable scale: ``812 ns``, ``45.3 us``, ``1.25 ms``; ``-`` for none."""
    if ns is None or (isinstance(ns, float) and math.isnan(ns)):
        return "-"
    if abs(ns) >= 1e6:
        return f"{ns / 1e6:.2f} ms"
    if abs(ns) >= 1e3:
        return f"{ns / 1e3:.1f} us"
    return f"{int(ns)} ns"


def us(ns: float | None) -> str:
    """Nanoseconds as microseconds with one decimal (a table column in us); ``-`` for none."""
    return "-" if ns is None else f"{ns / 1000:,.1f}"


def us_value(ns: float) -> float:
    """Nanoseconds as microseconds, to the ns (Chrome JSON's unit)."""
    return round(ns / 1000, 3)


def us_or_ms(whole_us: int) -> str:
    """A whole number of microseconds (a histogram bound): ``250 us``, ``1.5 ms``."""
    return f"{whole_us / 1000:g} ms" if whole_us >= 1000 else f"{whole_us} us"


def seconds(ns: int | None) -> str:
    """A trace timestamp in seconds, to the microsecond as trace-cmd shows it; ``-`` for none."""
    return "-" if ns is None else f"{ns / 1e9:.6f}"


def count(n: int) -> str:
    """A count in prose: ``one``, ``12``, ``1,234``."""
    return "one" if n == 1 else f"{n:,}"


def plural(n: int, word: str, words: str) -> str:
    """``one MMIO access``, ``3 MMIO accesses``."""
    return f"{count(n)} {word if n == 1 else words}"
