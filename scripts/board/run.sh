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
if [ "${NATIVE:-0}" = 1 ]; then
    # the study's baseline: the same workloads on the KVM host itself, no guest running
    loops=$((SECONDS_RUN * 1000))
    python3 /in/kvmtrace-record.pyz -o /out/native -p latency -b "$BUFFER_KB" --bench-dir /in/bench \
        --workload cyclictest --loops "$loops" --interval-us 1000 --priority 80 --histogram-us 20000 \
        --workload lat_mem_rd --workload lat_pagefault --bench-size-mb "$GUEST_BENCH_MB" \
        --pagefault-mb "$GUEST_BENCH_MB" 2>&1 | tee /out/native-record.log
    echo "board: native run exit code $?"
fi
python3 /in/kvmtrace-record.pyz -o /out/capture -p latency,faults -b "$BUFFER_KB" \
    --phase guest --workload cmd -- sh /in/guest.sh 2>&1 | tee /out/record.log
rc=$?
echo "board: recorder exit code $rc"
exit $rc
