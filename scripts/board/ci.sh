#!/bin/sh
# CI stage: one 10 s scenario on the emulated arm64 KVM board, end to end, then kvmtrace analyze
# and kvmtrace faults on the fresh capture. Installs what it needs (root, Debian); fails loudly.
#   scripts/board/ci.sh [SCENARIO]        (default vhe-1vcpu; needs .venv from scripts/bootstrap.sh)
set -eu
cd "$(dirname "$0")/../.."
scenario=${1:-vhe-1vcpu}
start=$(date +%s)
fail() { echo "board-ci: FAILED: $*" >&2; exit 1; }
[ -x .venv/bin/kvmtrace ] || fail "no .venv/bin/kvmtrace (run scripts/bootstrap.sh first)"
[ "$(id -u)" = 0 ] || fail "needs root (apt-get for the emulator, mmdebstrap and the cross compiler)"
command -v timeout >/dev/null || fail "no timeout(1)"
out=$(mktemp -d /tmp/kvmtrace-board-ci.XXXXXX)
trap 'rm -rf "$out"' EXIT
# every step has its own limit; board.py also puts a hard limit around the emulator itself
timeout 900 python3 scripts/board/board.py setup-if-needed || fail "setup (apt) failed"
timeout 600 python3 scripts/board/board.py build || fail "build failed"
timeout 400 python3 scripts/board/board.py run "$scenario" -o "$out/capture" || fail "run $scenario failed"
timeout 300 .venv/bin/kvmtrace analyze --json "$out/capture" > "$out/analyze.json" || fail "kvmtrace analyze failed"
timeout 300 .venv/bin/kvmtrace faults --json "$out/capture" > "$out/faults.json" || fail "kvmtrace faults failed"
.venv/bin/python scripts/board/check_capture.py "$out/capture" "$out/analyze.json" "$out/faults.json" \
    || fail "the fresh capture does not look right"
echo "board-ci: $scenario passed in $(( $(date +%s) - start )) s"
