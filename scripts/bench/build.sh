#!/bin/sh
# Build the microbenchmarks with the system compiler or a cross compiler.
#   scripts/bench/build.sh [OUTDIR]                                  native (cc)
#   CROSS_COMPILE=aarch64-linux-gnu- scripts/bench/build.sh out/     for an arm64 board
#   CC=arm-linux-gnueabihf-gcc scripts/bench/build.sh out/           any compiler
# The recorder finds them as OUTDIR/kvmtrace-lat_mem_rd and OUTDIR/kvmtrace-lat_pagefault
# (pass --bench-dir OUTDIR, or put them next to kvmtrace-record.pyz or on PATH).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-$here/build}
cc=${CC:-${CROSS_COMPILE:-}cc}
[ -n "${CROSS_COMPILE:-}" ] && [ -z "${CC:-}" ] && cc=${CROSS_COMPILE}gcc
mkdir -p "$out"
for b in lat_mem_rd lat_pagefault; do
    $cc -O2 -std=gnu99 -Wall -o "$out/kvmtrace-$b" "$here/$b.c" ${LDFLAGS:-}
    echo "built $out/kvmtrace-$b"
done
