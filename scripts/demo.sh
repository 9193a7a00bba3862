#!/usr/bin/env bash
# The l4lb demo on a machine with no NIC: l4lb runs on two DPDK TAP ports whose
# kernel sides sit in two network namespaces ("client" and "server"); real
# ping, TCP and UDP traffic crosses it; then its port counters are shown and
# everything is removed (also on Ctrl-C or failure).
set -euo pipefail
cd "$(dirname "$0")/.."

CONFIG=config/demo.toml
NS_C=l4lb-demo-client
NS_S=l4lb-demo-server
IF_C=l4lb-demo0
IF_S=l4lb-demo1
LOG=$(mktemp /tmp/l4lb-demo.XXXXXX.log)
L4LB_PID=

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

cleanup() {
  set +e
  if [ -n "$L4LB_PID" ] && kill -0 "$L4LB_PID" 2>/dev/null; then
    kill -TERM "$L4LB_PID"; wait "$L4LB_PID" 2>/dev/null
  fi
  for ns in "$NS_C" "$NS_S"; do
    ip netns pids "$ns" 2>/dev/null | xargs -r kill -9 2>/dev/null
    ip netns del "$ns" 2>/dev/null
  done
  rm -f "$LOG"
}
trap cleanup EXIT INT TERM

step "setup (packages, hugepages, /dev/net/tun)"
scripts/setup.sh

step "build (release)"
cargo build --release --quiet
BIN=target/release/l4lb
$BIN check --config "$CONFIG"

step "namespaces"
for ns in "$NS_C" "$NS_S"; do
  ip netns del "$ns" 2>/dev/null || true
  ip netns add "$ns"
  ip -n "$ns" link set lo up
done

step "start l4lb on TAP ports $IF_C and $IF_S"
$BIN run --config "$CONFIG" >"$LOG" 2>&1 &
L4LB_PID=$!
for _ in $(seq 1 300); do
  grep -q '^l4lb running' "$LOG" && break
  kill -0 "$L4LB_PID" 2>/dev/null || { cat "$LOG"; echo "l4lb exited"; exit 1; }
  sleep 0.1
done
grep -q '^l4lb running' "$LOG" || { cat "$LOG"; echo "l4lb did not start"; exit 1; }
grep -E '^(port|l4lb running)' "$LOG"

ip link set "$IF_C" netns "$NS_C"
ip link set "$IF_S" netns "$NS_S"
ip -n "$NS_C" addr add 198.18.0.2/24 dev "$IF_C"
ip -n "$NS_C" addr add 2001:db8::2/64 dev "$IF_C" nodad
ip -n "$NS_S" addr add 198.18.0.3/24 dev "$IF_S"
ip -n "$NS_S" addr add 2001:db8::3/64 dev "$IF_S" nodad
ip -n "$NS_C" link set "$IF_C" up
ip -n "$NS_S" link set "$IF_S" up
echo "client 198.18.0.2 (ns $NS_C)  <-- l4lb -->  server 198.18.0.3 (ns $NS_S)"

step "ping across l4lb (IPv4 and IPv6)"
ip netns exec "$NS_C" ping -c 3 -i 0.2 198.18.0.3
ip netns exec "$NS_C" ping -6 -c 3 -i 0.2 2001:db8::3

step "TCP for 3 seconds (iperf3)"
ip netns exec "$NS_S" iperf3 -s -1 -B 198.18.0.3 >/dev/null 2>&1 &
SERVER=$!
for _ in $(seq 1 50); do ip netns exec "$NS_S" ss -ltn | grep -q ':5201' && break; sleep 0.1; done
ip netns exec "$NS_C" iperf3 -c 198.18.0.3 -t 3 -f m | grep -E 'sender|receiver'
wait "$SERVER" || true

step "UDP at 50 Mbit/s for 2 seconds (iperf3)"
ip netns exec "$NS_S" iperf3 -s -1 -B 198.18.0.3 >/dev/null 2>&1 &
SERVER=$!
for _ in $(seq 1 50); do ip netns exec "$NS_S" ss -ltn | grep -q ':5201' && break; sleep 0.1; done
ip netns exec "$NS_C" iperf3 -c 198.18.0.3 -u -b 50M -t 2 -f m | grep -E 'receiver|sender' | tail -2
wait "$SERVER" || true

step "stop l4lb (SIGTERM) and show its port counters"
kill -TERM "$L4LB_PID"
wait "$L4LB_PID" || true
L4LB_PID=
sed -n '/^port  /,$p' "$LOG"

step "cleanup"
cleanup
trap - EXIT INT TERM
ip netns list | grep -q l4lb-demo && { echo "namespaces left behind"; exit 1; }
echo "namespaces and TAP devices removed; demo done"
