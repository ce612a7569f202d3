#!/bin/busybox sh
# /init of the KVM guest ("L2"): busybox, cyclictest and the memory microbenchmarks.
# Settings come from the kernel command line (kvmtrace.workload=, kvmtrace.seconds=, ...).
# Every line starting with L2_, T:, "kvmtrace " or LMB is copied by the host into its trace.
/bin/busybox --install -s /bin
export PATH=/usr/local/bin:/bin:/usr/bin:/sbin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/shm /tmp
mount -t tmpfs tmpfs /dev/shm
mount -t tmpfs tmpfs /tmp
KT_workload=cyclictest KT_seconds=10 KT_memmb=64 KT_loads=1000000 KT_gtrace=0
for w in $(cat /proc/cmdline); do
    case "$w" in
        kvmtrace.*=*) k=${w#kvmtrace.}; eval "KT_${k%%=*}=\${w#*=}" ;;
    esac
done
export KT_workload KT_seconds KT_memmb KT_loads KT_gtrace
echo "L2_SHELL uptime=$(cut -d' ' -f1 /proc/uptime) cpus=$(grep -c ^processor /proc/cpuinfo)"
if [ "$KT_gtrace" = 1 ]; then
    # guest-side recording with the shell recorder; the raw directory leaves on the disk
    # with serial kvmtrace-gout as a tar stream (the host turns it into a capture)
    for m in virtio_mmio virtio_blk; do insmod "/lib/modules/$m.ko" 2>/dev/null; done
    # the workload's output must reach the console (record.sh keeps a cmd workload's output)
    kp=""  # the guest's stage-1 page faults (arm64 has no tracepoint for them) when it runs the memory benchmarks
    case "$KT_workload" in *mem*) kp="-k handle_mm_fault" ;; esac
    # shellcheck disable=SC2086
    sh /record.sh -o /tmp/rec -p latency -b 4096 $kp -w cmd -P guest -- sh -c 'sh /workload.sh > /dev/console 2>&1' 
    echo "L2_GUEST_RECORD exit=$?"
    [ -f /tmp/cyclictest.txt ] && cp /tmp/cyclictest.txt /tmp/rec/cyclictest.txt
    for d in /sys/block/vd*; do
        if [ "$(cat "$d/serial" 2>/dev/null)" = kvmtrace-gout ]; then
            tar -cf "/dev/${d##*/}" -C /tmp/rec . && sync && echo "L2_GUEST_RECORD saved"
        fi
    done
else
    sh /workload.sh
fi
echo "L2_POWEROFF uptime=$(cut -d' ' -f1 /proc/uptime)"
poweroff -f
