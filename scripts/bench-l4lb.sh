#!/usr/bin/env bash
# l4lb's packet rate for one configuration, from its own counters: start it,
# let it warm up, read `l4lb ctl stats` twice over a measuring window, stop it.
#
#   scripts/bench-l4lb.sh CONFIG [WARM_S] [MEASURE_S]     (defaults 3 and 5)
#   L4LB_BIN=/path/to/other/l4lb scripts/bench-l4lb.sh ... (another build, for an A/B on one config)
#
# Prints "Mpps new_flow_fraction drop_fraction tsc_hz". scripts/bench.sh uses
# it for every l4lb run; on its own it A/B-tests a change against a config
# bench.sh wrote (e.g. /tmp/l4lb-bench/l4lb.toml). Needs the [control] socket.
set -euo pipefail
cd "$(dirname "$0")/.."
cfg=$1
warm=${2:-3}
measure=${3:-5}
BIN=${L4LB_BIN:-target/release/l4lb}
sock=$(sed -n 's/^socket = "\(.*\)"/\1/p' "$cfg" | head -1)
[ -n "$sock" ] || { echo "$cfg: needs [control] socket = \"...\"" >&2; exit 2; }
log=$(mktemp /tmp/l4lb-rate.XXXXXX.log)
$BIN run --config "$cfg" >"$log" 2>&1 &
pid=$!
trap 'kill -TERM $pid 2>/dev/null; wait $pid 2>/dev/null; rm -f "$log"' EXIT
for _ in $(seq 1 600); do
  grep -q '^control socket' "$log" && break
  kill -0 "$pid" 2>/dev/null || { cat "$log" >&2; echo "l4lb exited" >&2; exit 1; }
  sleep 0.1
done
sleep "$warm"
sample() {
  $BIN ctl --socket "$sock" --json stats |
    /usr/bin/python3 -c 'import json,sys,time; d=json.load(sys.stdin); print(time.time(), d["rx_packets"], d["new_flows"], d["dropped"])'
}
a=$(sample)
sleep "$measure"
b=$(sample)
tsc=$($BIN ctl --socket "$sock" --json status | /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["tsc_hz"])')
echo "$a $b $tsc" | awk '{dt=$5-$1; rx=$6-$2; r=(rx>0?rx:1); printf "%.3f %.4f %.4f %s\n", rx/dt/1e6, ($7-$3)/r, ($8-$4)/r, $9}'
