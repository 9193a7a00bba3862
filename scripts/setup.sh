#!/usr/bin/env bash
# Installs and prepares everything l4lb builds, runs and tests with.
# Idempotent; quick when everything is already in place. Needs root.
#   scripts/setup.sh            packages, cargo-nextest, cargo-deb, hugepages, /dev/net/tun
#   L4LB_HUGEPAGES_MB=1024 scripts/setup.sh   reserve more hugepage memory
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf 'setup: %s\n' "$*"; }

if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then exec sudo -E "$0" "$@"; fi
  say "must run as root (it installs packages, reserves hugepages, creates namespaces)"; exit 1
fi

# Debian packages: DPDK 22.11 and its headers, bindgen's libclang, and the tools
# the tests and the demo drive (namespaces, ping, captures, HTTP/UDP/TCP load).
PACKAGES=(
  dpdk dpdk-dev libdpdk-dev pkg-config clang libclang-dev libpcap-dev
  iproute2 iputils-ping tcpdump tshark curl wrk iperf3 python3 python3-scapy bird2
  netcat-openbsd procps kmod nftables
  man-db systemd prometheus chromium python3-websocket
)
missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
if [ ${#missing[@]} -gt 0 ]; then
  say "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections 2>/dev/null || true
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
pkg-config --atleast-version=22.11 libdpdk || { say "libdpdk >= 22.11 not found after install"; exit 1; }
say "DPDK $(pkg-config --modversion libdpdk)"

if ! command -v cargo >/dev/null 2>&1; then
  say "cargo not found: install a Rust toolchain (rustup) first"; exit 1
fi
if ! cargo nextest --version >/dev/null 2>&1; then
  say "installing cargo-nextest"
  cargo install --locked cargo-nextest
fi
if ! command -v cargo-deb >/dev/null 2>&1; then
  say "installing cargo-deb (scripts/package.sh builds the Debian package with it)"
  cargo install --locked cargo-deb
fi
for c in rustfmt clippy; do
  if ! cargo "${c/rustfmt/fmt}" --version >/dev/null 2>&1; then
    rustup component add "$c" || say "warning: cargo $c missing and rustup could not add it"
  fi
done

# TAP devices need the tun driver.
if [ ! -c /dev/net/tun ]; then
  modprobe tun 2>/dev/null || true
  if [ ! -c /dev/net/tun ]; then
    mkdir -p /dev/net && mknod /dev/net/tun c 10 200 && chmod 0666 /dev/net/tun
  fi
fi
[ -c /dev/net/tun ] || { say "/dev/net/tun is missing and could not be created: TAP tests cannot run"; exit 1; }
say "/dev/net/tun present"

# Hugepages: DPDK's normal memory. Tests fall back to --no-huge without them.
if ! scripts/setup-hugepages.sh "${L4LB_HUGEPAGES_MB:-512}"; then
  say "warning: no hugepages; l4lb runs with dpdk.hugepages = false and the tests use --no-huge"
fi
say "done"
