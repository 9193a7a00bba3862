#!/usr/bin/env bash
# A/B of two or more l4lb builds on one configuration: runs them in turn,
# ROUNDS times (A B A B ...), so slow drifts of a shared machine hit every build
# alike, and prints each build's rates and their median.
#
#   scripts/bench-ab.sh CONFIG ROUNDS BIN_A BIN_B [BIN ...]
#   e.g. cp target/release/l4lb /tmp/l4lb-before; (change, build)
#        scripts/bench-ab.sh /tmp/l4lb-bench/l4lb.toml 6 /tmp/l4lb-before target/release/l4lb
#
# Each run is scripts/bench-l4lb.sh CONFIG 2 3 (2 s warm-up, 3 s measured) with
# L4LB_BIN set to the build; CONFIG is one scripts/bench.sh wrote (it keeps its
# inputs and configurations in /tmp/l4lb-bench).
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 4 ] || { sed -n '2,12p' "$0" >&2; exit 2; }
cfg=$1
rounds=$2
shift 2
declare -A rates
for _ in $(seq 1 "$rounds"); do
  for bin in "$@"; do
    r=$(L4LB_BIN=$bin scripts/bench-l4lb.sh "$cfg" 2 3 | cut -d' ' -f1)
    rates[$bin]="${rates[$bin]:-} $r"
  done
done
for bin in "$@"; do
  median=$(echo ${rates[$bin]} | tr ' ' '\n' | sort -n | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}')
  printf '%-40s Mpps:%s  median %s\n' "$bin" "${rates[$bin]}" "$median"
done
