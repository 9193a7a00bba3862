#!/usr/bin/env bash
# Where a worker's cycles go, the whole program: testpmd `io` and l4lb (one
# worker each, on CPU 1) on the same input as scripts/bench/testpmd.sh, each
# sampled by `perf record -e cpu-clock` on the worker's CPU while its rate is
# measured. The worker busy-polls, so its CPU's cycles per packet are the TSC
# rate / the packet rate; each symbol's share of the samples is its share of
# them. Prints a table by part (net_pcap's receive, net_null's transmit, the
# mempool, l4lb's loop, pipeline and flow table by source file — the code
# inlined into the loop counts where it was written — the kernel) that adds
# up to the measured cycles per packet, then the symbols.
#
#   scripts/bench/cycles.sh [--flows N] [--mix established|syn] [--forwarding ipip|l2]
#                           [--seconds S] [--warm S] [--table ENTRIES] [--mbuf-room BYTES]
#
# Defaults: 1000 established IPv4 flows of 64 B, ipip, 5 s after a 3-second
# warm-up. Needs perf (Debian package linux-perf) and what testpmd.sh needs.
# Ten million flows need ten million mbufs in memory: `--flows 10000000
# --table 16777216 --mbuf-room 256 --warm 8` (both programs get 256-byte data
# rooms: about 5.5 GiB of hugepages), and the same --mbuf-room for the 1M run
# it is compared with.
# Software sampling (cpu-clock, 4 kHz) works in VMs without a PMU; inlined
# functions count as the function they were inlined into.
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/bench/lib.sh
FLOWS_N=1000
MIX=established
FWD=ipip
SECONDS_MEASURE=5
WARM=3
TABLE=
MBUF_ROOM=
while [ $# -gt 0 ]; do
  case "$1" in
    --flows) FLOWS_N=$2; shift 2 ;;
    --mix) MIX=$2; shift 2 ;;
    --forwarding) FWD=$2; shift 2 ;;
    --seconds) SECONDS_MEASURE=$2; shift 2 ;;
    --table) TABLE=$2; shift 2 ;;
    --warm) WARM=$2; shift 2 ;;
    --mbuf-room) MBUF_ROOM=$2; shift 2 ;;
    -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1 (try --help)"; exit 2 ;;
  esac
done
[ "$(nproc)" -ge 2 ] || { echo "needs 2 CPUs (the main lcore on CPU 0, the worker on CPU 1)"; exit 2; }
command -v perf >/dev/null || apt-get install -y -qq linux-perf >/dev/null
WORKERS=1
LAYOUT=own
FAMILY=v4
WORK=/tmp/l4lb-bench
BIN=target/release/l4lb
L4LB_PID=
PERF_PID=
cleanup() {
  set +e
  [ -n "$PERF_PID" ] && kill -INT "$PERF_PID" 2>/dev/null && wait "$PERF_PID" 2>/dev/null
  bench_cleanup
}
trap cleanup EXIT INT TERM
bench_prepare || exit 1
packets=$(( FLOWS_N < 4096 ? 4096 : FLOWS_N ))
bench_hugepages "$packets" || exit 1
pcaps=$(bench_captures "$FAMILY" "$MIX" "$FLOWS_N" 64)
table=$(( FLOWS_N * 2 )); [ "$table" -lt 65536 ] && table=65536
[ "$MIX" = syn ] && table=65536
[ -n "$TABLE" ] && table=$TABLE

# perf_window OUT: samples CPU 1 for the measuring window, in the background.
perf_window() {
  ( sleep "$WARM"; exec perf record -q -e cpu-clock -F 4000 -C 1 -o "$1" -- sleep "$SECONDS_MEASURE" ) \
    >/dev/null 2>&1 &
  PERF_PID=$!
}
perf_done() {
  wait "$PERF_PID" 2>/dev/null || true
  PERF_PID=
}

echo "== testpmd io: v4 $MIX $FLOWS_N flows 64B"
perf_window "$WORK/cycles-testpmd.data"
io=$(bench_testpmd io "$pcaps" "$packets")
perf_done

echo "== l4lb $FWD"
cfg=$WORK/cycles.toml
bench_l4lb_config "$cfg" "$WORK/l4lb.sock" "$FWD" "$pcaps" "$packets" "$table"
perf_window "$WORK/cycles-l4lb.data"
rate=$(scripts/bench/rate.sh "$cfg" "$WARM" "$SECONDS_MEASURE") || { echo "l4lb's run failed (above)"; exit 1; }
read -r mpps _ _ tsc <<< "$rate"
perf_done

for p in testpmd l4lb; do
  for sort in sym srcfile; do
    perf report -i "$WORK/cycles-$p.data" --no-children --sort "dso,$sort" --full-source-path -g none \
      --stdio -q 2>/dev/null |
      awk '$1 ~ /%$/' > "$WORK/cycles-$p-$sort.txt"
  done
done
/usr/bin/python3 scripts/bench/cycles.py --tsc-hz "$tsc" \
  --run "testpmd io" "$io" "$WORK/cycles-testpmd-sym.txt" "$WORK/cycles-testpmd-srcfile.txt" \
  --run "l4lb $FWD" "$mpps" "$WORK/cycles-l4lb-sym.txt" "$WORK/cycles-l4lb-srcfile.txt" \
  --title "v4 $MIX, $FLOWS_N flows, 64 B, a $table-slot table${MBUF_ROOM:+, $MBUF_ROOM-byte mbufs}, one worker, $(date -u +%F), $(lscpu | sed -n 's/^Model name: *//p')"
