#!/usr/bin/env bash
# Write every analysis command's JSON (and text) output on the bundled captures and synth presets to
# DIR, one file per (capture, command), so two versions of kvmtrace can be compared with diff -r:
#     scripts/golden_outputs.sh /tmp/before            # in one checkout
#     scripts/golden_outputs.sh /tmp/after             # in the other
#     diff -r /tmp/before /tmp/after
# Used to show that a reorganising change is behaviour-neutral (issue 12). KVMTRACE selects the
# interpreter/package (default: this checkout's .venv with this checkout first on PYTHONPATH).
set -euo pipefail
out=${1:?usage: golden_outputs.sh DIR}
root=$(cd "$(dirname "$0")/.." && pwd)
py=${PYTHON:-$root/.venv/bin/python}
export PYTHONPATH=$root KVMTRACE_NO_CACHE=1 COLUMNS=160 NO_COLOR=1
kt() { "$py" -m kvmtrace "$@"; }
synth=${GOLDEN_SYNTH:-/tmp/kvmtrace-golden-synth}  # the same path in both runs: it appears in outputs
mkdir -p "$out" "$synth"
cd "$root"  # captures by relative path: the same text in both checkouts' outputs
caps=()
for c in captures/*/ tests/fixtures/x86-guest-pagefaults/; do caps+=("${c%/}"); done
for preset in study-guest hog rt-vcpu adversarial; do
    d=$synth/$preset
    [ -e "$d/trace.dat" ] || kt synth "$preset" -o "$d" --seed 7 >/dev/null 2>&1 || true
    [ -e "$d/trace.dat" ] && caps+=("$d")
done
# the text reader too: one synth capture as trace-cmd report text
d=$synth/text-hog
[ -e "$d/trace.txt" ] || kt synth hog -o "$d" --seed 7 --text >/dev/null 2>&1 || true
[ -e "$d/trace.txt" ] && caps+=("$d/trace.txt")
for c in "${caps[@]}"; do
    name=$(basename "$c"); [ "$name" = trace.txt ] && name=text-hog
    for cmd in info analyze exits faults vcpus; do
        kt "$cmd" "$c" --no-cache --json >"$out/$name.$cmd.json" 2>"$out/$name.$cmd.err" || echo "exit $?" >>"$out/$name.$cmd.err"
    done
    for cmd in analyze exits faults; do
        kt "$cmd" "$c" --no-cache >"$out/$name.$cmd.txt" 2>&1 || echo "exit $?" >>"$out/$name.$cmd.txt"
    done
done
# the synth captures themselves must not differ either
(cd "$synth" && find . -type f -name '*.dat' -exec sha256sum {} + | sort -k2) >"$out/synth.sha256"
rm -rf "$synth"
echo "$out: $(ls "$out" | wc -l) files"
