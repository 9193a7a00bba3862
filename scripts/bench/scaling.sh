#!/usr/bin/env bash
# Multi-worker scaling: l4lb (ipip) and dpdk-testpmd `io` with 1, 2, ... N
# workers on one input, in alternating rounds (1, 2, ..., N, 1, 2, ...), so a
# shared machine's slow stretches hit every worker count alike.
#
#   scripts/bench/scaling.sh [--workers LIST] [--rounds R] [--flows F] [--mix MIX]
#                            [--seconds S] [--share-main-cpu]
#
#   --workers LIST    worker counts (default 1 to the most this machine runs)
#   --rounds R        rounds (default 3); the table shows every run and the median
#   --flows F         flows in the input (default 1000000), IPv4, 64-byte frames
#   --mix MIX         established (default) or syn
#   --seconds S       measured seconds per run, after a 3-second warm-up (default 5)
#   --share-main-cpu  the main lcore shares CPU 0 with worker 1 (see scripts/bench/lib.sh);
#                     implied when the machine has fewer than 3 CPUs, so that a
#                     2-CPU machine measures two workers. Every worker count runs
#                     with the same layout.
#
# Inputs and runs are scripts/bench/testpmd.sh's (same captures, split one per worker queue as
# RSS would; same l4lb configuration; per worker the same flow-table load).
# Prints a markdown table: Mpps per run, the median, and the median against the
# one-worker median.
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/bench/lib.sh

CPUS=$(nproc)
LIST=
ROUNDS=3
FLOWS_N=1000000
MIX=established
SECONDS_MEASURE=5
WARM=3
LAYOUT=
while [ $# -gt 0 ]; do
  case "$1" in
    --workers) LIST=$2; shift 2 ;;
    --rounds) ROUNDS=$2; shift 2 ;;
    --flows) FLOWS_N=$2; shift 2 ;;
    --mix) MIX=$2; shift 2 ;;
    --seconds) SECONDS_MEASURE=$2; shift 2 ;;
    --share-main-cpu) LAYOUT=shared; shift ;;
    -h|--help) sed -n '2,23p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1 (try --help)"; exit 2 ;;
  esac
done
case "$MIX" in established|syn) ;; *) echo "--mix must be established or syn, got '$MIX'"; exit 2 ;; esac
[ -n "$LAYOUT" ] || { [ "$CPUS" -lt 3 ] && LAYOUT=shared || LAYOUT=own; }
max=$((CPUS - 1)); [ "$LAYOUT" = shared ] && max=$CPUS
[ -n "$LIST" ] || LIST=$(seq -s, 1 "$max")
IFS=, read -ra COUNTS <<< "$LIST"
for w in "${COUNTS[@]}"; do
  case "$w" in ''|*[!0-9]*) echo "--workers: '$w' is not a number"; exit 2 ;; esac
  if [ "$w" -lt 1 ] || [ "$w" -gt "$max" ]; then
    echo "--workers: $w is outside 1..$max for this machine ($CPUS CPUs, main lcore $([ "$LAYOUT" = shared ] && echo sharing CPU 0 || echo on its own CPU))"
    exit 2
  fi
done

WORK=/tmp/l4lb-bench
BIN=target/release/l4lb
FAMILY=v4
trap 'set +e; bench_cleanup' EXIT INT TERM
bench_prepare || exit 1
packets=$(( FLOWS_N < 4096 ? 4096 : FLOWS_N ))
bench_hugepages "$packets"

declare -A io l4
for round in $(seq 1 "$ROUNDS"); do
  for w in "${COUNTS[@]}"; do
    WORKERS=$w
    pcaps=$(bench_captures "$FAMILY" "$MIX" "$FLOWS_N" 64)
    table=$(( FLOWS_N * 2 / WORKERS )); [ "$table" -lt 65536 ] && table=65536
    [ "$MIX" = syn ] && table=65536
    r_io=$(bench_testpmd io "$pcaps" "$packets")
    bench_l4lb_config "$WORK/scaling.toml" "$WORK/scaling.sock" ipip "$pcaps" "$packets" "$table"
    r_l4=$(scripts/bench/rate.sh "$WORK/scaling.toml" "$WARM" "$SECONDS_MEASURE" | cut -d' ' -f1)
    echo "round $round, $w worker(s) [$(bench_lcores)]: testpmd io $r_io Mpps, l4lb ipip $r_l4 Mpps"
    io[$w]="${io[$w]:-} $r_io"
    l4[$w]="${l4[$w]:-} $r_l4"
  done
done

median() { tr ' ' '\n' | awk 'NF' | sort -n | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'; }
base_io=$(echo ${io[${COUNTS[0]}]} | median)
base_l4=$(echo ${l4[${COUNTS[0]}]} | median)
echo
echo "Command: \`scripts/bench/scaling.sh --workers $LIST --rounds $ROUNDS --flows $FLOWS_N --mix $MIX --seconds $SECONDS_MEASURE$([ "$LAYOUT" = shared ] && echo ' --share-main-cpu')\`."
echo "Machine: $(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1), $CPUS CPUs; $(date -u +%F). Input: v4 $MIX, $FLOWS_N flows, 64 B."
echo
echo "| workers | testpmd io Mpps (runs) | median | × ${COUNTS[0]} | l4lb ipip Mpps (runs) | median | × ${COUNTS[0]} |"
echo "|---|---|---|---|---|---|---|"
for w in "${COUNTS[@]}"; do
  m_io=$(echo ${io[$w]} | median)
  m_l4=$(echo ${l4[$w]} | median)
  awk -v w="$w" -v ri="${io[$w]# }" -v mi="$m_io" -v bi="$base_io" -v rl="${l4[$w]# }" -v ml="$m_l4" -v bl="$base_l4" \
    'BEGIN { printf "| %s | %s | %.2f | %.2f | %s | %.2f | %.2f |\n", w, ri, mi, (bi > 0 ? mi / bi : 0), rl, ml, (bl > 0 ? ml / bl : 0) }'
done
