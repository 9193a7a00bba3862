#!/usr/bin/env bash
# A/B of two or more l4lb builds on one configuration: runs them in turn,
# ROUNDS times, the order reversed every other round (A B, B A, A B, ...), so
# slow drifts of a shared machine hit every build alike and each build runs
# first as often as the others (on the project's VM the build that ran first in
# a pair tended to win it, whatever it was); prints each build's rates, their
# median and, for each build after the first, the rounds it beat the first in.
#
#   scripts/bench/ab.sh CONFIG ROUNDS BIN_A BIN_B [BIN ...]
#   e.g. cp target/release/l4lb /tmp/l4lb-before; (change, build)
#        scripts/bench/ab.sh /tmp/l4lb-bench/l4lb.toml 6 /tmp/l4lb-before target/release/l4lb
#
# Each run is scripts/bench/rate.sh CONFIG $WARM $MEASURE (default 2 s warm-up,
# 3 s measured) with L4LB_BIN set to the build; CONFIG is one scripts/bench/testpmd.sh
# or cycles.sh wrote (they keep their inputs and configurations in /tmp/l4lb-bench).
# Ten million flows need a longer warm-up, for the table to take every flow:
#   scripts/bench/cycles.sh --flows 10000000 --table 16777216 --mbuf-room 256
#   cp /tmp/l4lb-bench/cycles.toml /tmp/c10m.toml
#   scripts/setup-hugepages.sh 6200        (cycles.sh gives its hugepages back)
#   WARM=8 MEASURE=5 scripts/bench/ab.sh /tmp/c10m.toml 4 /tmp/l4lb-before target/release/l4lb
set -euo pipefail
cd "$(dirname "$0")/../.."
[ $# -ge 4 ] || { sed -n '2,20p' "$0" >&2; exit 2; }
cfg=$1
rounds=$2
shift 2
bins=("$@")
declare -A rates
for round in $(seq 1 "$rounds"); do
  order=("${bins[@]}")
  if [ $((round % 2)) -eq 0 ]; then
    order=()
    for ((i = ${#bins[@]} - 1; i >= 0; i--)); do order+=("${bins[$i]}"); done
  fi
  for bin in "${order[@]}"; do
    r=$(L4LB_BIN=$bin scripts/bench/rate.sh "$cfg" "${WARM:-2}" "${MEASURE:-3}" | cut -d' ' -f1)
    rates[$bin]="${rates[$bin]:-} $r"
  done
done
first=($(echo ${rates[${bins[0]}]}))
for bin in "${bins[@]}"; do
  median=$(echo ${rates[$bin]} | tr ' ' '\n' | sort -n | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}')
  these=($(echo ${rates[$bin]}))
  won=""
  if [ "$bin" != "${bins[0]}" ]; then
    n=0
    for i in "${!these[@]}"; do
      awk -v a="${these[$i]}" -v b="${first[$i]}" 'BEGIN { exit !(a > b) }' && n=$((n + 1))
    done
    won="  ahead of the first in $n of ${#these[@]} rounds"
  fi
  printf '%-40s Mpps:%s  median %s%s\n' "$bin" "${rates[$bin]}" "$median" "$won"
done
