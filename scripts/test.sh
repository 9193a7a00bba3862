#!/usr/bin/env bash
# The one test command. First the fast tier: the packet, balancing and
# pipeline code without DPDK and without root (`cargo test
# --no-default-features`, what a laptop runs). Then setup (packages,
# hugepages, tun), the fixture, format and lint gates, and every test tier
# (unit and property tests, DPDK vdev tests, TAP/namespace end-to-end tests),
# each test in its own process (cargo-nextest; EAL starts once per process),
# a short run of each fuzz target, and the Debian package's install check.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== fast tier: no DPDK, no root (cargo test --no-default-features)"
# Its own target directory: the two feature sets do not rebuild each other.
cargo test --no-default-features --target-dir target/fast --quiet

echo "== loom: the shared persistence table's lock-free protocol, interleaving by interleaving"
RUSTFLAGS="--cfg l4lb_loom" LOOM_MAX_PREEMPTIONS=3 \
  cargo test --release --no-default-features --target-dir target/loom --quiet --lib loom_models

scripts/setup.sh

echo "== fixtures: the committed cases are what their scapy generator writes"
scripts/check-fixtures.sh

echo "== format and lints"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --quiet -- -D warnings
cargo clippy --no-default-features --target-dir target/fast --all-targets --quiet -- -D warnings

echo "== fuzzing: each target a few seconds from its committed corpus (scripts/fuzz.sh)"
scripts/fuzz.sh 5
(cd tests/fuzz && cargo fmt -- --check && cargo clippy --quiet --target-dir ../../target/fuzz-clippy -- -D warnings)

echo "== doc tests"
cargo test --workspace --doc --quiet

echo "== alerting rules: promtool check and unit tests (config/prometheus/)"
promtool check rules config/prometheus/l4lb-alerts.yml
promtool test rules config/prometheus/l4lb-alerts.test.yml

echo "== the Debian package: built, installed, checked, purged (scripts/check-package.sh)"
scripts/check-package.sh

echo "== the TAP end-to-end tests again, with two workers on a two-queue port"
# (A failure here fails the run, after the full tier below has run too.)
two_workers=0
L4LB_TEST_WORKERS=2 cargo nextest run --no-fail-fast \
  --test e2e_balance --test e2e_encap --test e2e_health --test e2e_control --test e2e_access --test e2e_fragments --test e2e_quota --test e2e_vip_path "$@" || two_workers=$?

echo "== unit, vdev and end-to-end tests"
# The nextest summary line is the last thing printed.
# (Benchmarks are compiled by clippy above and run by scripts/bench/core.sh.)
cargo nextest run --workspace --lib --bins --tests --no-fail-fast "$@"
if [ "$two_workers" -ne 0 ]; then
  echo "the TAP tests with two workers failed (see above)" >&2
  exit "$two_workers"
fi
