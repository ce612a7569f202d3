#!/bin/sh
# Runs inside the emulated KVM host (L1): records the host's trace with kvmtrace record while
# guest.sh starts the guest. Settings: /in/scenario.env (written by board.py).
set -u
set -o pipefail 2>/dev/null || true
. /in/scenario.env
echo "board: scenario $SCENARIO: $(grep -c ^processor /proc/cpuinfo) CPUs, $(dmesg | grep -m1 -o 'kvm \[1\]: .*mode initialized successfully' || echo 'KVM mode unknown')"
if [ -n "${THP:-}" ]; then
    echo "$THP" > /sys/kernel/mm/transparent_hugepage/enabled
fi
echo "board: transparent hugepages: $(cat /sys/kernel/mm/transparent_hugepage/enabled)"
python3 /in/kvmtrace-record.pyz -o /out/capture -p latency,faults -b "$BUFFER_KB" \
    --phase guest --workload cmd -- sh /in/guest.sh 2>&1 | tee /out/record.log
rc=$?
echo "board: recorder exit code $rc"
exit $rc
