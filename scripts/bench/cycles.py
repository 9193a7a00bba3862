#!/usr/bin/python3
"""The table of scripts/bench/cycles.sh: each run's cycles per packet (the TSC
rate over its packet rate: the worker busy-polls) split by the share of its
CPU's perf samples in each part of the program, then its top symbols.

    scripts/bench/cycles.py --tsc-hz HZ --run NAME MPPS SYMBOLS SOURCES [--run ...] [--title T]

SYMBOLS and SOURCES: `perf report --no-children --sort dso,sym` and `--sort dso,srcfile`
(`--stdio -q`) of the run. l4lb's own samples are split by source file, which
names the code inlined into the worker loop by where it was written.
"""
import argparse
import re

p = argparse.ArgumentParser()
p.add_argument("--tsc-hz", type=float, required=True)
p.add_argument("--run", nargs=4, action="append", metavar=("NAME", "MPPS", "SYMBOLS", "SOURCES"), required=True)
p.add_argument("--title", default="")
p.add_argument("--top", type=int, default=12)
a = p.parse_args()

LINE = re.compile(r"^\s*([\d.]+)%\s+(\S+)\s+\[(.)\]\s+(.*?)\s*$")
SRC = re.compile(r"^\s*([\d.]+)%\s+(\S+)\s*(.*?)\s*$")

# (part, test on (dso, source file)), first match wins.
PARTS = [
    ("kernel (interrupts, the tick)", lambda d, f: "kernel" in d),
    ("net_pcap receive (frame copied into an mbuf)", lambda d, f: "net_pcap" in d or "libpcap" in d),
    ("libc (memcpy: net_pcap's copy of each frame)", lambda d, f: "libc" in d),
    ("net_null transmit", lambda d, f: "net_null" in d),
    ("mempool (mbufs allocated and freed)", lambda d, f: "mempool" in d or "rte_mempool" in f),
    ("ethdev (burst calls)", lambda d, f: "ethdev" in d or "rte_ethdev" in f),
    ("DPDK inline functions (mbuf, prefetch)", lambda d, f: "/dpdk/" in f or "/rte_" in f),
    ("testpmd's loop", lambda d, f: "testpmd" in d),
    ("l4lb flow table", lambda d, f: "/flowtable/" in f),
    ("l4lb pipeline (parse, decide, rewrite)", lambda d, f: "/pipeline/" in f or "/balancer/" in f or "/src/net/" in f),
    ("l4lb worker loop (bursts, TX, counters, mailbox, sweep)", lambda d, f: "/src/dataplane/" in f),
    ("l4lb DPDK wrappers (rx/tx burst, mbufs)", lambda d, f: "/src/dpdk/" in f or "dpdk-sys" in f),
    ("Rust core and std (slices, atomics, arithmetic)", lambda d, f: "/rustc/" in f or "/library/" in f or ".cargo/registry" in f),
    ("l4lb, no source line", lambda d, f: "l4lb" in d),
    ("other", lambda d, f: True),
]


def load(path, pattern, fields):
    rows = []
    for line in open(path):
        m = pattern.match(line)
        if m:
            rows.append((float(m.group(1)),) + tuple(m.group(i) for i in fields))
    total = sum(r[0] for r in rows) or 1.0
    return [(r[0] / total,) + r[1:] for r in rows]


def part_of(d, f):
    return next(name for name, test in PARTS if test(d, f))


runs = []
for name, mpps, symbols, sources in a.run:
    mpps = float(mpps)
    cycles = a.tsc_hz / (mpps * 1e6) if mpps > 0 else 0.0
    parts = {}
    for share, d, f in load(sources, SRC, (2, 3)):
        parts[part_of(d, f)] = parts.get(part_of(d, f), 0.0) + share
    runs.append((name, mpps, cycles, load(symbols, LINE, (2, 3, 4)), parts))

if a.title:
    print(a.title)
print(f"TSC {a.tsc_hz / 1e9:.2f} GHz; cycles per packet = TSC rate / packet rate, split by perf's samples\n")
head = "| part | " + " | ".join(f"{n} ({m:.1f} Mpps)" for n, m, _, _, _ in runs) + " |"
print(head)
print("|---|" + "---|" * len(runs))
for name, _ in PARTS:
    if not any(r[4].get(name, 0.0) * r[2] >= 0.05 for r in runs):
        continue
    cells = []
    for _, _, cycles, _, parts in runs:
        share = parts.get(name, 0.0)
        cells.append(f"{share * cycles:.1f} ({share * 100:.0f}%)" if share else "")
    print(f"| {name} | " + " | ".join(cells) + " |")
print("| **total, cycles per packet** | " + " | ".join(f"**{c:.1f}**" for _, _, c, _, _ in runs) + " |")
for name, _, cycles, rows, _ in runs:
    print(f"\n{name}: top symbols (cycles per packet, share)")
    for share, d, k, s in sorted(rows, reverse=True)[: a.top]:
        sym = s if len(s) <= 90 else s[:87] + "..."
        print(f"  {share * cycles:6.1f}  {share * 100:5.1f}%  {d:<28} {sym}")
