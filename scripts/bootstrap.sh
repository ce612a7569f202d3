#!/bin/sh
# Set up everything kvmtrace needs on a fresh Debian machine: trace-cmd, a C compiler (for the
# trace.dat reader's native kernels) and rt-tests (when root and missing), a virtualenv in .venv,
# the package itself, and the native kernels built once (kvmtrace/ingest/kernels.py).
#   scripts/bootstrap.sh        runtime only
#   scripts/bootstrap.sh --dev  plus the test tooling (pytest, hypothesis, ruff, mypy, atheris; Debian's
#                               chromium for the report's browser test; gcc and trace-cmd also serve the
#                               fuzzing: scripts/fuzz/, docs/reliability.md)
set -eu
cd "$(dirname "$0")/.."
want_dev=0
[ "${1:-}" = "--dev" ] && want_dev=1

need_pkgs=""
command -v trace-cmd >/dev/null 2>&1 || need_pkgs="$need_pkgs trace-cmd"
command -v "${CC:-cc}" >/dev/null 2>&1 || need_pkgs="$need_pkgs gcc libc6-dev"
if [ "$want_dev" = 1 ]; then
    command -v cyclictest >/dev/null 2>&1 || need_pkgs="$need_pkgs rt-tests"
    # the report's browser test (tests/test_report_browser.py) opens it in headless Chromium
    [ -x /usr/bin/chromium ] || need_pkgs="$need_pkgs chromium"
fi
if [ -n "$need_pkgs" ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "bootstrap: installing Debian packages:$need_pkgs" >&2
        apt-get update -qq >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $need_pkgs >/dev/null
    else
        echo "bootstrap: please install:$need_pkgs (trace-cmd is the reference reader; without a C" \
             "compiler the trace.dat reader falls back to numpy, 2-4x slower)" >&2
    fi
fi

# the recording tests (tests/test_record.py, test_lost_events.py) record on this machine: as root, mount
# tracefs where the kernel has it and nothing is mounted yet (a fresh container often has none)
if [ "$want_dev" = 1 ] && [ "$(id -u)" = 0 ] && [ ! -e /sys/kernel/tracing/instances ] \
        && grep -qw tracefs /proc/filesystems 2>/dev/null; then
    mount -t tracefs nodev /sys/kernel/tracing 2>/dev/null \
        && echo "bootstrap: mounted tracefs at /sys/kernel/tracing" >&2 \
        || echo "bootstrap: could not mount tracefs: the recording tests will be skipped" >&2
fi

if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
extra=""
[ "$want_dev" = 1 ] && extra="[dev]"
stamp=".venv/.kvmtrace-installed$extra"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    .venv/bin/python -m pip install -q --upgrade pip >/dev/null
    .venv/bin/python -m pip install -q -e ".$extra"
    touch "$stamp"
fi
# Build the native kernels now rather than on the first read; say which engine reads trace.dat.
.venv/bin/python -c "from kvmtrace.ingest import kernels; e = kernels.engine(); print(f'bootstrap: trace.dat engine: {e.name} ({e.detail})')" >&2
