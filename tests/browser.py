"""Headless Debian Chromium for tests: the page's DOM after its scripts ran, its console messages, screenshots.

No network here, so the flags keep Chromium from trying (QUIC, component updates, sync, background
networking); every run gets a new empty profile. With ``--enable-logging=stderr --v=0`` Chromium writes
each console message, and every uncaught script error, as an ``INFO:CONSOLE`` line on stderr.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars", "--enable-logging=stderr", "--v=0"]
CONSOLE_RE = re.compile(r"CONSOLE[^\]]*\]\s*(.*)")
ARTIFACTS = Path(__file__).parent / "artifacts"


def available() -> bool:
    return Path(CHROMIUM).is_file()


@dataclass
class Page:
    dom: str
    console: list[str]


def _run(page: Path, *args: str, timeout: int = 120) -> subprocess.CompletedProcess[str]:
    with tempfile.TemporaryDirectory(prefix="kvmtrace-chromium-") as profile:
        return subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *args, page.resolve().as_uri()],
                              capture_output=True, text=True, timeout=timeout, check=False)


def load(page: Path) -> Page:
    """The DOM once the page loaded and its scripts ran, and every console line (errors included)."""
    proc = _run(page, "--virtual-time-budget=10000", "--dump-dom")
    console = [m.group(1) for line in proc.stderr.splitlines() if (m := CONSOLE_RE.search(line))]
    return Page(proc.stdout, console)


def screenshot(page: Path, out: Path, width: int = 1280, height: int = 2400) -> np.ndarray:
    """A PNG screenshot of the page's top ``height`` pixels, saved at ``out``; its pixels (rows, cols, RGB)."""
    import matplotlib.image

    out.parent.mkdir(parents=True, exist_ok=True)
    out.unlink(missing_ok=True)
    _run(page, "--virtual-time-budget=10000", f"--window-size={width},{height}", f"--screenshot={out.resolve()}")
    assert out.is_file(), f"Chromium wrote no screenshot of {page}"
    return np.asarray(matplotlib.image.imread(out))[..., :3]


def not_blank(pixels: np.ndarray) -> dict[str, float]:
    """Figures that tell a blank or near-blank page: pixel spread, share of non-white and of coloured pixels."""
    grey = pixels.mean(axis=2)
    saturation = pixels.max(axis=2) - pixels.min(axis=2)
    return {"std": float(grey.std()), "non_white": float((grey < 0.95).mean()),
            "coloured": float((saturation > 0.3).mean())}
