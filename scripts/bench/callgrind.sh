#!/usr/bin/env bash
# Instructions per packet of the pipeline, by callgrind: the difference between
# runs of examples/profile_pipeline over 20000 and 10000 bursts of 32 packets,
# divided by the 320000 packets between them (so start-up and the set-up of
# the tables cancel out). Counts, not times: the same for the same binary and
# input whatever else the machine does.
#
#   scripts/bench/callgrind.sh [BINARY]     (default: builds and uses
#                                            target/release/examples/profile_pipeline)
#
# Inputs: one hot IPv4 flow, one hot IPv6 flow, 4096 IPv4 flows at random, and
# TCP SYNs of new flows into a full 64k-entry table with two bursts in flight
# (as the worker runs them).
set -euo pipefail
cd "$(dirname "$0")/../.."
bin=${1:-}
if [ -z "$bin" ]; then
  cargo build --release --quiet --example profile_pipeline
  bin=target/release/examples/profile_pipeline
fi
command -v valgrind >/dev/null || { echo "valgrind missing (Debian package valgrind)" >&2; exit 1; }
count() { # ARGS... -> instructions
  valgrind --tool=callgrind --callgrind-out-file=/dev/null "$bin" "$@" 2>&1 | awk '/Collected/{print $4}'
}
printf '%-40s %s\n' "input (profile_pipeline arguments)" "instructions/packet"
for spec in "hot v4 N" "hot v6 N" "random v4 N" "syn v4 N 65536 worker"; do
  a=$(count ${spec/N/10000})
  b=$(count ${spec/N/20000})
  printf '%-40s %.1f\n' "$spec" "$(echo "($b - $a) / 320000" | bc -l)"
done
