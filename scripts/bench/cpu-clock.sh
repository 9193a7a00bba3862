#!/usr/bin/env bash
# The core's actual clock (which the TSC rate is not: turbo), from a loop of
# dependent adds that retires one add per cycle. Prints GHz. Used to turn the
# pipeline's ns/packet into cycles (docs/benchmarks.md). Needs a C compiler.
#   scripts/bench/cpu-clock.sh [CPU]      (default: the CPU it lands on)
set -euo pipefail
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
cat > "$dir/clk.c" <<'C'
#include <stdio.h>
#include <time.h>
int main(void) {
    struct timespec a, b;
    unsigned long x = 1;
    const long n = 1000000000L;
    clock_gettime(CLOCK_MONOTONIC, &a);
    for (long i = 0; i < n; i++)
        __asm__ volatile("add $1, %0\n\tadd $1, %0\n\tadd $1, %0\n\tadd $1, %0" : "+r"(x));
    clock_gettime(CLOCK_MONOTONIC, &b);
    double s = (b.tv_sec - a.tv_sec) + (b.tv_nsec - a.tv_nsec) / 1e9;
    printf("%.2f GHz (%ld dependent adds in %.3f s; check %lu)\n", 4.0 * n / s / 1e9, 4 * n, s, x);
    return 0;
}
C
cc -O2 -o "$dir/clk" "$dir/clk.c"
if [ $# -ge 1 ]; then taskset -c "$1" "$dir/clk"; else "$dir/clk"; fi
