#!/usr/bin/env bash
# One run of scripts/bench/testpmd.sh's memif setup at a chosen rate: `l4lb replay` sends the
# 100k-flow capture into l4lb over net_memif and counts what comes back.
# Prints replay's summary line (offered, sent, refused, received, lost,
# skipped: paced packets the generator never offered because it was itself
# held up more than 512 packets behind its schedule) and l4lb's totals for
# the whole run (rx, tx, dropped; its worker's longest gap between two polls
# and the gaps of 1 ms or more).
#
#   scripts/bench/memif.sh RATE_PPS [RSIZE]    (RATE_PPS 0: as fast as taken;
#                                               RSIZE: log2 ring size, default and
#                                               most (DPDK 22.11's memif) 14)
#
# Needs what scripts/bench/testpmd.sh leaves in /tmp/l4lb-bench (memif.toml and the
# capture): run it once first. "refused" is the generator's transmit refused
# because l4lb's receive ring was full.
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/bench/lib.sh
rate=${1:?RATE_PPS}
rsize=${2:-14}
WORK=/tmp/l4lb-bench
BIN=${L4LB_BIN:-target/release/l4lb}
pcap=$WORK/v4-established-100000-64-0-of-1.pcap
[ -f "$WORK/memif.toml" ] && [ -f "$pcap" ] || { echo "run scripts/bench/testpmd.sh first" >&2; exit 2; }
sed "s/rsize=[0-9]*/rsize=$rsize/g" "$WORK/memif.toml" >"$WORK/memif-rate.toml"
rm -f "$WORK/in.sock" "$WORK/out.sock"
rate_args=()
[ "$rate" = 0 ] || rate_args=(--rate-pps "$rate")
$BIN replay --pcap "$pcap" --cpu 0 --seconds 5 --warmup-seconds 2 "${rate_args[@]}" \
  --tx-device "net_memif0,role=server,socket=$WORK/in.sock" \
  --rx-device "net_memif1,role=server,socket=$WORK/out.sock" >"$WORK/replay-rate.log" 2>&1 &
rp=$!
trap 'l4lb_stop; kill -TERM $rp 2>/dev/null || true; wait 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do [ -S "$WORK/in.sock" ] && [ -S "$WORK/out.sock" ] && break; sleep 0.1; done
l4lb_start "$WORK/memif-rate.toml" "$WORK/l4lb-memif-rate.log"
wait "$rp" || { cat "$WORK/replay-rate.log" >&2; exit 1; }
l4lb_stop
tail -1 "$WORK/replay-rate.log"
grep -A1 '^balancing:' "$WORK/l4lb-memif-rate.log" | sed 's/^/l4lb /'
