#!/usr/bin/env bash
# l4lb's packet rate for one configuration, from its own counters: start it,
# let it warm up, read `l4lb ctl stats` once a second over a measuring window,
# stop it.
#
#   scripts/bench/rate.sh CONFIG [WARM_S] [MEASURE_S]     (defaults 3 and 5)
#   L4LB_BIN=/path/to/other/l4lb scripts/bench/rate.sh ... (another build, for an A/B on one config)
#
# Prints "Mpps new_flow_fraction drop_fraction tsc_hz": Mpps is the median of
# the per-second rates in the window. scripts/bench/testpmd.sh uses it for every l4lb
# run; on its own it A/B-tests a change against a config
# scripts/bench/testpmd.sh wrote (e.g. /tmp/l4lb-bench/l4lb.toml). Needs the [control] socket.
set -euo pipefail
cd "$(dirname "$0")/../.."
cfg=$1
warm=${2:-3}
measure=${3:-5}
BIN=${L4LB_BIN:-target/release/l4lb}
sock=$(sed -n 's/^socket = "\(.*\)"/\1/p' "$cfg" | head -1)
[ -n "$sock" ] || { echo "$cfg: needs [control] socket = \"...\"" >&2; exit 2; }
. scripts/bench/lib.sh
log=$(mktemp /tmp/l4lb-rate.XXXXXX.log)
samples=$(mktemp /tmp/l4lb-rate.XXXXXX.samples)
trap 'l4lb_stop; rm -f "$log" "$samples"' EXIT
l4lb_start "$cfg" "$log" 'control socket'
sleep "$warm"
sample() {
  $BIN ctl --socket "$sock" --json stats |
    /usr/bin/python3 -c 'import json,sys,time; d=json.load(sys.stdin); c=d.get("counters", d); print(time.time(), c["rx_packets"], c["new_flows"], d["dropped"])'
}
# One sample a second; the rate is the median of the per-second rates (as
# scripts/bench/testpmd.sh takes testpmd's), so one second in which the VM stopped the worker
# does not set the figure. The fractions are over the whole window.
sample >> "$samples"
for _ in $(seq 1 "$measure"); do
  sleep 1
  sample >> "$samples"
done
tsc=$($BIN ctl --socket "$sock" --json status | /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["tsc_hz"])')
/usr/bin/python3 - "$samples" "$tsc" <<'PY'
import statistics, sys
rows = [list(map(float, l.split())) for l in open(sys.argv[1]) if l.strip()]
rates = [(b[1] - a[1]) / (b[0] - a[0]) / 1e6 for a, b in zip(rows, rows[1:])]
rx = max(rows[-1][1] - rows[0][1], 1)
print("%.3f %.4f %.4f %s" % (statistics.median(rates), (rows[-1][2] - rows[0][2]) / rx,
                              (rows[-1][3] - rows[0][3]) / rx, sys.argv[2]))
PY
