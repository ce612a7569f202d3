"""The guest's side in the terminal: how its clock was aligned, cyclictest loop by loop against the host,
and the slowest loops explained on both sides."""

from __future__ import annotations

from typing import Any

from rich.console import Console

from kvmtrace.render.tables import facts_table
from kvmtrace.units import fmt_ns


def render_guest(doc: dict[str, Any], console: Console) -> None:
    g = doc["guest"]
    al, s = g["alignment"], g["summary"]
    rows = [("guest capture", g["capture"]),
            ("clock", f"guest + {al['offset_ns'] / 1e9:.6f} s = host (+/- {fmt_ns(al['uncertainty_ns'])}), "
                      f"{100 * al['contained']:.1f}% of {al['events']:,} guest events inside host guest-run "
                      f"intervals; marker {al['marker']!r}"),
            ("loops", f"{s['loops']:,} cyclictest loops (thread {s['thread']}), {s['matched_host']:,} matched to the "
                      f"host interrupt that delivered them; the host part exceeds the loop's latency in "
                      f"{s['host_part_exceeds_measured']:,}")]
    console.print(facts_table("Guest side (loop by loop: docs/stages.md)", rows))
    for v in g["worst_loops"]:
        console.print(f"- {v['verdict']}")
