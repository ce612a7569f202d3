#!/bin/sh
# The guest's workload, one phase after another (run by l2-init.sh, or under record.sh).
s=${KT_seconds:-10}
# Marker lines go to the console (the host copies them into its trace) and, when the guest records
# itself (record.sh), into the guest's own trace too.
gmarker=""
for d in /sys/kernel/tracing/instances/kvmtrace-*; do
    [ -e "$d/trace_marker" ] && gmarker=$d/trace_marker
done
mark() {
    echo "$1"
    if [ -n "$gmarker" ]; then echo "$1" > "$gmarker"; fi
}
result() {  # a benchmark's summary line as a marker, or an error line the host can see
    if [ -n "$1" ]; then mark "kvmtrace result $1"; else echo "L2_ERROR $2 gave no result"; fi
}
n=$(grep -c ^processor /proc/cpuinfo)
for w in $(echo "${KT_workload:-cyclictest}" | tr , ' '); do
    case "$w" in
    cyclictest)
        mark "L2_CYCLICTEST_START"
        # -v: every loop's latency (thread:loop:us) into a file that leaves with the guest's
        # recording (KT_gtrace=1); never over the console, where each character is an MMIO exit
        verbose=""
        [ "${KT_gtrace:-0}" = 1 ] && verbose=-v
        cyclictest -m -t"$n" -a -d 0 -p 80 -i 1000 -D "${s}s" -q $verbose > /tmp/cyclictest.txt 2>&1
        rc=$?
        grep -v -E '^ *[0-9]+: *[0-9]+: *[0-9]+ *$' /tmp/cyclictest.txt | while IFS= read -r line; do
            case "$line" in T:*) mark "$line" ;; *) echo "$line" ;; esac
        done
        mark "L2_CYCLICTEST_END rc=$rc"
        ;;
    mem)
        for pat in seq random; do
            flag=""
            [ "$pat" = random ] && flag=-r
            mark "kvmtrace phase lat_mem_rd_$pat begin"
            r=$(kvmtrace-lat_mem_rd $flag -l "${KT_loads:-1000000}" "${KT_memmb:-64}" | tail -n 1)
            result "$r" lat_mem_rd
            mark "kvmtrace phase lat_mem_rd_$pat end"
        done
        mark "kvmtrace phase lat_pagefault begin"
        r=$(kvmtrace-lat_pagefault -n 2 -s "${KT_memmb:-64}" /tmp/pagefault.dat | tail -n 1)
        result "$r" lat_pagefault
        mark "kvmtrace phase lat_pagefault end"
        rm -f /tmp/pagefault.dat
        # anonymous memory the guest never touched: stage-2 faults as well as stage-1 ones
        mark "kvmtrace phase lat_pagefault_anon begin"
        r=$(kvmtrace-lat_pagefault -a -n 1 -s "${KT_memmb:-64}" | tail -n 1)
        result "$r" lat_pagefault_anon
        mark "kvmtrace phase lat_pagefault_anon end"
        ;;
    idle)
        mark "L2_IDLE_START"
        sleep "$s"
        mark "L2_IDLE_END"
        ;;
    *) echo "L2_ERROR unknown workload $w" ;;
    esac
done
