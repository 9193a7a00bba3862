#!/usr/bin/python3
"""Turns scripts/bench/testpmd.sh results into a table (stdout), and with --docs the
section of docs/benchmarks.md between the scripts/bench/testpmd.sh markers and docs/bench.png.

    scripts/bench/report.py RESULTS.tsv --workers N --tsc-hz HZ --seconds S [--docs]

RESULTS.tsv rows: input, program, Mpps, new-flow fraction, drop fraction.
"""
import argparse
import datetime
import os
import platform
import re
import subprocess

p = argparse.ArgumentParser()
p.add_argument("results")
p.add_argument("--workers", type=int, default=1)
p.add_argument("--layout", choices=["own", "shared", "oversub"], default="own")
p.add_argument("--tsc-hz", type=float, default=0)
p.add_argument("--seconds", type=int, default=5)
p.add_argument("--docs", action="store_true")
a = p.parse_args()

rows = []
for line in open(a.results):
    f = line.rstrip("\n").split("\t")
    if len(f) < 3:
        continue
    rows.append((f[0], f[1], float(f[2] or 0), f[3] if len(f) > 3 else "", f[4] if len(f) > 4 else ""))

io = {inp: mpps for inp, prog, mpps, _, _ in rows if prog == "testpmd io"}


def cycles(mpps):
    if mpps <= 0 or a.tsc_hz <= 0:
        return "-"
    return f"{a.tsc_hz * a.workers / (mpps * 1e6):.0f}"


def pct(x):
    if x in ("", None):
        return ""
    v = float(x) * 100
    # Small losses keep their digits: 0.02% is not "0.0%".
    return f"{v:.3f}%" if 0 < v < 0.1 else f"{v:.1f}%"


table = ["| input | program | Mpps | cycles/packet | × testpmd io | new flows | dropped |",
         "|---|---|---|---|---|---|---|"]
for inp, prog, mpps, newf, drop in rows:
    ratio = f"{mpps / io[inp]:.2f}" if io.get(inp) else "-"
    table.append(f"| {inp} | {prog} | {mpps:.2f} | {cycles(mpps)} | {ratio} | {pct(newf)} | {pct(drop)} |")
text = "\n".join(table)

# The throughput goals (issue 6), from the rows when the run has them.
val = {(r[0], r[1]): r[2] for r in rows}
loss = {(r[0], r[1]): r[4] for r in rows}
goals = []


def ratio_goal(what, inp, goal):
    l4, tp = val.get((inp, "l4lb ipip")), io.get(inp)
    if l4 and tp:
        ok = "met" if l4 / tp >= goal else "not met"
        goals.append(f"- {what} ({inp}, ipip): {l4:.2f} / {tp:.2f} Mpps = {l4 / tp:.2f}× testpmd io "
                     f"(goal ≥ {goal}×: {ok})")


ratio_goal("established", "v4 established 1000000 flows 64B", 0.5)
ratio_goal("new flows", "v4 syn 1000000 flows 64B", 0.35)
v6 = val.get(("v6 established 1000000 flows 78B", "l4lb ipip"))
for base in ("v4 established 1000000 flows 64B", "v4 established 1000000 flows 78B"):
    v4 = val.get((base, "l4lb ipip"))
    if v6 and v4:
        gap = 1 - v6 / v4
        ok = "met" if gap <= 0.15 else "not met"
        goals.append(f"- IPv6 (v6 1M flows 78B) against {base.replace(' flows', '')}, ipip: {v6:.2f} vs "
                     f"{v4:.2f} Mpps, {gap * 100:.1f}% below (goal within 15%: {ok})")
for (inp, prog), d in loss.items():
    if inp.startswith("memif") and "80%" in prog and d != "":
        ok = "met" if float(d) == 0 else "not met"
        goals.append(f"- memif at 80% of the maximum: {pct(d)} lost (goal zero: {ok})")
if goals:
    text += "\n\nGoals (per worker core):\n" + "\n".join(goals)
print(text)

if not a.docs:
    raise SystemExit(0)


def cpu():
    for l in open("/proc/cpuinfo"):
        if l.startswith("model name"):
            return l.split(":", 1)[1].strip()
    return platform.processor()


cmd = f"scripts/bench/testpmd.sh --workers {a.workers} --seconds {a.seconds}"
main_lcore = "the main lcore on a CPU of its own"
if a.layout == "shared":
    cmd += " --share-main-cpu"
    main_lcore = "the main lcore sharing CPU 0 with worker 1"
rustc = subprocess.run(["rustc", "--version"], capture_output=True, text=True).stdout.strip()
section = f"""<!-- scripts/bench/testpmd.sh begin -->
Command: `{cmd}` (the table and docs/bench.png are written by it). Date: {datetime.date.today()}.
Machine: {cpu()}, {os.cpu_count()} CPUs, {a.workers} worker core(s) + {main_lcore}, DPDK 22.11
(Debian), {rustc}. Input: `net_pcap,infinite_rx=1` into `net_null,no-rx=1`; frame sizes on the wire with FCS
(IMIX = 7:4:1 of 64, 594, 1438 B). Cycles/packet = TSC rate ({a.tsc_hz / 1e9:.2f} GHz) × workers / rate.

{text}
<!-- scripts/bench/testpmd.sh end -->"""
path = "docs/benchmarks.md"
doc = open(path).read()
if "<!-- scripts/bench/testpmd.sh begin -->" in doc:
    doc = re.sub(r"<!-- scripts/bench/testpmd.sh begin -->.*<!-- scripts/bench/testpmd.sh end -->", lambda _: section, doc, flags=re.S)
else:
    doc += "\n" + section + "\n"
open(path, "w").write(doc)

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

inputs = list(dict.fromkeys(r[0] for r in rows))
progs = list(dict.fromkeys(r[1] for r in rows))
fig, ax = plt.subplots(figsize=(max(8, 1.6 * len(inputs)), 4.5))
w = 0.8 / len(progs)
for k, prog in enumerate(progs):
    xs = [i + k * w for i in range(len(inputs))]
    ax.bar(xs, [val.get((inp, prog), 0) for inp in inputs], w, label=prog)
ax.set_xticks([i + 0.4 - w / 2 for i in range(len(inputs))])
ax.set_xticklabels([i.replace(" flows", "\nflows") for i in inputs], fontsize=8)
ax.set_ylabel("Mpps")
ax.set_title(f"l4lb vs dpdk-testpmd, {a.workers} worker core(s), by input (flows, mix, size)")
ax.legend(fontsize=8)
fig.tight_layout()
fig.savefig("docs/bench.png", dpi=110)
print(f"wrote {path} and docs/bench.png")
