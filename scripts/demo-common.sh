# Helpers the demos source (scripts/demo.sh, scripts/demo-fleet.sh).

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
in_ns() { local ns=$1; shift; ip netns exec "$ns" "$@"; }

# attach NS TAG ADDRESS MAC: a new namespace NS on the bridge br0 of
# namespace $NS_LAN, through a veth pair TAGo (bridge side) / TAGi (with
# ADDRESS/24 and MAC).
attach() {
  ip netns add "$1"
  ip -n "$1" link set lo up
  ip -n "$NS_LAN" link add "$2o" type veth peer name "$2i" netns "$1"
  ip -n "$NS_LAN" link set "$2o" master br0 up
  ip -n "$1" link set "$2i" address "$4"
  ip -n "$1" addr add "$3/24" dev "$2i"
  ip -n "$1" link set "$2i" up
}
