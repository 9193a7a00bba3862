#!/usr/bin/env bash
# Whole-program packet rates: l4lb against dpdk-testpmd on the same input and
# the same cores, the way operators measure an appliance.
#
#   scripts/bench/testpmd.sh [--workers N] [--flows LIST] [--seconds S] [--quick] [--no-docs]
#
#   --workers N   worker cores for testpmd and l4lb (default 1; lcore 0 is the
#                 main/management lcore on CPU 0, workers take CPUs 1..N)
#   --share-main-cpu  the main lcore shares CPU 0 with worker 1 (workers take
#                 CPUs 0..N-1): N may then be every CPU. Each worker still has a
#                 CPU of its own and the main lcores sleep between short ticks,
#                 so the rates count (how a 2-CPU machine runs two workers)
#   --flows LIST  flow counts for the established-flow runs (default 1000,100000,1000000)
#   --seconds S   measuring time per run after a 3-second warm-up (default 5)
#   --quick       one input (IPv4, 64 B, established, 100k flows): a smoke run
#   --no-docs     print the table only; do not rewrite docs/benchmarks.md and docs/bench.png
#   --oversubscribe  allow more workers than free CPUs (several lcores share a
#                 CPU): checks that the multi-worker setup runs on a small
#                 machine; its rates mean nothing, so it implies --no-docs
#
# Each input is a pcap from `l4lb gen` replayed by net_pcap with infinite_rx=1
# (one file per worker queue, flows split as RSS would) into net_null (no-rx).
# For every input: testpmd `io` (the DPDK floor) and `5tswap`, then l4lb in
# `ipip` and `l2` modes. testpmd's rate is its port 0 Rx-pps (median of the
# per-second samples after the warm-up); l4lb's comes from its own counters
# (scripts/bench/rate.sh: `l4lb ctl stats` once a second, the median of the
# per-second rates). Cycles per packet = TSC rate x workers / packet rate (every worker
# busy-polls). Results go to
# docs/benchmarks.md (between the scripts/bench/testpmd.sh markers) and docs/bench.png.
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/bench/lib.sh

WORKERS=1
FLOWS=1000,100000,1000000
SECONDS_MEASURE=5
WARM=3
QUICK=0
DOCS=1
OVERSUB=0
LAYOUT=own
while [ $# -gt 0 ]; do
  case "$1" in
    --workers) WORKERS=$2; shift 2 ;;
    --flows) FLOWS=$2; shift 2 ;;
    --seconds) SECONDS_MEASURE=$2; shift 2 ;;
    --quick) QUICK=1; shift ;;
    --no-docs) DOCS=0; shift ;;
    --oversubscribe) OVERSUB=1; shift ;;
    --share-main-cpu) LAYOUT=shared; shift ;;
    -h|--help) sed -n '2,31p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1 (try --help)"; exit 2 ;;
  esac
done
CPUS=$(nproc)
if [ "$OVERSUB" = 1 ] && [ "$WORKERS" -ge 1 ] && [ "$CPUS" -ge 2 ]; then
  echo "-- oversubscribed: $WORKERS workers on $((CPUS - 1)) CPU(s); the rates mean nothing (no docs written)"
  DOCS=0
  LAYOUT=oversub
elif [ "$LAYOUT" = shared ]; then
  if [ "$WORKERS" -lt 1 ] || [ "$WORKERS" -gt "$CPUS" ]; then
    echo "--workers must be 1 to $CPUS on this machine with --share-main-cpu"; exit 2
  fi
elif [ "$WORKERS" -lt 1 ] || [ "$WORKERS" -ge "$CPUS" ]; then
  echo "--workers must be 1 to $((CPUS - 1)) on this machine ($CPUS CPUs; one is the main lcore;" \
    "--share-main-cpu lets worker 1 share it)"; exit 2
fi

WORK=/tmp/l4lb-bench
RESULTS=$WORK/results.tsv
BIN=target/release/l4lb
L4LB_PID=

cleanup() {
  set +e
  bench_cleanup
}
trap cleanup EXIT INT TERM

bench_prepare || exit 1
/usr/bin/python3 -c 'import matplotlib' 2>/dev/null || apt-get install -y -qq python3-matplotlib >/dev/null
: > "$RESULTS"
# Captures are kept between runs; drop them when `l4lb gen` changed what it
# writes (format 2: every flow once per cycle, not flows drawn at random).
GEN_FORMAT=2
if [ "$(cat "$WORK/gen-format" 2>/dev/null)" != "$GEN_FORMAT" ]; then
  rm -f "$WORK"/*.pcap
  echo "$GEN_FORMAT" > "$WORK/gen-format"
fi

# Inputs: family mix flows size [flow-table entries per worker].
if [ "$QUICK" = 1 ]; then
  INPUTS=("v4 established 100000 64")
else
  INPUTS=()
  IFS=, read -ra FL <<< "$FLOWS"
  for f in "${FL[@]}"; do INPUTS+=("v4 established $f 64"); done
  # The SYN flood twice: into a 64k table the L3 holds, and into one of 512k
  # entries (36 MiB) beyond it, as a production table is.
  # IPv6's smallest TCP frame is 78 bytes; IPv4 at 78 too (20 bytes of TCP
  # data), so the two families are also compared on equal input: the PMD's
  # copy of a bigger frame costs testpmd and l4lb alike.
  INPUTS+=("v4 syn 1000000 64" "v4 syn 1000000 64 524288" "v4 half 1000000 64"
    "v4 established 1000000 78" "v6 established 1000000 78" "v4 established 100000 imix")
fi
max_packets=0
for spec in "${INPUTS[@]}"; do
  read -r _ _ f _ <<< "$spec"
  [ "$f" -gt "$max_packets" ] && max_packets=$f
done
bench_hugepages "$max_packets" || exit 1

# l4lb FORWARDING PCAPARGS PACKETS TABLE -> "Mpps new_flow_fraction drop_fraction"
run_l4lb() {
  local fwd=$1 pcaps=$2 packets=$3 table=$4 cfg=$WORK/l4lb.toml sock=$WORK/l4lb.sock
  bench_l4lb_config "$cfg" "$sock" "$fwd" "$pcaps" "$packets" "$table"
  local out
  out=$(scripts/bench/rate.sh "$cfg" "$WARM" "$SECONDS_MEASURE")
  # (This runs in a subshell: the TSC rate goes through a file.)
  echo "$out" | awk '{print $4}' > "$WORK/tsc_hz"
  echo "$out" | awk '{print $1, $2, $3}'
}

for spec in "${INPUTS[@]}"; do
  read -r FAMILY MIX FLOWS_N SIZE TABLE <<< "$spec"
  name="$FAMILY $MIX ${FLOWS_N} flows $([ "$SIZE" = imix ] && echo IMIX || echo "${SIZE}B")"
  [ -n "$TABLE" ] && name="$name, $((TABLE / 1024))k table"
  packets=$(( FLOWS_N < 4096 ? 4096 : FLOWS_N ))
  pcaps=$(bench_captures "$FAMILY" "$MIX" "$FLOWS_N" "$SIZE")
  echo "== $name ($packets packets)"
  io=$(bench_testpmd io "$pcaps" "$packets")
  printf '%s\ttestpmd io\t%s\t\t\n' "$name" "$io" | tee -a "$RESULTS"
  sw=$(bench_testpmd 5tswap "$pcaps" "$packets")
  printf '%s\ttestpmd 5tswap\t%s\t\t\n' "$name" "$sw" | tee -a "$RESULTS"
  # Established flows fit the table; SYN runs use a 64k table, so (almost)
  # every SYN misses and is inserted, evicting another unconfirmed flow
  # (with 512k entries about half the capture's SYNs find their flow still
  # tracked from its last turn: the "new flows" column says how many).
  # An IPv6 flow takes two slots: its table is twice the size, so both
  # families' tables are half full.
  slots=$([ "$FAMILY" = v6 ] && echo 4 || echo 2)
  table=$(( FLOWS_N * slots / WORKERS )); [ "$table" -lt 65536 ] && table=65536
  [ "$MIX" = syn ] && table=65536
  [ -n "$TABLE" ] && table=$TABLE
  for fwd in ipip l2; do
    read -r mpps newf drop <<< "$(run_l4lb "$fwd" "$pcaps" "$packets" "$table")"
    printf '%s\tl4lb %s\t%s\t%s\t%s\n' "$name" "$fwd" "$mpps" "$newf" "$drop" | tee -a "$RESULTS"
  done
done

# Second setup: l4lb between two net_memif links. `l4lb replay` sends the
# capture on one (paced, or as fast as it is taken) and counts what l4lb
# sends back on the other: l4lb's maximum, then loss at 80% of it.
if [ "$WORKERS" = 1 ]; then
  FAMILY=v4; MIX=established; FLOWS_N=100000; SIZE=64
  name="memif: v4 established 100000 flows 64B"
  f=$WORK/v4-established-100000-64-0-of-1.pcap
  [ -f "$f" ] || $BIN gen --out "$f" --flows 100000 --packets 100000 >/dev/null
  # The generator's CPU: the first one no lcore of l4lb's is on, else CPU 0.
  first_free=$((WORKERS + 1)); [ "$LAYOUT" = shared ] && first_free=$WORKERS
  replay_cpu=$(( CPUS > first_free ? first_free : 0 ))
  memif_run() { # RATE_ARGS -> replay's summary line
    rm -f "$WORK/in.sock" "$WORK/out.sock"
    $BIN replay --pcap "$f" --cpu "$replay_cpu" --seconds "$SECONDS_MEASURE" --warmup-seconds 2 $1 \
      --tx-device "net_memif0,role=server,socket=$WORK/in.sock" \
      --rx-device "net_memif1,role=server,socket=$WORK/out.sock" >"$WORK/replay.log" 2>&1 &
    local rp=$!
    # l4lb's memif clients need the replay's server sockets.
    for _ in $(seq 1 100); do [ -S "$WORK/in.sock" ] && [ -S "$WORK/out.sock" ] && break; sleep 0.1; done
    sed -e "s|^devices = .*|devices = [\"net_memif0,role=client,socket=$WORK/in.sock,rsize=14,mac=02:70:63:61:70:00\", \"net_memif1,role=client,socket=$WORK/out.sock,rsize=14\"]|" \
        -e 's|device = "net_pcap0"|device = "net_memif0"|' -e 's|device = "net_null0"|device = "net_memif1"|' \
        -e 's|^mbufs = .*|mbufs = 65535|' "$WORK/l4lb.toml" > "$WORK/memif.toml"
    l4lb_start "$WORK/memif.toml" "$WORK/l4lb-memif.log" || exit 1
    wait "$rp" || { cat "$WORK/replay.log" >&2; exit 1; }
    l4lb_stop
    tail -1 "$WORK/replay.log"
  }
  field() { echo "$1" | tr ' ' '\n' | awk -v k="$2" 'p{print; exit} $0==k{p=1}'; }
  echo "== $name"
  # (run_l4lb above left the last ipip/l2 config; make it ipip.)
  sed -i 's/^forwarding = .*/forwarding = "ipip"/' "$WORK/l4lb.toml"
  # l4lb's maximum here moves a lot from run to run on a shared machine: the
  # median of three unpaced runs.
  maxes=()
  for _ in 1 2 3; do
    max=$(memif_run "")
    maxes+=("$(field "$max" received_mpps)")
    echo "  unpaced: ${maxes[-1]} Mpps"
  done
  max_mpps=$(printf '%s\n' "${maxes[@]}" | sort -n | sed -n 2p)
  printf '%s\tl4lb ipip, unpaced (median of 3)\t%s\t\t\n' "$name" "$max_mpps" | tee -a "$RESULTS"
  rate=$(awk -v m="$max_mpps" 'BEGIN{printf "%d", m * 0.8 * 1e6}')
  paced=$(memif_run "--rate-pps $rate")
  lost=$(field "$paced" lost); offered=$(field "$paced" offered)
  printf '%s\tl4lb ipip, paced at 80%%\t%s\t\t%s\n' "$name" "$(field "$paced" received_mpps)" \
    "$(awk -v l="$lost" -v o="$offered" 'BEGIN{printf "%.6f", (o > 0 ? l / o : 0)}')" | tee -a "$RESULTS"
  echo "  offered $offered, lost $lost, skipped by the generator $(field "$paced" skipped)"
  echo "  l4lb worker:$(grep -m1 'longest poll gap' "$WORK/l4lb-memif.log")"
fi

echo
/usr/bin/python3 scripts/bench/report.py "$RESULTS" --workers "$WORKERS" --layout "$LAYOUT" --tsc-hz "$(cat "$WORK/tsc_hz" 2>/dev/null || echo 0)" \
  --seconds "$SECONDS_MEASURE" $([ "$DOCS" = 1 ] && echo --docs)
