#!/usr/bin/env python3
"""Instructions per packet of profile_pipeline, by the l4lb function each
instruction was inlined from (the outermost frame below process_burst).

    cargo build --release --example profile_pipeline
    valgrind --tool=callgrind --dump-instr=yes --callgrind-out-file=/tmp/cg.out \\
        target/release/examples/profile_pipeline hot v4 20000
    scripts/bench/callgrind-by-function.py target/release/examples/profile_pipeline /tmp/cg.out 640000 [DEPTH]

The third argument is the packet count (bursts x 32); DEPTH 2 splits each
function by the one inlined into it (e.g. balance > encap_template). Only instructions that
ran at least ~once per packet are counted, so one-off set-up stays out.
"""
import collections
import re
import subprocess
import sys


def costs_by_address(path):
    """Self cost per instruction address (calls= lines carry inclusive costs: skipped)."""
    costs = collections.Counter()
    cur, after_calls = 0, False
    for line in open(path):
        if line.startswith("calls="):
            after_calls = True
            continue
        t = line.split()
        if len(t) != 3 or not re.match(r"^(0x[0-9a-f]+|[+-]\d+|\*)$", t[0]):
            continue
        tok = t[0]
        if tok.startswith("0x"):
            cur = int(tok, 16)
        elif tok[0] in "+-":
            cur += int(tok)
        if after_calls:
            after_calls = False
            continue
        costs[cur] += int(t[2])
    return costs


def inline_chains(binary, addrs):
    """addr -> [(function, file:line), ...], innermost first (addr2line -i)."""
    out = subprocess.run(
        ["addr2line", "-a", "-f", "-i", "-C", "-e", binary] + [hex(a) for a in addrs],
        capture_output=True, text=True, check=True,
    ).stdout.split("\n")
    chains, cur, i = {}, None, 0
    while i < len(out):
        line = out[i]
        if line.startswith("0x"):
            cur = int(line, 16)
            chains[cur] = []
            i += 1
        elif line and i + 1 < len(out):
            chains[cur].append((line, out[i + 1]))
            i += 2
        else:
            i += 1
    return chains


def main():
    if len(sys.argv) not in (4, 5):
        sys.exit(__doc__)
    binary, cg, packets = sys.argv[1], sys.argv[2], int(sys.argv[3])
    depth = int(sys.argv[4]) if len(sys.argv) == 5 else 1
    costs = costs_by_address(cg)
    hot = [a for a, c in costs.items() if c >= packets * 0.9]
    chains = inline_chains(binary, hot)
    by_fn = collections.Counter()
    for a in hot:
        own = [f for f, loc in chains.get(a, []) if "/src/" in loc or "/examples/" in loc]
        own.reverse()  # outermost first
        names = own[1 : 1 + depth] if len(own) > 1 else own[:1] or ["(outside l4lb: libc, the example)"]
        by_fn[" > ".join(re.sub(r"<.*?>", "", n).replace("l4lb::", "") for n in names)] += costs[a] / packets
    total = sum(by_fn.values())
    for name, v in by_fn.most_common():
        if v >= 1:
            print(f"{v:7.1f}  {name}")
    print(f"{total:7.1f}  total (instructions per packet, set-up included once per packet's share)")


if __name__ == "__main__":
    main()
