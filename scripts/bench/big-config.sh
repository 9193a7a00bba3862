#!/usr/bin/env bash
# A big configuration on a running l4lb: 1,000 services x 100 backends (or
# SERVICES x BACKENDS) on a net_null port, kept in one file and as a main
# file that includes one file per service. For each: `l4lb check`, the
# start-up (from the command to l4lb's "running" line: EAL, every Maglev
# table, the workers started), l4lb's resident memory then, and three
# reloads that change one backend's weight, each timed from the command to
# `l4lb ctl reload`'s answer, which comes when every worker runs the new
# state (l4lb's own figure from the request to that moment is printed too).
#
#   scripts/bench/big-config.sh [SERVICES BACKENDS]
#
# BIN=PATH times another l4lb build (an older one: LAYOUTS=one where it
# lacks `include`). Needs no hugepages (the configuration runs EAL with --no-huge); files go to
# /tmp/l4lb-bench/big.
set -euo pipefail
cd "$(dirname "$0")/../.."
services=${1:-1000}
backends=${2:-100}
WORK=/tmp/l4lb-bench/big
BIN=${BIN:-target/release/l4lb}
# shellcheck source=scripts/bench/lib.sh
source scripts/bench/lib.sh
trap 'l4lb_stop; rm -rf "$WORK" /var/run/dpdk/l4lbbig' EXIT
cargo build --quiet --release --bin l4lb --example big_config
gen=target/release/examples/big_config

ms_since() { echo $(( ($(date +%s%N) - $1) / 1000000 )); }

echo "== $services services x $backends backends, $(date -u +%F), $(nproc) CPUs"
for layout in ${LAYOUTS:-one split}; do
  rm -rf "$WORK"
  mkdir -p "$WORK"
  cfg=$($gen write "$WORK" "$layout" 1 "$services" "$backends")
  echo "-- layout: $layout ($(du -sh --apparent-size "$WORK" | cut -f1))"
  t=$(date +%s%N)
  "$BIN" check --config "$cfg" >/dev/null
  echo "check                   $(ms_since "$t") ms"
  t=$(date +%s%N)
  l4lb_start "$cfg" "$WORK/l4lb.log"
  echo "start-up                $(ms_since "$t") ms"
  echo "resident memory         $(awk '/VmRSS/ {printf "%.0f MiB", $2 / 1024}' "/proc/$L4LB_PID/status")"
  for w in 3 1 3; do
    $gen write "$WORK" "$layout" "$w" "$services" "$backends" >/dev/null
    t=$(date +%s%N)
    out=$("$BIN" ctl --socket "$WORK/ctl.sock" reload)
    took=$(ms_since "$t")
    echo "$out" | grep -q "weights changed: s0/" || { echo "$out" >&2; echo "the reload did not change s0's weight" >&2; exit 1; }
    echo "reload, one weight      $took ms: $(echo "$out" | grep -o 'on every worker within [0-9.]* ms' || true); $(echo "$out" | grep -o '[0-9]* files read.*' || true)"
  done
  l4lb_stop
done
