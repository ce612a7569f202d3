"""``kvmtrace analyze`` in the terminal: facts, percentiles, stage breakdown, histogram, worst interrupts."""

from __future__ import annotations

import math
from typing import Any

from rich.console import Console, Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from kvmtrace.analysis.verdicts import STAGE_WORDS
from kvmtrace.model.interrupts import STAGES
from kvmtrace.render.tables import blame_table, facts_table
from kvmtrace.units import fmt_ns, us_or_ms

STAGE_SPAN = {"timer": "deadline -> host IRQ", "host_irq": "host IRQ -> wakeup / injection",
              "vcpu_wait": "wakeup -> switch-in", "inject": "switch-in -> injection",
              "exit": "injection -> kvm_exit", "entry": "injection / exit -> kvm_entry"}
STAGE_STYLE = {"timer": "magenta", "host_irq": "red", "vcpu_wait": "yellow", "inject": "cyan",
               "exit": "blue", "entry": "green"}
STAGE_LETTER = {"timer": "T", "host_irq": "H", "vcpu_wait": "W", "inject": "I", "exit": "X", "entry": "E"}
BAR_WIDTH = 50
HIST_WIDTH = 36


BLAME_TITLE = ("Blame over all interrupts (each nanosecond of latency charged to who held the CPU that "
               "mattered; docs/stages.md)")


def render_analyze_report(doc: dict[str, Any], console: Console) -> None:
    """The analyze document: the guest's interrupts, then the host's real-time threads and the guest's
    loops when it has them (a host without guests: its threads alone)."""
    from kvmtrace.render.guest import render_guest
    from kvmtrace.render.native import render_native

    if "interrupts" in doc:
        render_analyze(doc, console)
    if doc.get("native") is not None:
        render_native(doc, console)
    if doc.get("guest") is not None:
        render_guest(doc, console)


def render_analyze(doc: dict[str, Any], console: Console) -> None:
    console.print(_facts(doc))
    irqs = doc["interrupts"]
    if irqs["count"] == 0:
        console.print("[yellow]no guest interrupts found in this window[/yellow]")
    else:
        console.print(_percentiles(irqs))
        console.print(_stages(irqs))
        console.print(_histogram(irqs))
        if doc["per_vcpu"]:
            console.print(_per_vcpu(doc["per_vcpu"]))
        console.print(blame_table(doc["blame"], BLAME_TITLE, "interrupts"))
        console.print(_worst(irqs, plain=plain_output(console)))
        console.print(_overall(irqs))
    for note in doc["notes"]:
        console.print(f"[dim]note: {note}[/dim]")


def _facts(doc: dict[str, Any]) -> Table:
    return facts_table(f"kvmtrace analyze {doc['capture']}", facts_rows(doc))


def facts_rows(doc: dict[str, Any]) -> list[tuple[str, str]]:
    """The facts of an analysis document as (name, text) rows: window, vCPU threads, interrupts, deadlines,
    RT throttling, stalls, cyclictest's own summary."""
    w = doc["window"]
    rows = [("window", f"{w['name']}: {w['start_ns'] / 1e9:.6f} .. {w['end_ns'] / 1e9:.6f} s "
                       f"({w['duration_ns'] / 1e9:.3f} s)")]
    for v in doc["vcpus"]:
        rows.append(("vCPU thread", f"{v['comm']} (tid {v['vcpu_tid']}), {v['entries']:,} guest entries, "
                                    f"CPUs {', '.join(str(c) for c in v['cpus'])}"))
    irqs = doc["interrupts"]
    paths = ", ".join(f"{n:,} {p}" for p, n in sorted(irqs["by_path"].items()))
    rows.append(("interrupts", f"{irqs['count']:,} ({paths}); IRQs {', '.join(irqs['by_irq'])}"))
    dl = doc["deadlines"]
    if dl["sources"]:
        counter = dl["counter"] or {}
        how = {"calibrated": "CVAL calibrated on KVM's background hrtimers", "fitted": "CVAL fitted"}.get(
            counter.get("how", ""), "")
        unc = counter.get("uncertainty_ns")
        extra = (f"; fit may be up to {fmt_ns(unc)} late" if unc is not None else
                 "; fit one-sided (latest the evidence allows)") if counter.get("how") == "fitted" else ""
        rows.append(("deadlines", ", ".join(f"{n:,} {s}" for s, n in dl["sources"].items())
                     + (f" ({how}{extra})" if how else "")))
    rt = doc["rt_throttling"]
    if rt["count"]:
        rows.append(("RT throttling", rt["summary"]))
    if doc["stalls"]:
        longest = max(st["duration_ns"] for st in doc["stalls"])
        rows.append(("stalls", f"{len(doc['stalls']):,} whole-machine stalls (every CPU silent), longest "
                               f"{fmt_ns(longest)}"))
    for c in doc["cyclictest"]:
        rows.append(("cyclictest", f"{c['loops']:,} loops, interval {c['interval_us']} us, "
                                   f"min {c['min_us']} / avg {c['avg_us']} / max {c['max_us']} us (its own figures)"))
    return rows


def _percentiles(irqs: dict[str, Any]) -> Table:
    t = Table(title="Latency (best known: from the deadline where known, else from the host IRQ, a lower bound; "
                    "host side: host IRQ -> kvm_entry)", title_justify="left")
    for col in ("measure", "count", "min", "p50", "p95", "p99", "max"):
        t.add_column(col, justify="left" if col == "measure" else "right")
    for key, label in (("best_latency_ns", "best known"), ("total_ns", "host side (total)"),
                       ("latency_ns", "from deadline"), ("timer_ns", "deadline -> host IRQ")):
        p = irqs[key]
        if p.get("count"):
            t.add_row(label, f"{p['count']:,}", *(fmt_ns(p[k]) for k in ("min", "p50", "p95", "p99", "max")))
    return t


def _stages(irqs: dict[str, Any]) -> Table:
    t = Table(title="Stages", title_justify="left")
    for col in ("stage", "span", "count", "share", "p50", "p99", "max"):
        t.add_column(col, justify="left" if col in ("stage", "span") else "right")
    for stage, s in irqs["stages"].items():
        share = f"{100 * s['share']:.1f}%" if s["share"] is not None else "-"
        t.add_row(Text(stage, style=STAGE_STYLE[stage]), STAGE_SPAN[stage], f"{s['count']:,}", share,
                  fmt_ns(s["p50"]), fmt_ns(s["p99"]), fmt_ns(s["max"]))
    return t


def _histogram(irqs: dict[str, Any]) -> Table:
    t = Table(title="Latency histogram (best known; bar length ~ log10(count))", title_justify="left")
    t.add_column("bucket", justify="right")
    t.add_column("count", justify="right")
    t.add_column("")
    top = max((b["count"] for b in irqs["histogram"]), default=1)
    for b in irqs["histogram"]:
        width = max(1, round(HIST_WIDTH * math.log10(b["count"] + 1) / math.log10(top + 1)))
        t.add_row(f"{us_or_ms(b['from_us'])} - {us_or_ms(b['to_us'])}", f"{b['count']:,}", "█" * width)
    return t


def plain_output(console: Console) -> bool:
    """True when colours will not show (a pipe, a file, NO_COLOR): stage bars are then drawn with letters."""
    return not console.is_terminal or console.no_color or console.color_system is None


def _bar(row: dict[str, Any], plain: bool = False) -> Text:
    """The stages of one interrupt in proportion: coloured blocks, or one letter per stage (``TTTHHWWWEEE``)."""
    total = sum(row.get(f"{s}_ns") or 0 for s in STAGES) or 1
    bar = Text()
    for s in STAGES:
        ns = row.get(f"{s}_ns")
        if ns:
            bar.append((STAGE_LETTER[s] if plain else "█") * max(1, round(BAR_WIDTH * ns / total)),
                       style=STAGE_STYLE[s])
    return bar


def _worst(irqs: dict[str, Any], plain: bool = False) -> Panel:
    items = []
    for n, r in enumerate(irqs["worst"], 1):
        basis = "from deadline" if r["latency_basis"] == "deadline" else "from host IRQ, lower bound"
        head = Text(f"#{n} t={r['t_ns'] / 1e9:.6f} s  vCPU {r['vcpu_tid']}  irq {r['irq']}  {r['path']}  "
                    f"{fmt_ns(r['best_latency_ns'])} ({basis})", style="bold")
        stages = Text("    " + "  ".join(f"{s} {fmt_ns(r.get(f'{s}_ns'))}" for s in STAGES
                                           if r.get(f"{s}_ns") is not None))
        items += [head, Text("    ").append(_bar(r, plain)), stages, Text(f"    {r['verdict']}")]
    legend = Text("stages: ")
    for s in STAGES:
        legend.append(f"{STAGE_LETTER[s] if plain else '█'} {s}  ", style=STAGE_STYLE[s])
    return Panel(Group(*items, legend), title="Worst interrupts", title_align="left", expand=not plain)


def _overall(irqs: dict[str, Any]) -> Text:
    worst = irqs["worst"]
    if not worst:
        return Text("")
    counts: dict[str, int] = {}
    for r in worst:
        counts[r["dominant_stage"]] = counts.get(r["dominant_stage"], 0) + 1
    stage, n = max(counts.items(), key=lambda kv: kv[1])
    return Text(f"Verdict: in {n} of the {len(worst)} worst interrupts most time went {STAGE_WORDS[stage]} "
                f"({stage}). Worst: {worst[0]['verdict']}.", style="bold")


def _per_vcpu(rows: list[dict[str, Any]]) -> Table:
    t = Table(title="Per vCPU thread (best known latency)", title_justify="left")
    for col in ("vCPU", "interrupts", "paths", "p50", "p99", "max", "largest stage"):
        t.add_column(col, justify="left" if col in ("vCPU", "paths", "largest stage") else "right")
    for v in rows:
        p = v["best_latency_ns"]
        stages = {k: s["sum_ns"] for k, s in v["stages"].items() if k != "timer"}
        big = max(stages, key=lambda k: stages[k]) if stages else "-"
        paths = ", ".join(f"{n:,} {k}" for k, n in v["by_path"].items())
        t.add_row(str(v["vcpu_tid"]), f"{v['interrupts']:,}", paths, fmt_ns(p.get("p50")), fmt_ns(p.get("p99")),
                  fmt_ns(p.get("max")), big)
    return t
