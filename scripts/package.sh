#!/usr/bin/env bash
# Builds the Debian package: target/debian/l4lb_VERSION-1_amd64.deb.
#   scripts/package.sh            (needs cargo-deb: cargo install --locked cargo-deb)
# The binary from `cargo build --release`, its man pages and shell
# completions generated from the clap definitions into target/package/, then
# cargo-deb with Cargo.toml's [package.metadata.deb] (assets, conffiles,
# systemd units in config/deb/, dependencies from dpkg-shlibdeps).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cargo-deb >/dev/null || { echo "package: cargo-deb missing (cargo install --locked cargo-deb)" >&2; exit 1; }
cargo build --release --quiet --bin l4lb
rm -rf target/package
mkdir -p target/package/completions
target/release/l4lb manpages --out target/package/man
gzip -9n target/package/man/*.1
target/release/l4lb completions bash > target/package/completions/l4lb.bash
target/release/l4lb completions zsh > target/package/completions/_l4lb
target/release/l4lb completions fish > target/package/completions/l4lb.fish
cargo deb --no-build --strip --quiet "$@"
ls target/debian/l4lb_*.deb
