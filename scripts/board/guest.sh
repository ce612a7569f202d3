#!/bin/sh
# The recorder's cmd workload inside L1: optional host load, then the guest (QEMU/KVM) with its
# serial console read line by line: every line goes to /out/guest-console.txt, and the guest's
# marker lines (L2_*, T:, "kvmtrace ...", LMB) are written to the recording instance's
# trace_marker, so the host trace has print events that bound each guest phase.
set -u
. /in/scenario.env
marker=/sys/kernel/tracing/trace_marker
for d in /sys/kernel/tracing/instances/kvmtrace-*; do
    [ -e "$d/trace_marker" ] && marker=$d/trace_marker
done
echo "board: markers go to $marker"
pin=""
hog=""
failed=0
if [ "$LOAD" != none ]; then
    # a CPU hog sharing CPU 1 with the guest's QEMU (and so with its vCPU threads)
    pin="taskset -c 1"
    taskset -c 1 sh -c 'while :; do :; done' &
    hog=$!
    echo "board: CPU hog pid $hog on CPU 1"
fi
disk=""
if [ "$GUEST_TRACE" = 1 ]; then
    dd if=/dev/zero of=/tmp/gout.img bs=1M count=0 seek=256 2>/dev/null
    disk="-drive if=none,id=gout,file=/tmp/gout.img,format=raw -device virtio-blk-device,drive=gout,serial=kvmtrace-gout"
fi
cmdline="console=ttyAMA0 quiet rdinit=/init panic=-1 kvmtrace.workload=$WORKLOAD kvmtrace.seconds=$SECONDS_RUN kvmtrace.memmb=$GUEST_BENCH_MB kvmtrace.gtrace=$GUEST_TRACE"
rm -f /tmp/l2con
mkfifo /tmp/l2con
cr=$(printf '\r')
(
    while IFS= read -r line; do
        line=${line%"$cr"}
        printf '%s\n' "$line" >> /out/guest-console.txt
        case "$line" in
            L2_*|T:*|"kvmtrace "*|LMB*) printf '%s\n' "$line" > "$marker" ;;
        esac
    done
) < /tmp/l2con &
relay=$!
# shellcheck disable=SC2086
timeout "$GUEST_TIMEOUT" $pin qemu-system-aarch64 -M virt,gic-version=3 -enable-kvm -cpu host \
    -smp "$VCPUS" -m "$GUEST_MB" -name l2,debug-threads=on -nodefaults -display none -monitor none \
    -serial stdio -no-reboot -kernel /boot/vmlinuz -initrd /in/l2.cpio.gz -append "$cmdline" $disk \
    < /dev/null > /tmp/l2con 2>/out/guest-qemu-stderr.txt &
qemu=$!
if [ "$LOAD" = hog-fifo ]; then
    # QEMU creates its vCPU threads ("CPU n/KVM") once started; under the hog that takes a while
    n=0 tids=""
    while [ $n -lt 600 ]; do
        tids=$(grep -l 'CPU .*/KVM' /proc/[0-9]*/task/*/comm 2>/dev/null | cut -d/ -f5 || true)
        [ "$(echo "$tids" | grep -c .)" -ge "$VCPUS" ] && break
        n=$((n + 1))
        sleep 0.1
    done
    [ -n "$tids" ] || { echo "board: ERROR no vCPU threads found after 60 s: SCHED_FIFO not set"; failed=1; }
    for t in $tids; do
        # busybox-static has no chrt: python3 (there for the recorder) sets the policy
        if python3 -c 'import os, sys; os.sched_setscheduler(int(sys.argv[1]), os.SCHED_FIFO, os.sched_param(10))' "$t"
        then
            echo "board: vCPU thread $t ($(cat "/proc/$t/comm")) now SCHED_FIFO 10"
        else
            echo "board: ERROR cannot make vCPU thread $t SCHED_FIFO"
            failed=1
        fi
    done
fi
wait $qemu
rc=$?
wait $relay
[ -n "$hog" ] && kill "$hog"
if [ "$GUEST_TRACE" = 1 ]; then
    mkdir -p /out/guest-raw
    tar -xf /tmp/gout.img -C /out/guest-raw || echo "board: no guest-side recording came back"
fi
echo "board: guest exit code $rc"
[ "$failed" = 0 ] || exit 1
exit $rc
