#!/usr/bin/env python3
"""Check a fresh board capture and what kvmtrace made of it (used by scripts/board/ci.sh).

    check_capture.py CAPTURE_DIR ANALYZE_JSON FAULTS_JSON

Fails (exit 1, one line per problem) unless: the recording completed on an arm64 KVM host in the
scenario's KVM mode, the guest's cyclictest phase and summary are in the trace, analyze found the
vCPU thread and the guest's timer interrupts (IRQ 27) as stage timelines, and faults found stage-2
faults on guest RAM and on emulated devices (MMIO).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def problems(capture: dict[str, Any], board: dict[str, Any], analyze: dict[str, Any],
             faults: dict[str, Any]) -> list[str]:
    out: list[str] = []
    status = capture.get("record", {}).get("status")
    if status != "complete":
        out.append(f"recording status is {status!r}, not 'complete'")
    host = capture.get("host", {})
    if host.get("arch") != "aarch64":
        out.append(f"host arch is {host.get('arch')!r}, not aarch64")
    want_mode = board.get("scenario", {}).get("mode")
    if want_mode and host.get("kvm_mode") != want_mode:
        out.append(f"KVM mode is {host.get('kvm_mode')!r}, the scenario asked for {want_mode!r}")
    lost = sum(int(v) for v in capture.get("lost_events", {}).values())
    if lost:
        print(f"check: warning: {lost} events lost (ring buffer overrun)", file=sys.stderr)
    window = (analyze.get("window") or {}).get("name")
    if window != "cyclictest":
        out.append(f"analyze window is {window!r}: no cyclictest phase from the guest's markers")
    if not analyze.get("cyclictest"):
        out.append("no cyclictest summary (T: line) in the trace")
    vcpus = analyze.get("vcpus") or []
    want_vcpus = board.get("scenario", {}).get("vcpus", 1)
    if len(vcpus) < want_vcpus:
        out.append(f"analyze found {len(vcpus)} vCPU threads, expected {want_vcpus}")
    irqs = analyze.get("interrupts") or {}
    if int(irqs.get("count") or 0) < 100:
        out.append(f"analyze found {irqs.get('count')} guest interrupts in the cyclictest phase (< 100)")
    if "27" not in (irqs.get("by_irq") or {}):
        out.append("no virtual timer interrupts (IRQ 27) in the interrupt timelines")
    if not (irqs.get("stages") or {}).get("vcpu_wait", {}).get("count"):
        out.append("no vcpu_wait stage (wakeup -> switch-in) in the interrupt timelines")
    if int(faults.get("faults") or 0) == 0:
        out.append("no stage-2 faults (kvm_guest_fault)")
    by_phase = faults.get("by_phase") or []
    if not any(int(r.get("ram") or 0) > 0 for r in by_phase):
        out.append("no stage-2 faults on guest RAM")
    if not any(int(r.get("mmio") or 0) > 0 for r in by_phase):
        out.append("no stage-2 faults on emulated devices (MMIO)")
    return out


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    cap = Path(argv[0])
    board_path = cap / "board.json"
    found = problems(json.loads((cap / "capture.json").read_text()),
                     json.loads(board_path.read_text()) if board_path.exists() else {},
                     json.loads(Path(argv[1]).read_text()), json.loads(Path(argv[2]).read_text()))
    for p in found:
        print(f"check: {p}", file=sys.stderr)
    if found:
        return 1
    irqs = json.loads(Path(argv[1]).read_text())["interrupts"]
    f = json.loads(Path(argv[2]).read_text())
    print(f"check: ok: {irqs['count']} guest interrupts {irqs['by_path']}, {f['faults']} stage-2 faults "
          f"({f['split']})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
