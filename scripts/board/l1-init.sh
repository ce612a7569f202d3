#!/bin/busybox sh
# /init of the emulated arm64 KVM host ("L1"). Mounts the usual file systems, loads the virtio
# block drivers, unpacks the run's input tar (disk serial kvmtrace-in), runs its run.sh and writes
# /out as a tar stream onto the output disk (serial kvmtrace-out), then powers off.
/bin/busybox mkdir -p /bb
/bin/busybox --install -s /bb
export PATH=/usr/sbin:/usr/bin:/sbin:/bin:/bb
mkdir -p /proc /sys /dev /tmp /run /in /out
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/shm /dev/pts
mount -t tmpfs tmpfs /dev/shm
mount -t tmpfs tmpfs /tmp
mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null || true
echo "board: L1 up, uptime $(cut -d' ' -f1 /proc/uptime) s, $(uname -r)"
for m in virtio_mmio virtio_blk; do
    insmod "/lib/modules/board/$m.ko" || echo "board: insmod $m failed"
done

disk_with_serial() {
    for i in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20; do
        for d in /sys/block/vd*; do
            [ -e "$d/serial" ] && [ "$(cat "$d/serial")" = "$1" ] && { echo "/dev/${d##*/}"; return 0; }
        done
        sleep 0.2
    done
    return 1
}

finish() {
    out=$(disk_with_serial kvmtrace-out) || { echo "board: ERROR no output disk"; poweroff -f; }
    dmesg > /out/host-dmesg.txt 2>/dev/null || true
    tar -cf "$out" -C /out . && sync
    echo "board: results written to $out ($(du -sk /out | cut -f1) KB)"
    poweroff -f
}

in=$(disk_with_serial kvmtrace-in) || { echo "board: ERROR no input disk"; finish; }
tar -xf "$in" -C /in || echo "board: ERROR cannot unpack the input tar"
if [ -f /in/run.sh ]; then
    sh /in/run.sh
    echo "board: run.sh exit code $?"
else
    echo "board: ERROR /in/run.sh missing"
fi
finish
