#!/usr/bin/env bash
# Where the established-flow cost at 1M flows goes: l4lb (ipip, one worker) on
# three inputs that differ in one thing at a time, then the machine's own
# rate of random cache-line reads (examples/memory_parallelism.rs).
#
#   scripts/bench/memory.sh [ROUNDS]      (default 3; median per input)
#
#   1k/1k   1000 flows, a 1000-packet capture: table and capture in cache
#   1k/1M   1000 flows, a 1,000,000-packet capture: the capture (about 2 GiB of
#           mbufs that net_pcap copies frames out of) no longer fits in cache;
#           the flow table still does
#   1M/1M   1,000,000 flows, a 1,000,000-packet capture: the flow table (2M slots,
#           72 MiB) does not fit either
# The step from 1k/1M to 1M/1M is what the flow table's misses cost per packet.
# Needs what scripts/bench/testpmd.sh needs (run scripts/setup.sh once); captures and
# configurations go to /tmp/l4lb-bench.
set -euo pipefail
cd "$(dirname "$0")/../.."
rounds=${1:-3}
WORK=/tmp/l4lb-bench
BIN=target/release/l4lb
mkdir -p "$WORK"
cargo build --quiet --release --bin l4lb --example memory_parallelism
scripts/setup-hugepages.sh 3072 >/dev/null || { echo "could not reserve 3 GiB of hugepages" >&2; exit 1; }

config() { # NAME CAPTURE PACKETS TABLE
  cat > "$WORK/mem-$1.toml" <<EOF
[dpdk]
lcores = "0@0,1@1"
devices = ["net_pcap0,rx_pcap=$2,infinite_rx=1", "net_null0,no-rx=1"]
file_prefix = "l4lbbench"
mbufs = $(($3 + 65536))
log_level = "lib.eal:warning"
[workers]
flow_table_capacity = $4
idle_pause_us = 0
[[ports]]
name = "in"
device = "net_pcap0"
ipv4 = "198.18.0.1/24"
kernel = { enabled = false }
[[ports]]
name = "out"
device = "net_null0"
ipv4 = "198.18.1.1/24"
kernel = { enabled = false }
[control]
socket = "$WORK/mem.sock"
metrics_address = ""
[[services]]
name = "bench"
vip = "198.18.100.1"
protocol = "tcp"
port = 80
forwarding = "ipip"
egress = "out"
backends = [{ address = "198.18.1.11", mac = "02:00:00:00:0b:11" }, { address = "198.18.1.12", mac = "02:00:00:00:0b:12" }, { address = "198.18.1.13", mac = "02:00:00:00:0b:13" }]
EOF
}

declare -A rates
inputs=("1k/1k 1000 1000 65536" "1k/1M 1000 1000000 65536" "1M/1M 1000000 1000000 2097152")
for spec in "${inputs[@]}"; do
  read -r name flows packets table <<< "$spec"
  cap=$WORK/mem-$flows-$packets.pcap
  [ -f "$cap" ] || $BIN gen --out "$cap" --flows "$flows" --packets "$packets" >/dev/null
  config "${name/\//-}" "$cap" "$packets" "$table"
done
for _ in $(seq 1 "$rounds"); do
  for spec in "${inputs[@]}"; do
    read -r name _ <<< "$spec"
    r=$(scripts/bench/rate.sh "$WORK/mem-${name/\//-}.toml" 2 3 | cut -d' ' -f1)
    rates[$name]="${rates[$name]:-} $r"
  done
done
echo "| flows / capture packets | Mpps (runs) | median | ns per packet |"
echo "|---|---|---|---|"
for spec in "${inputs[@]}"; do
  read -r name _ <<< "$spec"
  m=$(echo ${rates[$name]} | tr ' ' '\n' | sort -n | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}')
  echo "| $name |${rates[$name]} | $m | $(awk -v m="$m" 'BEGIN {printf "%.1f", 1000 / m}') |"
done
echo
taskset -c 1 target/release/examples/memory_parallelism 8 32 128 512
