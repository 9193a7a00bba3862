#!/usr/bin/env bash
# Builds the Debian package and checks it on this machine (as root): it
# installs with dpkg, its binary runs, the installed configuration passes
# `l4lb check`, the man page renders, systemd accepts the units, and a purge
# leaves none of its files behind (an l4lb package already installed is
# purged first). Run by scripts/test.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
say() { printf 'package: %s\n' "$*"; }
deb=$(scripts/package.sh | tail -1)
say "built $deb ($(du -h "$deb" | cut -f1))"
if dpkg-query -W -f='${Status}' l4lb 2>/dev/null | grep -q installed; then
  say "purging the l4lb package installed before"
  dpkg -P l4lb >/dev/null
fi
purge() { dpkg -P l4lb >/dev/null 2>&1 || true; }
trap purge EXIT
files=$(dpkg-deb -c "$deb" | awk '$1 !~ /^d/ {print substr($6, 2)}')
dpkg -i "$deb" >/dev/null
say "installed: $(dpkg-query -W -f='${Package} ${Version}' l4lb)"
/usr/bin/l4lb --version
/usr/bin/l4lb check --config /etc/l4lb/l4lb.toml
dpkg-query -W -f='${Conffiles}\n' l4lb | grep -q '/etc/l4lb/l4lb.toml' || { say "l4lb.toml is not a conffile"; exit 1; }
man_dir=/usr/share/man/man1
if [ ! -e "$man_dir/l4lb.1.gz" ] && grep -rqs 'path-exclude=/usr/share/man' /etc/dpkg/dpkg.cfg.d/; then
  # This machine's dpkg leaves man pages out (a slim image): read the package's own.
  say "dpkg here excludes /usr/share/man: checking the pages inside the package"
  x=$(mktemp -d)
  dpkg-deb -x "$deb" "$x"
  man_dir="$x/usr/share/man/man1"
fi
man -l "$man_dir/l4lb.1.gz" | grep -q 'l4lb' || { say "man -l l4lb.1 shows nothing"; exit 1; }
man -l "$man_dir/l4lb-ctl-backends.1.gz" | grep -q 'Maglev entries'
for unit in l4lb.service l4lb-hugepages.service; do
  systemd-analyze verify "/usr/lib/systemd/system/$unit"
done
bash -n /usr/share/bash-completion/completions/l4lb
say "man page, units and completions check out"
dpkg -P l4lb >/dev/null
trap - EXIT
left=""
for f in $files; do
  if [ -e "$f" ]; then left+=" $f"; fi
done
for d in /etc/l4lb /usr/share/doc/l4lb; do
  if [ -e "$d" ]; then left+=" $d"; fi
done
[ -z "$left" ] || { say "left behind after the purge:$left"; exit 1; }
say "purged: nothing left behind"
