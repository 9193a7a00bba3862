#!/usr/bin/python3
"""Writes the fuzz targets' seed corpus (tests/fuzz/corpus/TARGET/seed-*)
from the repository's own inputs: the fixture frames (tests/fixtures/cases.json),
the example configurations and a request line per control command. The
seeds are committed; rerun this after the inputs change:

    python3 tests/fuzz/seeds.py

Framing follows l4lb::fuzz: a frame is a little-endian u16 length and the
bytes; `parsers` puts a port byte before each frame; `pipeline` starts with
two states of STATE_BYTES bytes each, then operations (an operation byte
whose bits 2-3 are 0 is one frame, 2 a burst of 1 + next byte % 8 frames).
"""
import json
import pathlib
import random
import struct

ROOT = pathlib.Path(__file__).resolve().parents[2]
OUT = ROOT / "tests/fuzz/corpus"
STATE_BYTES = 192  # l4lb::fuzz::STATE_BYTES


def frame(b):
    return struct.pack("<H", len(b)) + b


def write(target, name, data):
    d = OUT / target
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_bytes(data)


cases = json.loads((ROOT / "tests/fixtures/cases.json").read_text())
frames = [bytes.fromhex(c["input"]) for c in cases]

# parsers: each fixture frame alone, and all of them in a row on port 0.
for i, f in enumerate(frames):
    write("parsers", f"seed-{i:03}", b"\0" + frame(f))
write("parsers", "seed-all", b"".join(b"\0" + frame(f) for f in frames))

# pipeline: drawn states from fixed random bytes, then the fixture frames
# one by one to worker 0 on port 0, a burst of eight, and a sweep.
rnd = random.Random(2026)
for s in range(8):
    states = bytes(rnd.getrandbits(8) for _ in range(2 * STATE_BYTES))
    ops = b""
    for f in frames[s::4]:
        ops += bytes([rnd.choice([0x00, 0x10, 0x20, 0x31])]) + frame(f)
    burst = frames[s:s + 8]
    ops += bytes([0x08, len(burst) - 1]) + b"".join(frame(f) for f in burst)
    ops += bytes([0x0c, 7, 0x4c])  # a sweep, then the swap to the second state
    ops += b"".join(bytes([0x01]) + frame(f) for f in frames[s::5])
    write("pipeline", f"seed-{s}", states + ops)

# config: the example configurations and the fixtures' and tests' own.
configs = sorted((ROOT / "config").glob("*.toml")) + [ROOT / "tests/fixtures/fixtures.toml"]
for p in configs:
    write("config", f"seed-{p.stem}", p.read_bytes())

# control: one request line per command.
requests = [
    {"cmd": "status"}, {"cmd": "services"}, {"cmd": "backends"}, {"cmd": "backends", "service": "web"},
    {"cmd": "stats"}, {"cmd": "drain", "backend": "web/198.18.0.11"},
    {"cmd": "undrain", "backend": "web/198.18.0.11"},
    {"cmd": "set-weight", "backend": "web/198.18.0.11", "weight": 3}, {"cmd": "reload"},
    {"cmd": "lookup", "proto": "tcp", "src": "198.18.0.2:40000", "dst": "198.18.100.1:80"},
    {"cmd": "lookup", "proto": "udp", "src": "[2001:db8::2]:5353", "dst": "[2001:db8:100::1]:53"},
    {"cmd": "whatif", "backend": "web/198.18.0.11", "change": "remove"},
    {"cmd": "whatif", "backend": "web/198.18.0.11", "change": {"weight": 5}},
    {"cmd": "bgp"}, {"cmd": "drain-box", "keep_running": True}, {"cmd": "undrain-box"}, {"cmd": "sync"},
]
for i, r in enumerate(requests):
    write("control", f"seed-{i:02}-{r['cmd']}", json.dumps({"v": 2, **r}).encode())
