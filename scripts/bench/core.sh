#!/usr/bin/env bash
# Benchmarks of the pure core (no DPDK): Maglev table builds and the pipeline's
# cost per packet in bursts of 32. Prints a summary table; criterion's full
# reports land in target/criterion/.
#   scripts/bench/core.sh            both
#   scripts/bench/core.sh maglev     one of them
set -euo pipefail
cd "$(dirname "$0")/../.."
which=${1:-all}
# The flow tables are large (36 B a slot): benches/pipeline.rs madvises
# them onto transparent huge pages itself, as `l4lb run` does.
# (GLIBC_TUNABLES=glibc.malloc.hugetlb=1, used here before, did nothing for
# them: the tables are 64-byte aligned, and glibc 2.36 does not madvise
# aligned allocations; AnonHugePages stayed 0 kB.)
log=$(mktemp)
trap 'rm -f "$log"' EXIT
if [ "$which" = all ] || [ "$which" = maglev ]; then
  cargo bench --quiet --bench maglev 2>&1 | tee -a "$log" | grep -E '^maglev_build|time:' | grep -v '%' || true
fi
if [ "$which" = all ] || [ "$which" = pipeline ]; then
  cargo bench --quiet --bench pipeline 2>&1 | tee -a "$log" | grep -E '^pipeline/|time:' | grep -v '%' || true
fi
echo
echo "machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cpus; $(date -u +%F)"
# Criterion prints "name\n  time: [low mid high]" (or both on one line): take the middle figure.
awk '
  /^(maglev_build|pipeline)\// { name=$1 }
  /time:/ && name != "" && !/%/ {
    for (i = 1; i <= NF; i++) if ($i ~ /^\[/) { v = $(i+2); u = $(i+3); break }
    if (name ~ /^pipeline/) {
      ns = (u == "µs" ? v * 1000 : (u == "ms" ? v * 1e6 : v)) / 32
      if (name == "pipeline/copy_only") { copy = ns }
      if (name == "pipeline/copy_renew_only") { renew = ns }
      if (name ~ /_only$/) {
        printf "%-45s %10.1f ns/packet\n", name, ns
      } else {
        # Net of the harness: the frame copy, and for fresh (new-flow) runs the renewal too.
        base = (name ~ /new_flow/ ? renew : copy)
        printf "%-45s %10.1f ns/packet  (%.1f net of the harness)\n", name, ns, ns - base
      }
    } else {
      printf "%-45s %10s %s\n", name, v, u
    }
    name = ""
  }' "$log"
