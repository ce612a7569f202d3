"""Reports made once per test session, and the check that every number on a page is its JSON's.

``pair_report()``: a host capture and its guest's own capture (no vCPU threads there) side by side,
with ``--png``; ``single_report()``: one capture. Their JSON sources come from the commands a user
would run: ``analyze --json``, ``exits --window <phase> --json``, ``faults --json``, ``info --json``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from kvmtrace.render.comparison import lookup
from kvmtrace.render.report_html import show
from tests.browser import ARTIFACTS
from tests.cli_runner import cli
from tests.report_oracle import CAPTURES

PAIR = (CAPTURES / "board-vhe-guest-pair", CAPTURES / "board-vhe-guest-pair" / "guest")
SINGLE = CAPTURES / "board-vhe-rt-throttle"



@dataclass
class Report:
    html: Path
    sources: list[dict[str, dict[str, Any]]]  # per capture: src name -> JSON document
    png: Path | None = None


def _sources(capture: Path) -> dict[str, dict[str, Any]]:
    info = json.loads(cli("info", str(capture), "--json"))
    try:
        doc = json.loads(cli("analyze", str(capture), "--json"))
    except AssertionError:  # nothing analyze can explain
        return {"info": info}
    if "interrupts" not in doc:  # no vCPU threads: analyze explained the host's own real-time threads
        return {"info": info}
    out = {"info": info, "analyze": doc,
           "exits": json.loads(cli("exits", str(capture), "--window", doc["window"]["name"], "--json"))}
    if "kvm_guest_fault" in info["events"]["per_type"]:
        out["faults"] = json.loads(cli("faults", str(capture), "--json"))
    return out


@lru_cache(maxsize=1)
def pair_report() -> Report:
    out, png = ARTIFACTS / "report-pair.html", ARTIFACTS / "report-pair-png"
    out.parent.mkdir(parents=True, exist_ok=True)
    cli("report", *map(str, PAIR), "-o", str(out), "--png", str(png))
    return Report(out, [_sources(c) for c in PAIR], png)


@lru_cache(maxsize=1)
def single_report() -> Report:
    out, svg = ARTIFACTS / "report-single.html", ARTIFACTS / "report-single-svg"
    out.parent.mkdir(parents=True, exist_ok=True)
    cli("report", str(SINGLE), "-o", str(out), "--svg", str(svg))
    return Report(out, [_sources(SINGLE)], svg)


class _Values(HTMLParser):
    """Elements carrying ``data-key``: their attributes and text."""

    def __init__(self) -> None:
        super().__init__()
        self.values: list[dict[str, str]] = []
        self._open: dict[str, str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if "data-key" in a:
            self._open = {**a, "text": ""}

    def handle_data(self, data: str) -> None:
        if self._open is not None:
            self._open["text"] += data

    def handle_endtag(self, tag: str) -> None:
        if self._open is not None and tag == "span":
            self.values.append(self._open)
            self._open = None


def page_values(page_html: str) -> list[dict[str, str]]:
    p = _Values()
    p.feed(page_html)
    return p.values


def check_values(page_html: str, sources: list[dict[str, dict[str, Any]]]) -> dict[str, int]:
    """Every tagged value on the page equals its JSON document's value at its key and is shown as ``show``
    shows it. Returns how many were checked per source (values of sources no command prints, the timer
    wakeups of a capture without vCPUs, are counted as ``unchecked``)."""
    counts: dict[str, int] = {}
    wrong = []
    for v in page_values(page_html):
        docs = sources[int(v["data-doc"])]
        if v["data-src"] not in docs:
            counts["unchecked"] = counts.get("unchecked", 0) + 1
            continue
        want = lookup(docs[v["data-src"]], v["data-key"])
        got = v["data-v"] if isinstance(want, str) else json.loads(v["data-v"])
        if got != want or v["text"] != show(want, v["data-fmt"]):
            wrong.append(f"{v['data-src']}:{v['data-key']}: page {got!r} shown {v['text']!r}, JSON {want!r}")
        counts[v["data-src"]] = counts.get(v["data-src"], 0) + 1
    assert not wrong, "\n".join(wrong[:20])
    return counts
