"""The report in a real browser (headless Debian Chromium): it loads with no console message or script error,
every figure decodes, a screenshot shows the figures (not a blank page), and the numbers on the rendered
page equal the JSON the commands print. Screenshots are kept in tests/artifacts/ for a person to look at.
The harness is checked too: a page with a script error, and a blank page, fail it."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests import browser
from tests.report_pages import check_values, pair_report, single_report

pytestmark = pytest.mark.skipif(not browser.available(),
                                reason=f"no Chromium at {browser.CHROMIUM}: scripts/bootstrap.sh --dev installs "
                                       "Debian's chromium package (needs root and apt-get)")


@pytest.mark.parametrize("which", ["pair", "single"])
def test_report_loads_without_errors_and_every_figure_decodes(which: str) -> None:
    rep = pair_report() if which == "pair" else single_report()
    page = browser.load(rep.html)
    assert page.console == [], page.console
    assert 'data-ready="1"' in page.dom
    figures = rep.html.read_text().count("<figure>")
    assert figures >= (12 if which == "pair" else 8)
    assert f'data-figures="{figures}"' in page.dom and f'data-figures-ok="{figures}"' in page.dom
    assert f"{figures} of {figures} figures shown" in page.dom
    counts = check_values(page.dom, rep.sources)  # the page as the browser built it
    assert counts["analyze"] > 150


@pytest.mark.parametrize("which", ["pair", "single"])
def test_screenshot_shows_the_figures(which: str) -> None:
    rep = pair_report() if which == "pair" else single_report()
    shot = browser.ARTIFACTS / f"report-{which}.png"
    pixels = browser.screenshot(rep.html, shot, height=5000)
    print(f"screenshot: {shot}")
    seen = browser.not_blank(pixels)
    assert pixels.shape[:2] == (5000, 1280)
    # a page of text and figures: a blank page has none of these; a page without its figures hardly any colour
    assert seen["std"] > 0.05 and seen["non_white"] > 0.03 and seen["coloured"] > 0.005, seen


def test_the_harness_catches_a_script_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.html"
    bad.write_text("<html><body data-ready='0'><p>x</p><script>undefinedFunction();</script></body></html>")
    page = browser.load(bad)
    assert any("undefinedFunction" in line for line in page.console)


def test_the_harness_catches_a_blank_page(tmp_path: Path) -> None:
    blank = tmp_path / "blank.html"
    blank.write_text("<html><body></body></html>")
    seen = browser.not_blank(browser.screenshot(blank, tmp_path / "blank.png", height=600))
    assert seen["std"] < 0.01 and seen["coloured"] == 0
