"""The report as one self-contained HTML file: figures inline (base64 SVG), no network fetch when opened.

Every number taken from a JSON document is written as ``<span data-doc=N data-src=S data-key=K
data-v=RAW>shown</span>``: capture N, document S (``analyze`` = ``analyze --json``, ``exits`` = ``exits
--window --json``'s ``by_class``, ``faults`` = ``faults --json``), key K, the raw value, and the value as
shown (``show``). tests/test_report_browser.py reads them back from the page Chromium rendered. A little
script marks the page ready once every figure has decoded, records script errors on the page, and
sorts tables by a click on a column header.
"""

from __future__ import annotations

import base64
import html
import json
from typing import Any

from kvmtrace import __version__
from kvmtrace.model.interrupts import STAGES
from kvmtrace.render import figures
from kvmtrace.render.analyze import STAGE_LETTER, STAGE_SPAN, facts_rows
from kvmtrace.render.comparison import Cell, compare
from kvmtrace.render.report import CaptureReport, comparison_series
from kvmtrace.units import fmt_ns

STYLE = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0 auto; max-width: 1100px;
       padding: 0 24px 48px; color: #222; }
h1 { margin-top: 24px; } h2 { border-bottom: 2px solid #4c72b0; padding-bottom: 4px; margin-top: 40px; }
h3 { margin-top: 28px; }
table { border-collapse: collapse; margin: 8px 0 16px; }
th, td { padding: 3px 10px; border-bottom: 1px solid #e3e3e3; text-align: left; vertical-align: top; }
th { background: #f3f5f9; cursor: pointer; user-select: none; }
td.n, th.n { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
table.facts th { cursor: default; background: none; width: 10em; }
figure { margin: 12px 0; } figure img { width: 100%; max-width: 960px; height: auto; display: block; }
figcaption { color: #555; font-size: 12px; }
.verdicts li { margin-bottom: 6px; } .note { color: #8a6d00; } .problem { color: #a00; }
.bar { font-family: ui-monospace, monospace; letter-spacing: -1px; }
nav a { margin-right: 12px; } footer { margin-top: 40px; color: #777; font-size: 12px; }
#kvmtrace-errors { color: #a00; white-space: pre-wrap; }
"""
ERROR_HOOK = """window.kvmtraceErrors = [];
window.addEventListener("error", function (e) {
  window.kvmtraceErrors.push(String(e.message || e));
  var box = document.getElementById("kvmtrace-errors");
  if (box) { box.textContent = window.kvmtraceErrors.join("\\n"); }
});"""
READY = """(function () {
  function ready() {
    var imgs = Array.prototype.slice.call(document.querySelectorAll("figure img"));
    var ok = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;
    document.body.setAttribute("data-figures", String(imgs.length));
    document.body.setAttribute("data-figures-ok", String(ok));
    document.body.setAttribute("data-values", String(document.querySelectorAll("[data-key]").length));
    document.getElementById("kvmtrace-status").textContent =
      ok + " of " + imgs.length + " figures shown; values from the analysis: " +
      document.querySelectorAll("[data-key]").length;
    document.body.setAttribute("data-ready", window.kvmtraceErrors.length ? "errors" : "1");
  }
  function sortBy(th) {
    var table = th.closest("table"), col = Array.prototype.indexOf.call(th.parentNode.children, th);
    var rows = Array.prototype.slice.call(table.tBodies[0].rows);
    var up = th.getAttribute("data-dir") !== "up";
    function key(r) {
      var c = r.cells[col], v = c && c.querySelector("[data-v]");
      var raw = v ? v.getAttribute("data-v") : (c ? c.textContent : "");
      var n = parseFloat(raw);
      return isNaN(n) ? raw : n;
    }
    rows.sort(function (a, b) { var x = key(a), y = key(b); return (x > y ? 1 : x < y ? -1 : 0) * (up ? 1 : -1); });
    rows.forEach(function (r) { table.tBodies[0].appendChild(r); });
    th.setAttribute("data-dir", up ? "up" : "down");
  }
  document.querySelectorAll("table.sortable th").forEach(function (th) {
    th.addEventListener("click", function () { sortBy(th); });
  });
  if (document.readyState === "complete") { ready(); } else { window.addEventListener("load", ready); }
})();"""


def show(value: Any, fmt: str) -> str:
    """A value as the page shows it: ``count`` 9,983; ``ns`` 19.36 ms; ``us`` 472 us; ``pct`` 12.3%; ``pct:name``
    name 12.3%; ``rate`` 1,234.5/s; anything else as text."""
    if value is None:
        return "-"
    if fmt == "count":
        return f"{value:,}"
    if fmt == "ns":
        return fmt_ns(value)
    if fmt == "us":
        return f"{value:,} us"
    if fmt == "rate":
        return f"{value:,.1f}/s"
    if fmt == "pct":
        return f"{100 * value:.1f}%"
    if fmt.startswith("pct:"):
        return f"{fmt[4:]} {100 * value:.1f}%"
    return str(value)


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


class Page:
    """HTML fragments of one report; ``v`` writes a value traced to its document."""

    def __init__(self) -> None:
        self.parts: list[str] = []

    def add(self, *fragments: str) -> None:
        self.parts.extend(fragments)

    @staticmethod
    def v(doc: int, src: str, key: str, value: Any, fmt: str) -> str:
        raw = json.dumps(value) if not isinstance(value, str) else value
        return (f'<span data-doc="{doc}" data-src="{src}" data-key="{_e(key)}" data-fmt="{_e(fmt)}" '
                f'data-v="{_e(raw)}">{_e(show(value, fmt))}</span>')

    def table(self, head: list[str], rows: list[list[str]], numeric: set[int] | None = None,
              css: str = "sortable") -> None:
        num = numeric or set()
        ths = "".join(f'<th class="n">{_e(h)}</th>' if i in num else f"<th>{_e(h)}</th>" for i, h in enumerate(head))
        body = "".join("<tr>" + "".join(f'<td class="n">{c}</td>' if i in num else f"<td>{c}</td>"
                                        for i, c in enumerate(r)) + "</tr>" for r in rows)
        self.add(f'<table class="{css}"><thead><tr>{ths}</tr></thead><tbody>{body}</tbody></table>')

    def figure(self, fig: Any, caption: str) -> None:
        data = base64.b64encode(figures.render(fig, "svg")).decode("ascii")
        self.add(f'<figure><img alt="{_e(caption)}" src="data:image/svg+xml;base64,{data}">'
                 f"<figcaption>{_e(caption)}</figcaption></figure>")


def report_html(reports: list[CaptureReport]) -> str:
    """The whole page."""
    page = Page()
    title = "kvmtrace report: " + ", ".join(r.name for r in reports)
    page.add("<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             '<meta name="viewport" content="width=device-width, initial-scale=1">',
             f"<title>{_e(title)}</title><style>{STYLE}</style><script>{ERROR_HOOK}</script></head>",
             '<body data-ready="0">', f"<h1>{_e(title)}</h1>", '<div id="kvmtrace-errors"></div>')
    page.add("<nav>" + ("<a href='#compare'>comparison</a>" if len(reports) > 1 else "")
             + "".join(f"<a href='#capture-{i}'>{_e(r.name)}</a>" for i, r in enumerate(reports)) + "</nav>")
    if len(reports) > 1:
        _comparison(page, reports)
    for i, rep in enumerate(reports):
        _capture(page, i, rep)
    page.add(f'<footer>kvmtrace {_e(__version__)}. <span id="kvmtrace-status"></span></footer>',
             f"<script>{READY}</script></body></html>")
    return "\n".join(page.parts)


def comparison_docs(reports: list[CaptureReport]) -> list[dict[str, Any]]:
    """The documents compared: ``analyze --json`` where there are vCPU threads, else a stub with the timer
    wakeups and cyclictest's own summary."""
    out = []
    for r in reports:
        if r.doc is not None:
            out.append(r.doc)
            continue
        stub: dict[str, Any] = {"capture": r.name, "cyclictest": r.capture.cyclictest.to_dicts()}
        if r.wakeups is not None:
            stub["wakeups"] = {"count": r.wakeups.height, "max_ns": int(r.wakeups["latency_ns"].max())}  # type: ignore[arg-type]
        out.append(stub)
    return out


def _comparison(page: Page, reports: list[CaptureReport]) -> None:
    page.add("<section id='compare'><h2>Side by side</h2>")
    docs = comparison_docs(reports)
    rows = []
    for label, cells in compare(docs):
        rows.append([_e(label)] + [_cell(page, i, c, reports[i].doc is not None) for i, c in enumerate(cells)])
    page.table(["measure", *[r.name for r in reports]], rows, set(range(1, len(reports) + 1)), css="compare")
    figs = comparison_figures(reports)
    page.figure(figs["compare-histogram"], "Latency histograms of every capture (log counts, log-spaced bins)")
    page.figure(figs["compare-cdf"], "Cumulative latency of every capture")
    page.add("</section>")


def comparison_figures(reports: list[CaptureReport]) -> dict[str, Any]:
    """The overlaid histogram and CDF of several captures, by file stem."""
    series = comparison_series(reports)
    return {"compare-histogram": figures.latency_histogram(series, "Latency histograms side by side"),
            "compare-cdf": figures.latency_cdf(series, "Latency CDFs side by side")}


def _cell(page: Page, doc: int, c: Cell | None, analyzed: bool) -> str:
    """A comparison cell: from ``analyze --json``, or for a capture without vCPUs from ``info --json``
    (cyclictest's summary) or the timer wakeups."""
    if c is None:
        return "-"
    src = "analyze" if analyzed else "info" if c.key.startswith("cyclictest") else "wakeups"
    return page.v(doc, src, c.key, c.value, c.fmt)


def _capture(page: Page, i: int, rep: CaptureReport) -> None:
    page.add(f"<section id='capture-{i}'><h2>{_e(rep.name)}</h2>")
    if rep.doc is None:
        _without_vcpus(page, rep)
    else:
        _with_vcpus(page, i, rep, rep.doc)
    page.add("</section>")


def _without_vcpus(page: Page, rep: CaptureReport) -> None:
    info = rep.info
    facts = [("kernel", info["kernel"]["uname"] or "unknown"), ("CPUs", str(info["cpus"])),
             ("events", f"{info['events']['total']:,}"),
             ("phases", ", ".join(p["name"] for p in info["phases"]) or "none")]
    _facts(page, facts)
    for p in rep.problems:
        page.add(f"<p class='problem'>{_e(p)}</p>")
    if rep.capture.cyclictest.height:
        page.add("<h3>cyclictest's own summary</h3>")
        cols = ["thread", "tid", "prio", "interval_us", "loops", "min_us", "avg_us", "max_us"]
        page.table(cols, [[_e(r[c]) for c in cols] for r in rep.capture.cyclictest.to_dicts()], set(range(len(cols))))
    for stem, fig in rep.figures.items():
        page.figure(fig, f"{stem.replace('-', ' ')}: cyclictest threads' timer wakeups, deadline -> switch-in")


def _facts(page: Page, rows: list[tuple[str, str]]) -> None:
    page.add("<table class='facts'><tbody>" + "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in rows)
             + "</tbody></table>")


def _with_vcpus(page: Page, i: int, rep: CaptureReport, doc: dict[str, Any]) -> None:
    figs = rep.figures
    _facts(page, facts_rows(doc))
    irqs = doc["interrupts"]
    if not irqs["count"]:
        page.add("<p class='note'>no guest interrupts in this window</p>")
    else:
        _latency(page, i, irqs, figs)
        _stages(page, i, irqs, figs)
        _worst(page, i, irqs, figs)
        _blame(page, i, doc, figs)
    _exits(page, i, rep, figs)
    _faults(page, i, rep, figs)
    for n in doc["notes"]:
        page.add(f"<p class='note'>note: {_e(n)}</p>")


def _latency(page: Page, i: int, irqs: dict[str, Any], figs: dict[str, Any]) -> None:
    page.add("<h3>Latency</h3>")
    rows = []
    for key, label in (("best_latency_ns", "best known (from the deadline where known, else the host IRQ)"),
                       ("total_ns", "host side (host IRQ -> kvm_entry)"), ("latency_ns", "from the deadline"),
                       ("timer_ns", "deadline -> host IRQ")):
        p = irqs[key]
        if p.get("count"):
            rows.append([_e(label), page.v(i, "analyze", f"interrupts.{key}.count", p["count"], "count"),
                         *[page.v(i, "analyze", f"interrupts.{key}.{q}", p[q], "ns")
                           for q in ("min", "p50", "p95", "p99", "max")]])
    page.table(["measure", "count", "min", "p50", "p95", "p99", "max"], rows, set(range(1, 7)), css="latency")
    page.figure(figs["latency-histogram"], "Latency histogram: log-spaced bins, log counts (the study's figure)")
    page.figure(figs["latency-cdf"], "Cumulative distribution of latency")
    hist = [[_e(f"{b['from_us']:,} - {b['to_us']:,} us"),
             page.v(i, "analyze", f"interrupts.histogram.{n}.count", b["count"], "count")]
            for n, b in enumerate(irqs["histogram"])]
    page.add("<details><summary>power-of-two buckets (as <code>analyze</code> prints)</summary>")
    page.table(["bucket", "interrupts"], hist, {1}, css="hist")
    page.add("</details>")


def _stages(page: Page, i: int, irqs: dict[str, Any], figs: dict[str, Any]) -> None:
    page.add("<h3>Stages</h3>")
    rows = []
    for stage, s in irqs["stages"].items():
        key = f"interrupts.stages.{stage}"
        share = page.v(i, "analyze", f"{key}.share", s["share"], "pct") if s["share"] is not None else "-"
        rows.append([_e(f"{STAGE_LETTER[stage]} {stage}"), _e(STAGE_SPAN[stage]),
                     page.v(i, "analyze", f"{key}.count", s["count"], "count"), share,
                     *[page.v(i, "analyze", f"{key}.{q}", s[q], "ns") for q in ("p50", "p99", "max")]])
    page.table(["stage", "span", "count", "share", "p50", "p99", "max"], rows, set(range(2, 7)))
    if "stage-shares" in figs:
        page.figure(figs["stage-shares"], "Each stage's share of the summed host-side latency, and its p50 / p99")


def _worst(page: Page, i: int, irqs: dict[str, Any], figs: dict[str, Any]) -> None:
    page.add("<h3>Worst interrupts</h3>")
    page.figure(figs["worst-stages"], "Stages of the worst interrupts, in order (letters: "
                + ", ".join(f"{STAGE_LETTER[s]} {s}" for s in STAGES) + ")")
    rows, verdicts = [], []
    for n, r in enumerate(irqs["worst"]):
        key = f"interrupts.worst.{n}"
        rows.append([str(n + 1), page.v(i, "analyze", f"{key}.t_ns", r["t_ns"], "count"),
                     page.v(i, "analyze", f"{key}.vcpu_tid", r["vcpu_tid"], "text"), _e(r["irq"]), _e(r["path"]),
                     page.v(i, "analyze", f"{key}.best_latency_ns", r["best_latency_ns"], "ns"),
                     _e(r["latency_basis"]),
                     *[page.v(i, "analyze", f"{key}.{s}_ns", r[f"{s}_ns"], "ns") for s in STAGES]])
        verdicts.append(f"<li><b>#{n + 1}</b> {page.v(i, 'analyze', f'{key}.verdict', r['verdict'], 'text')}</li>")
    page.table(["#", "t_ns", "vCPU", "irq", "path", "latency", "from", *STAGES], rows, {0, 1, 5, *range(7, 13)})
    page.add("<ol class='verdicts' style='list-style:none;padding-left:0'>" + "".join(verdicts) + "</ol>")
    if "worst-timeline" in figs:
        page.figure(figs["worst-timeline"], "The vCPU's states and every host CPU's owner around the worst "
                                            "interrupt (dashed: deadline, host IRQ, switch-in, kvm_entry)")


def _blame(page: Page, i: int, doc: dict[str, Any], figs: dict[str, Any]) -> None:
    page.add("<h3>Blame over all interrupts</h3>")
    page.figure(figs["blame"], "Who the latency of all interrupts went to (docs/stages.md, Blame)")
    rows = []
    for n, r in enumerate(doc["blame"]):
        key = f"blame.{n}"
        pid = f" ({r['cause_pid']})" if r["cause_pid"] not in (None, 0) else ""
        rows.append([_e(f"{r['cause']}{pid}"), _e(r["cause_kind"]), page.v(i, "analyze", f"{key}.total_ns",
                                                                          r["total_ns"], "ns"),
                     page.v(i, "analyze", f"{key}.share", r["share"], "pct"),
                     page.v(i, "analyze", f"{key}.interrupts", r["interrupts"], "count"),
                     page.v(i, "analyze", f"{key}.slow_top", r["slow_top"], "count")])
    page.table(["cause", "kind", "total", "share", "interrupts", "top cause of > 1 ms"], rows, {2, 3, 4, 5})


def _exits(page: Page, i: int, rep: CaptureReport, figs: dict[str, Any]) -> None:
    if rep.exits is None:
        return
    page.add("<h3>Exits in the analysis window</h3>")
    rows = []
    for r in rep.exits.to_dicts():
        key = f"by_class[exit_class={r['exit_class']}]"  # rows of equal count have no fixed order
        rows.append([_e(r["exit_class"]), page.v(i, "exits", f"{key}.count", r["count"], "count"),
                     page.v(i, "exits", f"{key}.rate_per_s", r["rate_per_s"], "rate"),
                     *[page.v(i, "exits", f"{key}.{c}", r[c], "ns") for c in
                       ("handling_p50_ns", "handling_p99_ns", "handling_max_ns", "guest_run_p50_ns",
                        "guest_run_p99_ns")]])
    page.table(["exit class", "count", "rate", "handling p50", "handling p99", "handling max", "guest run p50",
                "guest run p99"], rows, set(range(1, 8)))
    if "exit-rates" in figs:
        page.figure(figs["exit-rates"], "Exits per second by class over the whole capture (window shaded)")


def _faults(page: Page, i: int, rep: CaptureReport, figs: dict[str, Any]) -> None:
    if rep.faults is None:
        return
    page.add("<h3>Stage-2 faults per phase (whole capture)</h3>")
    rows = []
    for n, r in enumerate(rep.faults.by_phase().to_dicts()):
        key = f"by_phase.{n}"
        rows.append([_e(r["phase"]), *[page.v(i, "faults", f"{key}.{c}", r[c], "count") for c in
                                       ("faults", "translation", "permission", "access_flag", "ram", "mmio")],
                     page.v(i, "faults", f"{key}.handling_total_ns", r["handling_total_ns"], "ns")])
    page.table(["phase", "faults", "translation", "permission", "access flag", "RAM", "MMIO", "handling total"],
               rows, set(range(1, 8)))
    page.add(f"<p>{page.v(i, 'faults', 'verdict', rep.faults.verdict, 'text')}</p>")
    if "fault-rates" in figs:
        page.figure(figs["fault-rates"], "Stage-2 faults per second over the whole capture (window shaded)")
