#!/usr/bin/env bash
# The fleet demo (scripts/demo.sh --fleet; config/fleet.toml): a router
# namespace running BIRD with ECMP over an L4 hash and BFD, two l4lb boxes that
# announce the VIP by BGP through their DPDK ports (l4lb runs BIRD from its own
# [bgp] section), three backends answering the client through the router.
# Shows the router's two next hops, connections spread over both boxes, then
# kills box 1 (SIGKILL) while long downloads and wrk run: the router moves to
# box 2 within a BFD detection time and no connection breaks. Box 2 then drains
# (SIGTERM): GRACEFUL_SHUTDOWN, withdrawal, exit. Removes everything at the end
# (also on Ctrl-C or failure).
set -euo pipefail
cd "$(dirname "$0")/.."

VIP=198.18.100.1
NS_LAN=l4lb-fleet-lan
NS_ROUTER=l4lb-fleet-router
NS_CLIENT=l4lb-fleet-client
NS_BOX=(l4lb-fleet-box1 l4lb-fleet-box2)
BACKENDS=(l4lb-fleet-b1 l4lb-fleet-b2 l4lb-fleet-b3)
WORK=$(mktemp -d /tmp/l4lb-fleet.XXXXXX)
PIDS=()
BOX_PID=("" "")

# step, in_ns, attach
. scripts/demo-common.sh

cleanup() {
  set +e
  for p in "${BOX_PID[@]}"; do [ -n "$p" ] && kill -9 "$p" 2>/dev/null; done
  {
    for ns in "$NS_CLIENT" "$NS_ROUTER" "${NS_BOX[@]}" "${BACKENDS[@]}" "$NS_LAN"; do
      ip netns pids "$ns" 2>/dev/null | xargs -r kill -9
      ip netns del "$ns"
    done
    for p in "${PIDS[@]}"; do wait "$p"; done
  } 2>/dev/null
  rm -rf "$WORK" /run/l4lb/l4lb-fleet1-bird /run/l4lb/l4lb-fleet2-bird
}
trap cleanup EXIT INT TERM

step "setup (packages, /dev/net/tun) and build"
cleanup; trap cleanup EXIT INT TERM
mkdir -p "$WORK"
scripts/setup.sh
cargo build --release --quiet
BIN=$PWD/target/release/l4lb
cp config/fleet.toml "$WORK/box1.toml"
sed 's/fleet1/fleet2/g; s#198.18.0.1/24#198.18.0.3/24#; s/02:00:00:00:01:01/02:00:00:00:01:03/;
     s/^peers = \["198.18.0.3"\]/peers = ["198.18.0.1"]/' \
  config/fleet.toml > "$WORK/box2.toml"
for n in 1 2; do $BIN check --config "$WORK/box$n.toml"; done

step "network: LAN bridge, router, client, three backends"
ip netns add "$NS_LAN"
in_ns "$NS_LAN" ip link add br0 type bridge
in_ns "$NS_LAN" ip link set br0 up
attach "$NS_ROUTER" vr 198.18.0.254 02:00:00:00:0c:fe
ip netns add "$NS_CLIENT"
ip -n "$NS_CLIENT" link set lo up
ip -n "$NS_ROUTER" link add vcr type veth peer name vcc netns "$NS_CLIENT"
ip -n "$NS_ROUTER" addr add 198.19.0.1/24 dev vcr
ip -n "$NS_ROUTER" link set vcr up
ip -n "$NS_CLIENT" addr add 198.19.0.2/24 dev vcc
ip -n "$NS_CLIENT" link set vcc up
ip -n "$NS_CLIENT" route add default via 198.19.0.1
in_ns "$NS_ROUTER" sysctl -qw net.ipv4.ip_forward=1 net.ipv4.fib_multipath_hash_policy=1
for i in 1 2 3; do
  ns=${BACKENDS[$((i-1))]}
  attach "$ns" "vb$i" "198.18.0.1$i" "02:00:00:00:0b:1$i"
  ip -n "$ns" addr add "$VIP/32" dev lo
  ip -n "$ns" route add 198.19.0.0/24 via 198.18.0.254
  in_ns "$ns" sysctl -qw net.ipv4.conf.all.arp_ignore=1 net.ipv4.conf.all.arp_announce=2
  ip netns exec "$ns" /usr/bin/python3 scripts/demo-backend.py "backend-$i" > "$WORK/b$i.out" 2>&1 &
  PIDS+=($!)
done
for i in 1 2 3; do
  for _ in $(seq 1 100); do grep -q ready "$WORK/b$i.out" 2>/dev/null && break; sleep 0.05; done
done
cat > "$WORK/router.conf" <<'CONF'
router id 198.18.0.254;
protocol device { }
protocol kernel { ipv4 { export all; }; merge paths on; }
protocol bfd { interface "*" { min rx interval 100 ms; min tx interval 100 ms; multiplier 3; }; }
filter from_boxes { if (65535, 0) ~ bgp_community then bgp_local_pref = 0; accept; }
template bgp boxes {
  local 198.18.0.254 as 65000; hold time 9; keepalive time 3; connect retry time 1; bfd on;
  ipv4 { import filter from_boxes; export none; };
}
protocol bgp box1 from boxes { neighbor 198.18.0.1 as 65001; }
protocol bgp box2 from boxes { neighbor 198.18.0.3 as 65001; }
CONF
ip netns exec "$NS_ROUTER" bird -f -c "$WORK/router.conf" -s "$WORK/router.ctl" > "$WORK/router.log" 2>&1 &
PIDS+=($!)
echo "client 198.19.0.2 — router 198.19.0.1 / 198.18.0.254 — LAN: boxes .1 and .3, backends .11-.13"

step "start two l4lb boxes (each in its namespace, with BIRD)"
for n in 1 2; do
  ns=${NS_BOX[$((n-1))]}
  ip netns add "$ns"
  ip -n "$ns" link set lo up
  ip netns exec "$ns" "$BIN" run --config "$WORK/box$n.toml" > "$WORK/box$n.log" 2>&1 &
  BOX_PID[$((n-1))]=$!
  for _ in $(seq 1 300); do
    grep -q 'l4lb running: ' "$WORK/box$n.log" && break
    kill -0 "${BOX_PID[$((n-1))]}" 2>/dev/null || { cat "$WORK/box$n.log"; echo "box $n exited"; exit 1; }
    sleep 0.1
  done
  ip -n "$ns" link set "l4lb-fleet$n" netns "$NS_LAN"
  ip -n "$NS_LAN" link set "l4lb-fleet$n" address "02:00:00:00:01:f$n"
  ip -n "$NS_LAN" link set "l4lb-fleet$n" master br0 up
done
hops() { ip -n "$NS_ROUTER" -4 route show "$VIP" | grep -o 'via [0-9.]*' | awk '{print $2}' | sort | xargs; }
for _ in $(seq 1 300); do [ "$(hops)" = "198.18.0.1 198.18.0.3" ] && break; sleep 0.1; done
echo "the router's route to $VIP:"
ip -n "$NS_ROUTER" route show "$VIP"
echo
echo "box 1 (l4lb ctl bgp):"
in_ns "${NS_BOX[0]}" "$BIN" ctl --config "$WORK/box1.toml" bgp

step "40 connections from the client: spread over the boxes (ECMP) and the backends (Maglev)"
for _ in $(seq 1 40); do in_ns "$NS_CLIENT" curl -s --max-time 3 "http://$VIP/" | awk '{print $1}'; done | sort | uniq -c
for n in 1 2; do
  flows=$(in_ns "${NS_BOX[$((n-1))]}" "$BIN" ctl --config "$WORK/box$n.toml" --json stats | awk -F'[:,]' '/"new_flows"/{print $2; exit}')
  echo "box $n scheduled$flows new flows"
done

step "box 1 dies (SIGKILL) while 30 long downloads and wrk run"
DL=()
for k in $(seq 1 30); do
  in_ns "$NS_CLIENT" curl -s --max-time 30 -o "$WORK/dl$k" "http://$VIP/slow" &
  DL+=($!)
done
in_ns "$NS_CLIENT" wrk -t2 -c16 -d8s --timeout 3s "http://$VIP/" > "$WORK/wrk.out" 2>&1 &
WRK=$!
sleep 2
t0=$(date +%s%N)
kill -9 "${BOX_PID[0]}"; wait "${BOX_PID[0]}" 2>/dev/null || true; BOX_PID[0]=
echo "$(date +%T.%3N) box 1 killed"
for _ in $(seq 1 2000); do [ "$(hops)" = "198.18.0.3" ] && break; sleep 0.005; done
echo "$(date +%T.%3N) the router uses only box 2, after $(( ($(date +%s%N) - t0) / 1000000 )) ms:"
ip -n "$NS_ROUTER" route show "$VIP"
wait "$WRK" || true
sed -n '1,9p' "$WORK/wrk.out"
wait "${DL[@]}" 2>/dev/null || true
complete=0
for k in $(seq 1 30); do [ "$(stat -c %s "$WORK/dl$k" 2>/dev/null || echo 0)" = 20000 ] && complete=$((complete+1)); done
echo "long downloads complete: $complete of 30 (those on box 1 moved to box 2 and kept their backend)"

step "box 2 drains (SIGTERM): GRACEFUL_SHUTDOWN, withdrawal, then it stops"
kill -TERM "${BOX_PID[1]}"
for _ in $(seq 1 100); do
  in_ns "$NS_ROUTER" birdc -s "$WORK/router.ctl" show route "$VIP/32" all | grep -q '(65535,0)' && break; sleep 0.05
done
echo "$(date +%T.%3N) the router sees box 2's route with GRACEFUL_SHUTDOWN:"
in_ns "$NS_ROUTER" birdc -s "$WORK/router.ctl" show route "$VIP/32" all | grep -E 'BGP.community|BGP.local_pref'
wait "${BOX_PID[1]}" || true; BOX_PID[1]=
echo "$(date +%T.%3N) box 2 exited; its log:"
grep -E 'box drain|routing:|bgp:' "$WORK/box2.log" | tail -6
echo "the router's route now: $(ip -n "$NS_ROUTER" route show "$VIP" || true)"

step "cleanup"
cleanup
trap - EXIT INT TERM
ip netns list | grep -q l4lb-fleet && { echo "namespaces left behind"; exit 1; }
echo "namespaces and TAP devices removed; demo done"
