#!/bin/sh
# record.sh - kvmtrace's recorder in POSIX sh with busybox tools, for targets without Python.
#
#   record.sh -o DIR [-p PRESET] [-e SYSTEM:EVENT]... [-k FUNCTION]... [-b KB] [-C CLOCK] [-c CPUMASK_HEX]
#             [-d SECONDS] [-K] [-w cyclictest|cmd] [-l LOOPS] [-i INTERVAL_US] [-P PHASE] [-- ARGS...]
#
# Writes DIR/raw/ (per-CPU trace_pipe_raw pages, format files, cmdlines, stats, info) and
# DIR/raw/out/ (workload output). On the workstation:
#   kvmtrace record --from-raw DIR/raw -o CAPTURE_DIR      -> trace.dat + capture.json
# Uses a private instance (instances/kvmtrace-<pid>) that is removed on every exit path
# (normal end, Ctrl-C, SIGTERM, a failing workload). Presets must match kvmtrace/record/events.py.
# -k FUNCTION adds a kprobe event on a kernel function (e.g. handle_mm_fault: a guest's stage-1 page
# faults, which arm64 has no tracepoint for), removed again on exit.
set -u

PRESET_LATENCY="kvm:kvm_entry kvm:kvm_exit kvm:kvm_vcpu_wakeup kvm:kvm_wfx_arm64 kvm:kvm_timer_update_irq kvm:kvm_timer_save_state kvm:kvm_timer_restore_state kvm:kvm_timer_hrtimer_expire kvm:kvm_timer_emulate kvm:vgic_update_irq_pending kvm:kvm_irq_line kvm:kvm_set_irq kvm:kvm_inj_virq kvm:kvm_apic_accept_irq kvm:kvm_apicv_accept_irq sched:sched_switch sched:sched_wakeup sched:sched_waking irq:irq_handler_entry irq:irq_handler_exit timer:hrtimer_expire_entry timer:hrtimer_expire_exit timer:hrtimer_start irq:softirq_entry irq:softirq_exit ipi:*"
PRESET_FAULTS="kvm:kvm_guest_fault kvm:kvm_access_fault kvm:kvm_mmio kvm:kvm_userspace_exit kvm:kvm_exit kvm:kvm_entry kvm:kvm_page_fault exceptions:page_fault_user exceptions:page_fault_kernel"
PRESET_ALL_KVM="kvm:* kvmmmu:*?"

OUT="" PRESET="latency" EXTRA="" KPROBES="" BUF=8192 CLOCK="mono" CPUMASK="" DURATION="" KALLSYMS=1
WORKLOAD="" LOOPS=1000 INTERVAL=30000 PHASE=""
die() { echo "record.sh: $*" >&2; command -v remove_kprobes >/dev/null 2>&1 && remove_kprobes; exit 2; }

while [ $# -gt 0 ]; do
    case "$1" in
        -o) OUT=$2; shift 2 ;;
        -p) PRESET=$2; shift 2 ;;
        -e) EXTRA="$EXTRA $2"; shift 2 ;;
        -k) KPROBES="$KPROBES $2"; shift 2 ;;
        -b) BUF=$2; shift 2 ;;
        -C) CLOCK=$2; shift 2 ;;
        -c) CPUMASK=$2; shift 2 ;;
        -d) DURATION=$2; shift 2 ;;
        -K) KALLSYMS=0; shift ;;
        -w) WORKLOAD=$2; shift 2 ;;
        -l) LOOPS=$2; shift 2 ;;
        -i) INTERVAL=$2; shift 2 ;;
        -P) PHASE=$2; shift 2 ;;
        --) shift; break ;;
        -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
        *) die "unknown option $1 (see -h)" ;;
    esac
done
[ -n "$OUT" ] || die "-o DIR is required"
[ -d "$OUT" ] && [ -n "$(ls -A "$OUT" 2>/dev/null)" ] && die "$OUT: exists and is not an empty directory"
case "$WORKLOAD" in ""|cyclictest|cmd) ;; *) die "-w $WORKLOAD: expected cyclictest or cmd" ;; esac
[ "$WORKLOAD" = cmd ] && [ $# -eq 0 ] && die "-w cmd needs a command after --"

# ---------------------------------------------------------------- tracefs
T=""
for d in /sys/kernel/tracing /sys/kernel/debug/tracing; do
    [ -d "$d/instances" ] && { T=$d; break; }
done
MOUNTED=0
if [ -z "$T" ]; then
    [ -d /sys/kernel/tracing ] || die "tracefs not found: /sys/kernel/tracing does not exist"
    mount -t tracefs nodev /sys/kernel/tracing 2>/dev/null || die "tracefs not mounted and mounting it failed (run as root)"
    T=/sys/kernel/tracing MOUNTED=1
fi
[ -w "$T/instances" ] || die "$T: permission denied (run as root)"

events_for() {  # one spec -> "system:event" lines that exist here
    set +f; spec=${1%\?}; sys=${spec%%:*}; ev=${spec#*:}
    if [ "$ev" = "*" ]; then
        for p in "$T/events/$sys"/*/; do [ -d "$p" ] && { e=${p%/}; echo "$sys:${e##*/}"; }; done
    elif [ -d "$T/events/$sys/$ev" ]; then
        echo "$sys:$ev"
    fi
}
KGROUP="kvmtrace$$"
for f in $KPROBES; do
    echo "p:$KGROUP/$f $f" >> "$T/kprobe_events" 2>/dev/null || die "cannot add a kprobe on $f (not probeable?)"
    EXTRA="$EXTRA $KGROUP:$f"
done
remove_kprobes() { for f in $KPROBES; do echo "-:$KGROUP/$f" >> "$T/kprobe_events" 2>/dev/null; done; }
SPECS=""
for p in $(echo "$PRESET" | tr ',' ' '); do
    case "$p" in
        latency) SPECS="$SPECS $PRESET_LATENCY" ;;
        faults) SPECS="$SPECS $PRESET_FAULTS" ;;
        all-kvm) SPECS="$SPECS $PRESET_ALL_KVM" ;;
        none) ;;
        *) die "unknown preset $p: expected latency, faults, all-kvm or none" ;;
    esac
done
EVENTS="" MISSING=""
set -f
for s in $SPECS; do
    found=$(events_for "$s")
    [ -z "$found" ] && case "$s" in *\?) ;; *) MISSING="$MISSING $s" ;; esac
    EVENTS="$EVENTS $found"
done
for s in $EXTRA; do
    case "$s" in *:*) ;; *) s="$s:*" ;; esac
    found=$(events_for "$s")
    [ -n "$found" ] || die "unknown event $s: not in $T/events"
    EVENTS="$EVENTS $found"
done
set +f
EVENTS=$(echo $EVENTS | tr ' ' '\n' | awk 'NF && !seen[$0]++' | tr '\n' ' ')
[ -n "$EVENTS" ] || die "no events to record"
grep -qw "$CLOCK" "$T/trace_clock" || die "unknown trace clock $CLOCK: this kernel offers $(tr -d '[]' < "$T/trace_clock")"

# ---------------------------------------------------------------- instance and cleanup
RAW="$OUT/raw"
I="$T/instances/kvmtrace-$$"
STATUS="complete" CODE=0 WPID="" READERS="" CLEANED=0 STARTED=0
mkdir -p "$RAW/out" "$RAW/stats" || die "$OUT: cannot create"
echo "status=setup" > "$RAW/info" || die "$RAW/info: cannot write"

kill_readers() {
    for p in $READERS; do kill "$p" 2>/dev/null; done
    for p in $READERS; do wait "$p" 2>/dev/null; done
    READERS=""
}
cpus() { for c in "$I"/per_cpu/cpu*; do echo "${c##*/cpu}"; done; }
drain_cpu() {  # read the full pages the buffer holds (+$2 more), padding short reads to a page
    b=$(sed -n 's/^bytes: //p' "$I/per_cpu/cpu$1/stats")
    n=$(( ${b:-0} / 4080 + $2 ))
    [ "$n" -gt 0 ] || return 0
    dd if="$I/per_cpu/cpu$1/trace_pipe_raw" bs="$PAGE" count="$n" conv=sync 2>/dev/null >> "$RAW/cpu$1.raw"
}
reader_loop() { while [ -e "$RAW/.running" ]; do drain_cpu "$1" 0; sleep 1; done; }
final_drain() {
    for c in $(cpus); do (drain_cpu "$c" 1) & READERS="$READERS $!"; done
    sleep 2
    kill_readers
}
marker() { [ -w "$I/trace_marker" ] && echo "$*" > "$I/trace_marker" 2>/dev/null; }

cleanup() {
    [ "$CLEANED" = 1 ] && return
    CLEANED=1
    trap '' INT TERM HUP
    if [ -n "$WPID" ]; then kill -TERM "$WPID" 2>/dev/null; sleep 1; kill -KILL "$WPID" 2>/dev/null; wait "$WPID" 2>/dev/null; fi
    [ -n "$PHASE_OPEN" ] && marker "kvmtrace phase $PHASE_OPEN end"
    rm -f "$RAW/.running"
    if [ -d "$I" ]; then
        echo 0 > "$I/tracing_on"
        kill_readers
        [ "$STARTED" = 1 ] && final_drain
        for c in $(cpus); do cat "$I/per_cpu/cpu$c/stats" > "$RAW/stats/cpu$c"; done
        rmdir "$I" 2>/dev/null || { sleep 1; rmdir "$I"; } || echo "record.sh: could not remove $I" >&2
    fi
    remove_kprobes
    { cat "$T/saved_cmdlines" 2>/dev/null
      for t in /proc/[0-9]*/task/[0-9]*; do echo "${t##*/} $(cat "$t/comm" 2>/dev/null)"; done; } \
        | awk 'NF >= 2' > "$RAW/saved_cmdlines"
    [ "$MOUNTED" = 1 ] && umount "$T"
    sed -i "s/^status=.*/status=$STATUS/" "$RAW/info" 2>/dev/null
    echo "exit_code=$CODE" >> "$RAW/info"
    echo "ended=$(date +%Y-%m-%dT%H:%M:%S%z)" >> "$RAW/info"
    if [ "$STARTED" = 0 ]; then rm -rf "$OUT"; echo "record.sh: $STATUS before recording started" >&2; fi
}
on_signal() {
    if [ -z "$WORKLOAD" ] && [ -z "$DURATION" ] && [ "$STARTED" = 1 ]; then STATUS="stopped by SIG$1"; CODE=0
    else STATUS="interrupted by SIG$1"; CODE=$2; fi
    cleanup; exit "$CODE"
}
PHASE_OPEN=""
trap 'on_signal INT 130' INT
trap 'on_signal TERM 143' TERM
trap 'on_signal HUP 129' HUP
trap 'cleanup' EXIT

mkdir "$I" 2>/dev/null || { STATUS="error"; die "cannot create tracefs instance $I (run as root)"; }
echo 0 > "$I/tracing_on"
echo "$CLOCK" > "$I/trace_clock" || die "cannot set trace clock $CLOCK"
echo "$BUF" > "$I/buffer_size_kb" || die "cannot set buffer_size_kb $BUF"
[ -n "$CPUMASK" ] && { echo "$CPUMASK" > "$I/tracing_cpumask" || die "bad CPU mask $CPUMASK"; }
[ -e "$I/options/copy_trace_marker" ] && echo 1 > "$I/options/copy_trace_marker"
for e in $EVENTS; do echo 1 > "$I/events/${e%%:*}/${e#*:}/enable" || die "cannot enable $e"; done

# ---------------------------------------------------------------- metadata
cp "$T/events/header_page" "$T/events/header_event" "$RAW/" || die "$RAW: cannot write"
for f in "$T"/events/ftrace/*/format; do
    e=${f%/format}; mkdir -p "$RAW/events/ftrace/${e##*/}"; cat "$f" > "$RAW/events/ftrace/${e##*/}/format"
done
for e in $EVENTS; do
    d="$RAW/events/${e%%:*}/${e#*:}"; mkdir -p "$d"; cat "$I/events/${e%%:*}/${e#*:}/format" > "$d/format"
done
cat "$T/printk_formats" > "$RAW/printk_formats" 2>/dev/null
[ "$KALLSYMS" = 1 ] && cat /proc/kallsyms > "$RAW/kallsyms"
echo "$CLOCK" > "$RAW/trace_clock"
uname -a > "$RAW/uname"
PAGE=$(awk -F'[:;]' '/field: char data/ { print $4 + $6 }' "$T/events/header_page")
PAGE=${PAGE:-4096}
ARCH=$(uname -m)
MODEL=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)
[ -n "$MODEL" ] || MODEL="CPU part $(sed -n 's/^CPU part[[:space:]]*: //p' /proc/cpuinfo | sort -u | tr '\n' ' ')"
SIDE=host
[ -e /dev/kvm ] || { grep -qw hypervisor /proc/cpuinfo || [ -e /sys/firmware/devicetree/base/hypervisor ]; } && SIDE=guest
[ -e /dev/kvm ] && SIDE=host
{
    echo "status=setup"; echo "recorder=record.sh"; echo "side=$SIDE"; echo "kernel=$(uname -r)"
    echo "uname=$(uname -a)"; echo "arch=$ARCH"; echo "cpu_model=$MODEL"; echo "hostname=$(uname -n)"
    echo "sched_rt_runtime_us=$(cat /proc/sys/kernel/sched_rt_runtime_us 2>/dev/null)"
    echo "sched_rt_period_us=$(cat /proc/sys/kernel/sched_rt_period_us 2>/dev/null)"
    echo "clock=$CLOCK"; echo "buffer_size_kb=$BUF"; echo "events=$EVENTS"; echo "missing_events=$MISSING"
    echo "instance=kvmtrace-$$"; echo "started=$(date +%Y-%m-%dT%H:%M:%S%z)"
    case "$ARCH" in *eb|*_be|ppc64|s390x|mips) echo "endian=big" ;; *) echo "endian=little" ;; esac
} > "$RAW/info"
[ -n "$MISSING" ] && echo "record.sh: not on this kernel (skipped):$MISSING" >&2

# ---------------------------------------------------------------- record
touch "$RAW/.running"
for c in $(cpus); do reader_loop "$c" & READERS="$READERS $!"; done
echo 1 > "$I/tracing_on"
STARTED=1
echo "record.sh: recording into $OUT (Ctrl-C stops)" >&2

run_workload() {  # $1 phase, $2 output file, then the command
    ph=$1 outf=$2; shift 2
    echo "workload=$WORKLOAD" >> "$RAW/info"; echo "phase=$ph" >> "$RAW/info"
    echo "workload_argv=$*" >> "$RAW/info"; echo "workload_output=$(basename "$outf")" >> "$RAW/info"
    marker "kvmtrace phase $ph begin"; PHASE_OPEN=$ph
    "$@" > "$outf" 2>&1 &
    WPID=$!
    wait "$WPID"; rc=$?
    WPID=""
    PHASE_OPEN=""
    [ "$WORKLOAD" = cyclictest ] && cyclictest_summary "$outf"
    marker "kvmtrace phase $ph end"
    [ "$rc" -ne 0 ] && { STATUS="workload $ph failed (exit code $rc)"; CODE=1; }
}
cyclictest_summary() {  # the T: line, rebuilt from -h/-v output (cyclictest prints none with -h)
    t=$(grep -m1 '^T:' "$1")
    if [ -z "$t" ]; then
        c=$(sed -n 's/^# Total: 0*//p' "$1" | head -n 1); mn=$(sed -n 's/^# Min Latencies: 0*//p' "$1" | head -n 1)
        av=$(sed -n 's/^# Avg Latencies: 0*//p' "$1" | head -n 1); mx=$(sed -n 's/^# Max Latencies: 0*//p' "$1" | head -n 1)
        act=$(grep -E '^ *0: *[0-9]+: *[0-9]+' "$1" | tail -n 1 | awk -F: '{ print $3 + 0 }')
        t="T: 0 (    0) P:99 I:$INTERVAL C:${c:-0} Min:${mn:-0} Act:${act:-0} Avg:${av:-0} Max:${mx:-0}"
    fi
    marker "$t"
}

if [ "$WORKLOAD" = cyclictest ]; then
    command -v cyclictest >/dev/null 2>&1 || { STATUS="error"; CODE=2; echo "record.sh: cyclictest not found" >&2; exit 2; }
    if [ $# -gt 0 ]; then set -- cyclictest "$@"
    else set -- cyclictest -m -p 99 -i "$INTERVAL" -l "$LOOPS" -h 10000 -v; fi
    run_workload "${PHASE:-cyclictest}" "$RAW/out/cyclictest.txt" "$@"
elif [ "$WORKLOAD" = cmd ]; then
    run_workload "${PHASE:-cmd}" "$RAW/out/cmd.txt" "$@"
elif [ -n "$DURATION" ]; then
    sleep "$DURATION" & WPID=$!; wait "$WPID"; WPID=""
else
    while :; do sleep 1 & WPID=$!; wait "$WPID"; done
fi
cleanup
exit "$CODE"
