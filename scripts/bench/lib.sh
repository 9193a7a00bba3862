# Shared pieces of the whole-program benchmarks (sourced by the scripts in
# scripts/bench/, not run on its own): starting, waiting for and stopping
# l4lb and testpmd by the PIDs they were given, inputs, configurations.
#
# The caller sets: WORK (the scratch directory), BIN (the l4lb binary), WORKERS,
# CPUS, WARM and SECONDS_MEASURE (seconds), LAYOUT (below) and, for
# bench_l4lb_config, FAMILY (v4 or v6).
#
# LAYOUT places the lcores on CPUs:
#   own       the main lcore alone on CPU 0, worker k on CPU k (WORKERS < CPUS)
#   shared    the main lcore shares CPU 0 with worker 1, worker k on CPU k-1
#             (WORKERS <= CPUS). Every worker still has a CPU of its own; the
#             main lcore of l4lb and testpmd sleeps between short ticks (l4lb's
#             every 10 ms, testpmd's stats once a second), so the rates count —
#             this is how a 2-CPU machine measures two workers.
#   oversub   workers share CPUs 1..CPUS-1 (only checks that a setup runs)

# bench_prepare: remembers the hugepage count (bench_cleanup restores it),
# installs what the runs need, builds l4lb and makes WORK.
bench_prepare() {
  HP_DIR=/sys/kernel/mm/hugepages/hugepages-2048kB
  HP_BEFORE=$(cat "$HP_DIR/nr_hugepages" 2>/dev/null || echo 0)
  echo "== setup"
  scripts/setup.sh >/dev/null
  command -v dpdk-testpmd >/dev/null || { echo "dpdk-testpmd missing (Debian package dpdk)"; return 1; }
  cargo build --release --quiet
  mkdir -p "$WORK"
}

# l4lb_start CONFIG LOG [READY]: starts $BIN (default target/release/l4lb) on
# CONFIG with its output in LOG, sets L4LB_PID and waits until LOG has a line
# matching READY (default: its "l4lb running:" line). Fails, showing LOG, when
# l4lb exits first or is not ready in 60 s.
l4lb_start() {
  local cfg=$1 log=$2 ready=${3:-'l4lb running: '}
  "${BIN:-target/release/l4lb}" run --config "$cfg" >"$log" 2>&1 &
  L4LB_PID=$!
  for _ in $(seq 1 600); do
    grep -q "$ready" "$log" && return 0
    if ! kill -0 "$L4LB_PID" 2>/dev/null; then
      cat "$log" >&2; echo "l4lb exited before it was ready" >&2; L4LB_PID=; return 1
    fi
    sleep 0.1
  done
  cat "$log" >&2; echo "l4lb was not ready in 60 s" >&2; l4lb_stop; return 1
}

# l4lb_stop: SIGTERM to the l4lb l4lb_start started (it drains, prints its
# report and exits), then waits for it.
l4lb_stop() {
  [ -n "${L4LB_PID:-}" ] || return 0
  kill -TERM "$L4LB_PID" 2>/dev/null || true
  wait "$L4LB_PID" 2>/dev/null || true
  L4LB_PID=
}

# bench_cleanup: stops the l4lb and testpmd these scripts started (by PID),
# removes the runs' DPDK runtime files and gives back the extra hugepages the
# runs reserved.
bench_cleanup() {
  l4lb_stop
  local tp
  tp=$(cat "$WORK/testpmd.pid" 2>/dev/null || true)
  # Only if that PID is still a testpmd (not a reused number).
  if [ -n "$tp" ] && [ "$(cat "/proc/$tp/comm" 2>/dev/null)" = dpdk-testpmd ]; then
    kill -INT "$tp" 2>/dev/null
  fi
  rm -f "$WORK/testpmd.pid"
  rm -rf /var/run/dpdk/l4lbbench* 2>/dev/null
  if [ "${HP_BEFORE:-0}" -gt 0 ]; then echo "$HP_BEFORE" > "$HP_DIR/nr_hugepages" 2>/dev/null; fi
  return 0
}

# The --lcores map for WORKERS workers under LAYOUT.
bench_lcores() {
  local k out=0@0
  for k in $(seq 1 "$WORKERS"); do
    case "$LAYOUT" in
      own) out="$out,$k@$k" ;;
      shared) out="$out,$k@$((k - 1))" ;;
      oversub) out="$out,$k@$(( (k - 1) % (CPUS - 1) + 1 ))" ;;
      *) echo "bench_lcores: unknown layout '$LAYOUT'" >&2; return 2 ;;
    esac
  done
  echo "$out"
}

# bench_captures FAMILY MIX FLOWS SIZE -> the net_pcap arguments "rx_pcap=F0,rx_pcap=F1,..."
# (one capture per worker queue, the flows split as RSS would; written once, kept in WORK).
bench_captures() {
  local family=$1 mix=$2 flows=$3 size=$4 k f vip pcaps=
  local packets=$(( flows < 4096 ? 4096 : flows ))
  vip=198.18.100.1:80; [ "$family" = v6 ] && vip='[2001:db8:100::1]:80'
  for k in $(seq 0 $((WORKERS - 1))); do
    f=$WORK/$family-$mix-$flows-$size-$k-of-$WORKERS.pcap
    [ -f "$f" ] || $BIN gen --out "$f" --flows "$flows" --packets "$((packets / WORKERS))" --mix "$mix" \
      --size "$size" --vip "$vip" --part "$k/$WORKERS" >/dev/null
    pcaps="${pcaps}rx_pcap=$f,"
  done
  echo "$pcaps"
}

# bench_testpmd MODE PCAPARGS PACKETS -> Mpps (median of port 0 Rx-pps after the warm-up).
# MBUF_ROOM (bytes, headroom included), when set, sizes every mbuf's data room,
# for testpmd and l4lb (bench_l4lb_config) alike.
bench_testpmd() {
  local mode=$1 pcaps=$2 packets=$3 log=$WORK/testpmd.log
  local mbufs=$((packets + 65536)) room=
  [ -n "${MBUF_ROOM:-}" ] && room=--mbuf-size=$MBUF_ROOM
  # In the background with its PID on file, so bench_cleanup can stop it
  # (this function runs in a subshell) if the run is interrupted. Its
  # hugepage files unlinked as soon as mapped (--huge-unlink), so its memory
  # is free for the l4lb run after it: left in hugetlbfs, a large capture's
  # pages were still taken when l4lb started, which then could not start.
  timeout -s INT $((WARM + SECONDS_MEASURE + 4 + packets / 200000)) \
    dpdk-testpmd --lcores "$(bench_lcores)" --no-pci --file-prefix l4lbbench-tp --huge-unlink --log-level=lib.eal:warning \
      --vdev "net_pcap0,${pcaps}infinite_rx=1" --vdev "net_null0,no-rx=1" -- \
      --forward-mode="$mode" --nb-cores="$WORKERS" --rxq="$WORKERS" --txq="$WORKERS" \
      --total-num-mbufs="$mbufs" $room --stats-period=1 --no-lsc-interrupt >"$log" 2>&1 &
  local t=$!
  # timeout runs testpmd as its child: the PID to stop is the child's.
  for _ in $(seq 1 50); do
    pgrep -P "$t" > "$WORK/testpmd.pid" && break
    sleep 0.02
  done
  wait "$t" || true
  rm -f "$WORK/testpmd.pid"
  # Per-second Rx-pps of port 0 once traffic flows; drop the warm-up, take the median.
  awk '/NIC statistics for port 0/{p=1} /NIC statistics for port 1/{p=0} p && /Rx-pps:/{print $2}' "$log" |
    awk '$1 > 0' | tail -n +$((WARM + 1)) | head -n "$SECONDS_MEASURE" | sort -n |
    awk '{v[NR]=$1} END {if (NR == 0) print "0"; else printf "%.3f\n", v[int((NR + 1) / 2)] / 1e6}'
}

# bench_l4lb_config CFG SOCK FORWARDING PCAPARGS PACKETS TABLE: writes l4lb's
# configuration for one run (net_pcap in, net_null out, one service, three backends).
bench_l4lb_config() {
  local cfg=$1 sock=$2 fwd=$3 pcaps=$4 packets=$5 table=$6
  local vip=198.18.100.1 backends
  backends='{ address = "198.18.1.11", mac = "02:00:00:00:0b:11" }, { address = "198.18.1.12", mac = "02:00:00:00:0b:12" }, { address = "198.18.1.13", mac = "02:00:00:00:0b:13" }'
  if [ "$FAMILY" = v6 ]; then
    vip=2001:db8:100::1
    backends='{ address = "2001:db8:1::11", mac = "02:00:00:00:0b:11" }, { address = "2001:db8:1::12", mac = "02:00:00:00:0b:12" }, { address = "2001:db8:1::13", mac = "02:00:00:00:0b:13" }'
  fi
  cat > "$cfg" <<EOF
[dpdk]
lcores = "$(bench_lcores)"
devices = ["net_pcap0,${pcaps}infinite_rx=1", "net_null0,no-rx=1"]
file_prefix = "l4lbbench"
mbufs = $((packets + 65536))
${MBUF_ROOM:+mbuf_data_room = $MBUF_ROOM}
log_level = "lib.eal:warning"
[workers]
flow_table_capacity = $table
idle_pause_us = 0
[[ports]]
name = "in"
device = "net_pcap0"
ipv4 = "198.18.0.1/24"
ipv6 = "2001:db8::1/64"
kernel = { enabled = false }
[[ports]]
name = "out"
device = "net_null0"
ipv4 = "198.18.1.1/24"
ipv6 = "2001:db8:1::1/64"
kernel = { enabled = false }
[control]
socket = "$sock"
metrics_address = ""
[[services]]
name = "bench"
vip = "$vip"
protocol = "tcp"
port = 80
forwarding = "$fwd"
egress = "out"
backends = [$backends]
EOF
}

# bench_hugepages MAX_PACKETS: reserves enough for a process that holds a whole
# capture of that many packets in mbufs (~2.5 KiB each, or MBUF_ROOM plus 320
# bytes of mbuf header and pool overhead) plus its rings.
bench_hugepages() {
  local max_packets=$1 mb per=2560
  [ -n "${MBUF_ROOM:-}" ] && per=$((MBUF_ROOM + 320))
  mb=$(( (max_packets < 4096 ? 4096 : max_packets) * per / 1048576 + 512 ))
  echo "== hugepages: ${mb} MiB for captures of up to $max_packets packets"
  scripts/setup-hugepages.sh "$mb" >/dev/null || { echo "could not reserve ${mb} MiB of hugepages"; return 1; }
}
