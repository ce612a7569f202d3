"""Native wakeup latency in the terminal: threads, percentiles, stages, blame, cyclictest's own figures
beside the trace's, and the worst wakeups with their verdicts."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from kvmtrace.render.tables import blame_table, facts_table
from kvmtrace.units import fmt_ns

STAGE_SPAN = {"timer": "deadline -> timer IRQ", "host_irq": "timer IRQ -> wakeup", "wait": "wakeup -> switch-in",
              "user": "switch-in -> back in user space"}


def render_native(doc: dict[str, Any], console: Console) -> None:
    nat = doc["native"]
    w = doc["window"]
    rows = [("window", f"{w['name']}: {w['start_ns'] / 1e9:.6f} .. {w['end_ns'] / 1e9:.6f} s")]
    rows += [("thread", f"{t['comm']} (tid {t['tid']}), {t['wakeups']:,} timer wakeups") for t in nat["threads"]]
    rows.append(("deadlines", ", ".join(f"{n:,} {s}" for s, n in nat["wakeups"]["by_source"].items())))
    console.print(facts_table(f"Real-time threads on the host: {doc['capture']}", rows))
    console.print(_percentiles(nat["wakeups"]))
    console.print(_stages(nat["wakeups"]["stages"]))
    console.print(_check(nat["cyclictest_check"]))
    console.print(blame_table(nat["blame"], "Blame over all wakeups", "wakeups"))
    for n, r in enumerate(nat["wakeups"]["worst"], 1):
        console.print(f"[bold]#{n}[/bold] deadline {r['deadline_ns'] / 1e9:.6f} s  tid {r['tid']}  CPU {r['cpu']}: "
                      f"{r['verdict']}")
    for note in nat["notes"]:
        console.print(f"[dim]note: {note}[/dim]")


def _percentiles(w: dict[str, Any]) -> Table:
    t = Table(title="Wakeup latency (deadline -> back in user space, or switch-in)", title_justify="left")
    for col in ("measure", "count", "min", "mean", "p50", "p95", "p99", "max"):
        t.add_column(col, justify="left" if col == "measure" else "right")
    for key, label in (("latency_ns", "from deadline"), ("timer_ns", "deadline -> timer IRQ")):
        p = w[key]
        if p.get("count"):
            t.add_row(label, f"{p['count']:,}", *(fmt_ns(p[k]) for k in ("min", "mean", "p50", "p95", "p99", "max")))
    return t


def _stages(stages: dict[str, Any]) -> Table:
    t = Table(title="Stages", title_justify="left")
    for col in ("stage", "span", "count", "share", "p50", "p99", "max"):
        t.add_column(col, justify="left" if col in ("stage", "span") else "right")
    for name, s in stages.items():
        share = f"{100 * s['share']:.1f}%" if s["share"] is not None else "-"
        t.add_row(name, STAGE_SPAN[name], f"{s['count']:,}", share, fmt_ns(s["p50"]), fmt_ns(s["p99"]),
                  fmt_ns(s["max"]))
    return t


def _check(c: dict[str, Any]) -> Table:
    t = Table(title="cyclictest's own figures beside the trace's", title_justify="left")
    for col in ("measure", "cyclictest", "trace"):
        t.add_column(col, justify="left" if col == "measure" else "right")
    own, traced = c.get("own") or {}, c["traced"]
    t.add_row("loops", f"{own['loops']:,}" if own.get("loops") is not None else "-", f"{traced['loops']:,}")
    t.add_row("max (us)", str(own.get("max_us", "-")), f"{traced['max_us']:.1f}")
    t.add_row("avg (us)", str(own.get("avg_us", "-")), f"{traced['avg_us']:.1f}")
    over = c.get("over_histogram")
    if over:
        t.add_row(f"loops over {over['limit_us']} us", " ".join(map(str, over["own_loops"])),
                  " ".join(map(str, over["traced_loops"])))
    per = c.get("per_loop")
    if per:
        t.add_row("per loop (-v): measured - traced, median", "", f"{per['measured_minus_traced_median_us']} us")
    bt = c.get("breaktrace")
    if bt:
        t.add_row("breaktrace (-b): the loop that broke", f"{bt['latency_us']} us", f"{bt['traced_worst_us']} us")
    return t
