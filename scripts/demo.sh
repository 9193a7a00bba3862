#!/usr/bin/env bash
# The l4lb demo on a machine with no NIC (docs: config/demo.toml).
#   scripts/demo.sh              L2 direct server return (MAC rewrite)
#   scripts/demo.sh --mode ipip  IP-in-IP: backends decapsulate and answer directly
#   scripts/demo.sh --fleet      two boxes behind a BGP/ECMP router (scripts/demo-fleet.sh)
# Builds a one-arm LAN of network namespaces around l4lb's TAP port: a client,
# three backends running HTTP servers that answer with their own name, and a
# namespace l4lb runs in, where its port's kernel interface appears (its health
# checks leave from there, through the DPDK port: the exception path).
# Sends real traffic (ping, curl, wrk), shows the spread over backends and
# l4lb's counters, kills a backend mid-run (failover, then slow start when it
# returns), shows that replies bypass l4lb, then removes everything (also on
# Ctrl-C or failure).
set -euo pipefail
cd "$(dirname "$0")/.."

MODE=l2
while [ $# -gt 0 ]; do
  case "$1" in
    --mode) MODE=${2:-}; shift 2 ;;
    --mode=*) MODE=${1#--mode=}; shift ;;
    --fleet) exec scripts/demo-fleet.sh ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1 (try --help)"; exit 2 ;;
  esac
done
case "$MODE" in
  l2) VIP=198.18.100.1 ;;
  ipip) VIP=198.18.100.2 ;;
  *) echo "--mode must be l2 or ipip"; exit 2 ;;
esac

CONFIG=config/demo.toml
TAP=l4lb-demo0
NS_LAN=l4lb-demo-lan
NS_CLIENT=l4lb-demo-client
NS_MGMT=l4lb-demo-mgmt
BACKENDS=(l4lb-demo-b1 l4lb-demo-b2 l4lb-demo-b3)
B_PIDS=()
LOG=$(mktemp /tmp/l4lb-demo.XXXXXX.log)
L4LB_PID=

# step, in_ns, attach
. scripts/demo-common.sh

cleanup() {
  set +e
  if [ -n "$L4LB_PID" ] && kill -0 "$L4LB_PID" 2>/dev/null; then
    kill -TERM "$L4LB_PID"; wait "$L4LB_PID" 2>/dev/null
  fi
  # (The shell reports each killed background server: keep that quiet.)
  {
    for ns in "$NS_CLIENT" "$NS_MGMT" "${BACKENDS[@]}" "$NS_LAN"; do
      ip netns pids "$ns" | xargs -r kill -9
      ip netns del "$ns"
    done
    for p in "${B_PIDS[@]}"; do wait "$p"; done
  } 2>/dev/null
  rm -f "$LOG"
}
trap cleanup EXIT INT TERM

step "setup (packages, hugepages, /dev/net/tun)"
scripts/setup.sh

step "build (release)"
cargo build --release --quiet
BIN=target/release/l4lb
$BIN check --config "$CONFIG"

step "network: bridge, client, three backends (namespaces)"
cleanup; trap cleanup EXIT INT TERM
ip netns add "$NS_LAN"
in_ns "$NS_LAN" ip link add br0 type bridge
in_ns "$NS_LAN" ip link set br0 up
attach "$NS_CLIENT" vc 198.18.0.2 02:00:00:00:0c:02
ip -n "$NS_CLIENT" route add 198.18.100.0/24 via 198.18.0.1
ip netns add "$NS_MGMT"
ip -n "$NS_MGMT" link set lo up
start_backend() { # i
  # `ip netns exec` (not the in_ns function, which would fork a subshell)
  # execs python, so $! is the server's own PID.
  ip netns exec "${BACKENDS[$(($1-1))]}" /usr/bin/python3 scripts/demo-backend.py "backend-$1" \
    > "/tmp/l4lb-demo-b$1.out" 2>&1 &
  B_PIDS[$1]=$!
}
for i in 1 2 3; do
  ns=${BACKENDS[$((i-1))]}
  attach "$ns" "vb$i" "198.18.0.1$i" "02:00:00:00:0b:1$i"
  ip -n "$ns" addr add 198.18.100.1/32 dev lo
  ip -n "$ns" addr add 198.18.100.2/32 dev lo
  in_ns "$ns" sysctl -qw net.ipv4.conf.all.arp_ignore=1 net.ipv4.conf.all.arp_announce=2
  start_backend "$i"
  if [ "$MODE" = ipip ]; then
    in_ns "$ns" /usr/bin/python3 scripts/backend-decap.py l4lbdecap > "/tmp/l4lb-demo-d$i.out" 2>&1 &
  fi
done
for i in 1 2 3; do
  for _ in $(seq 1 100); do grep -q ready "/tmp/l4lb-demo-b$i.out" 2>/dev/null && break; sleep 0.05; done
  [ "$MODE" = l2 ] || for _ in $(seq 1 100); do grep -q ready "/tmp/l4lb-demo-d$i.out" 2>/dev/null && break; sleep 0.05; done
done
echo "client 198.18.0.2; backends 198.18.0.11-13 with VIP $VIP on lo; mode $MODE"

step "start l4lb on TAP port $TAP (in namespace $NS_MGMT)"
# `ip netns exec` execs l4lb itself, so $! is l4lb's PID.
ip netns exec "$NS_MGMT" $BIN run --config "$CONFIG" >"$LOG" 2>&1 &
L4LB_PID=$!
for _ in $(seq 1 300); do
  grep -q 'INFO  l4lb running: ' "$LOG" && break
  kill -0 "$L4LB_PID" 2>/dev/null || { cat "$LOG"; echo "l4lb exited"; exit 1; }
  sleep 0.1
done
grep -q 'INFO  l4lb running: ' "$LOG" || { cat "$LOG"; echo "l4lb did not start"; exit 1; }
grep -E 'INFO  (port|balancing|l4lb running|control)' "$LOG"
ip -n "$NS_MGMT" link set "$TAP" netns "$NS_LAN"
# The kernel side of the TAP starts with l4lb's MAC: give it its own, or the
# bridge would keep l4lb's frames for itself.
ip -n "$NS_LAN" link set "$TAP" address 02:00:00:00:01:fe
ip -n "$NS_LAN" link set "$TAP" master br0 up
# Health checks leave through the port, so they pass once it is on the bridge.
CTL="$BIN ctl --config $CONFIG"
for _ in $(seq 1 100); do
  $CTL backends | awk 'NR > 1 && $3 != "up" { bad = 1 } END { exit bad }' && break; sleep 0.1
done

step "ping l4lb (it answers ARP and ICMP itself)"
in_ns "$NS_CLIENT" ping -c 2 -i 0.2 198.18.0.1

step "30 requests to http://$VIP/ — spread over the backends"
for _ in $(seq 1 30); do in_ns "$NS_CLIENT" curl -s --max-time 3 "http://$VIP/"; done | sort | uniq -c

step "wrk for 5 seconds, 20 connections"
in_ns "$NS_CLIENT" wrk -t2 -c20 -d5s "http://$VIP/" | sed -n '1,8p'

step "backends as l4lb sees them (l4lb ctl backends)"
$CTL backends web-l2

step "failover: backend-2 dies while wrk runs (10 s), then comes back with slow start"
if [ "$MODE" = l2 ]; then SVC=web-l2; else SVC=web-ipip; fi
in_ns "$NS_CLIENT" wrk -t1 -c8 -d10s --timeout 2s "http://$VIP/" > /tmp/l4lb-demo-wrk.out 2>&1 &
WRK=$!
sleep 2
echo "$(date +%T.%3N) killing backend-2's server"
downs=$(grep -c "backend $SVC/198.18.0.12 is down" "$LOG" || true)
{ kill -9 "${B_PIDS[2]}"; wait "${B_PIDS[2]}"; } 2>/dev/null || true
for _ in $(seq 1 50); do
  [ "$(grep -c "backend $SVC/198.18.0.12 is down" "$LOG" || true)" -gt "$downs" ] && break; sleep 0.1
done
echo "$(date +%T.%3N) $(grep "backend $SVC/198.18.0.12 is down" "$LOG" | tail -1)"
$CTL backends "$SVC"
sleep 2
echo "$(date +%T.%3N) restarting backend-2's server"
ups=$(grep -c "backend $SVC/198.18.0.12 is up" "$LOG" || true)
start_backend 2
for _ in $(seq 1 50); do
  [ "$(grep -c "backend $SVC/198.18.0.12 is up" "$LOG" || true)" -gt "$ups" ] && break; sleep 0.1
done
echo "$(date +%T.%3N) $(grep "backend $SVC/198.18.0.12 is up" "$LOG" | tail -1)"
echo "slow start: backend-2's effective weight and Maglev entries grow"
for _ in 1 2 3 4; do $CTL backends "$SVC" | grep -E '198.18.0.12'; sleep 1.5; done
wait "$WRK" || true
sed -n '1,9p' /tmp/l4lb-demo-wrk.out
echo "(wrk's socket errors are its connections that were on backend-2 when it died.)"
echo
echo "Prometheus (in l4lb's namespace): curl http://127.0.0.1:9100/metrics"
in_ns "$NS_MGMT" curl -s http://127.0.0.1:9100/metrics | grep -E "^l4lb_backend_(up|packets_total)\{service=\"$SVC\""

step "stop l4lb (SIGTERM) and show its counters"
kill -TERM "$L4LB_PID"; wait "$L4LB_PID" || true; L4LB_PID=
sed -n '/^port  /,$p' "$LOG"
rx=$(awk '/^lan /{print $2}' "$LOG"); tx=$(awk '/^lan /{print $3}' "$LOG")
echo
echo "l4lb received $rx packets and sent $tx: the client-to-server half only (plus its ARP and"
echo "ping answers). Every response went from a backend straight to the client: direct server return."

step "cleanup"
cleanup
trap - EXIT INT TERM
ip netns list | grep -q l4lb-demo && { echo "namespaces left behind"; exit 1; }
echo "namespaces and the TAP device removed; demo done"
