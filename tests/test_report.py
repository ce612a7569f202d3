"""kvmtrace report without a browser: the page is self-contained, every number on it is the JSON's, and
--png / --svg write the same figures as files."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

import matplotlib.image
import numpy as np
from typer.testing import CliRunner

from kvmtrace.cli import app
from kvmtrace.render.comparison import compare, lookup
from tests.report_oracle import CAPTURES
from tests.report_pages import check_values, page_values, pair_report, single_report

EXTERNAL = re.compile(r"""(?:src|href|action)\s*=\s*["']?\s*(?:https?:|//|ftp:)|url\(\s*["']?(?:https?:|//)|@import"""
                      r"""|<link\b|<iframe\b""", re.IGNORECASE)
FIGURES_PAIR = {"latency-histogram", "latency-cdf", "stage-shares", "worst-stages", "worst-timeline", "blame",
                "exit-rates", "fault-rates"}


def test_the_page_fetches_nothing() -> None:
    for rep in (pair_report(), single_report()):
        text = rep.html.read_text()
        assert not EXTERNAL.findall(text)
        images = re.findall(r"<img [^>]*src=\"([^\"]{0,40})", text)
        assert images and all(src.startswith("data:image/svg+xml;base64,") for src in images)


def test_every_number_on_the_pair_page_is_the_json() -> None:
    rep = pair_report()
    counts = check_values(rep.html.read_text(), rep.sources)
    # the host: latency table, stages, histogram, worst, blame; its exits and faults; the guest: cyclictest
    assert counts["analyze"] > 150 and counts["exits"] > 20 and counts["faults"] > 5 and counts["info"] >= 3
    keys = {v["data-key"] for v in page_values(rep.html.read_text())}
    assert {"interrupts.count", "interrupts.best_latency_ns.p99", "interrupts.worst.0.verdict", "blame.0.total_ns",
            "interrupts.stages.entry.share", "interrupts.histogram.0.count", "cyclictest.0.max_us"} <= keys


def test_every_number_on_the_single_page_is_the_json() -> None:
    rep = single_report()
    counts = check_values(rep.html.read_text(), rep.sources)
    assert counts["analyze"] > 150 and counts["exits"] > 20


def test_png_and_svg_figures_are_written() -> None:
    pair = pair_report()
    assert pair.png is not None
    host = next(pair.png.glob("1-*"))
    assert {p.stem for p in host.glob("*.png")} == FIGURES_PAIR
    assert {p.stem for p in pair.png.glob("*.png")} == {"compare-histogram", "compare-cdf"}
    assert {p.stem for p in next(pair.png.glob("2-*")).glob("*.png")} == {"latency-histogram", "latency-cdf"}
    for png in host.glob("*.png"):
        px = np.asarray(matplotlib.image.imread(png))[..., :3]
        assert px.shape[0] > 200 and px.shape[1] > 500 and px.std() > 0.05, png
    single = single_report()
    assert single.png is not None
    svgs = list(single.png.glob("*.svg"))
    assert {p.stem for p in svgs} == FIGURES_PAIR
    for svg in svgs:
        root = ET.parse(svg).getroot()
        assert root.tag.endswith("svg")


def test_comparison_rows_name_their_keys() -> None:
    rep = pair_report()
    docs = [rep.sources[0]["analyze"], {"capture": "g", "cyclictest": rep.sources[1]["info"]["cyclictest"]}]
    rows = dict(compare(docs))
    assert rows["cyclictest max (its own summary)"][1].value == rep.sources[1]["info"]["cyclictest"][0]["max_us"]
    assert rows["guest interrupts"][1] is None
    for cells in rows.values():
        for c, d in zip(cells, docs, strict=True):
            assert c is None or lookup(d, c.key) == c.value


def test_nothing_to_write_defaults_to_report_html(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(app, ["report", str(CAPTURES / "board-vhe-hog")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "report.html").stat().st_size > 100_000
