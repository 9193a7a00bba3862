#!/usr/bin/env bash
# Reserves hugepages for DPDK and mounts hugetlbfs on /dev/hugepages.
#   scripts/setup-hugepages.sh SIZE_MB [PAGE_KB]
#   SIZE_MB  total memory to reserve, in MiB (default 512)
#   PAGE_KB  page size: 2048 (default) or 1048576 (1 GiB pages, usually only at boot)
# Exit 0 when at least the asked size is reserved, 1 when less was possible.
set -euo pipefail

size_mb=${1:-512}
page_kb=${2:-2048}
case "$size_mb" in ''|*[!0-9]*) echo "hugepages: SIZE_MB must be a number of MiB, got '$size_mb'" >&2; exit 2;; esac
dir=/sys/kernel/mm/hugepages/hugepages-${page_kb}kB
if [ ! -d "$dir" ]; then
  echo "hugepages: this kernel has no ${page_kb} kB pages ($dir missing); sizes it has:" >&2
  ls /sys/kernel/mm/hugepages/ >&2 || true
  exit 1
fi
want=$(( (size_mb * 1024 + page_kb - 1) / page_kb ))
have=$(cat "$dir/nr_hugepages")
if [ "$have" -lt "$want" ]; then
  echo "$want" > "$dir/nr_hugepages" 2>/dev/null || true
  have=$(cat "$dir/nr_hugepages")
  if [ "$have" -lt "$want" ]; then
    # Fragmented memory: free caches, compact, try again.
    sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true
    echo 1 > /proc/sys/vm/compact_memory 2>/dev/null || true
    echo "$want" > "$dir/nr_hugepages" 2>/dev/null || true
    have=$(cat "$dir/nr_hugepages")
  fi
fi

mnt=/dev/hugepages
mkdir -p "$mnt"
if ! grep -qs " $mnt hugetlbfs " /proc/mounts; then
  mount -t hugetlbfs -o "pagesize=${page_kb}K" nodev "$mnt" 2>/dev/null \
    || echo "hugepages: could not mount hugetlbfs on $mnt (EAL's --in-memory mode still works)" >&2
fi

free=$(cat "$dir/free_hugepages")
echo "hugepages: ${have} x $((page_kb / 1024)) MiB reserved ($(( have * page_kb / 1024 )) MiB), ${free} free; hugetlbfs on $mnt"
if [ "$have" -lt "$want" ]; then
  cat >&2 <<MSG
hugepages: asked for $want pages, the kernel gave $have.
  Memory is too fragmented or too small. Either reserve them at boot
  (kernel command line: hugepagesz=${page_kb}K hugepages=$want, then reboot),
  or free memory and run this script again, or run l4lb with dpdk.hugepages = false.
MSG
  exit 1
fi
