#!/usr/bin/env bash
# The one test command. First the fast tier: the packet, balancing and
# pipeline code without DPDK and without root (`cargo test
# --no-default-features`, what a laptop runs). Then setup (packages,
# hugepages, tun), the fixture, format and lint gates, and every test tier
# (unit and property tests, DPDK vdev tests, TAP/namespace end-to-end tests),
# each test in its own process (cargo-nextest; EAL starts once per process).
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== fast tier: no DPDK, no root (cargo test --no-default-features)"
# Its own target directory: the two feature sets do not rebuild each other.
cargo test --no-default-features --target-dir target/fast --quiet

scripts/setup.sh

echo "== fixtures: the committed cases are what their scapy generator writes"
scripts/check-fixtures.sh

echo "== format and lints"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --quiet -- -D warnings
cargo clippy --no-default-features --target-dir target/fast --all-targets --quiet -- -D warnings

echo "== doc tests"
cargo test --workspace --doc --quiet

echo "== unit, vdev and end-to-end tests"
# The nextest summary line is the last thing printed.
# (Benchmarks are compiled by clippy above and run by scripts/bench/core.sh.)
cargo nextest run --workspace --lib --bins --tests --no-fail-fast "$@"
