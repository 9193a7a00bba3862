#!/usr/bin/python3
"""Userspace tunnel endpoint for test and demo backends on kernels without the
ipip/ip6tnl/fou modules. Receives IP-in-IP (IPv4 protocol 4, IPv6 next header
4 and 41) and GUE (UDP, variant 1: the inner IP packet directly) and writes the
inner packet to a TUN device, so it meets the kernel's own TCP/UDP stack, which
answers the client directly from the VIP (on lo). Production backends use the
kernel's ipip/ip6tnl devices or a fou port instead (docs/operations.md).

    backend-decap.py TUN_NAME [GUE_PORT [DELAY_MS]]    (prints "ready" when listening)

DELAY_MS holds each inner packet that long before the kernel gets it: a
backend that answers slowly, for tests of response times measured from
traffic (this kernel has no netem).
"""
import fcntl
import heapq
import os
import select
import socket
import struct
import subprocess
import sys
import time

TUNSETIFF = 0x400454CA
IFF_TUN, IFF_NO_PI = 0x0001, 0x1000

name = sys.argv[1]
gue_port = int(sys.argv[2]) if len(sys.argv) > 2 else 6080
delay = (int(sys.argv[3]) if len(sys.argv) > 3 else 0) / 1000.0

tun = os.open("/dev/net/tun", os.O_RDWR)
fcntl.ioctl(tun, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TUN | IFF_NO_PI))
subprocess.run(["ip", "link", "set", name, "up"], check=True)
# The inner packet's source (the client) is not routed via the TUN device.
for conf in ("all", name):
    subprocess.run(["sysctl", "-qw", f"net.ipv4.conf.{conf}.rp_filter=0"], check=True)

socks = {}
s4 = socket.socket(socket.AF_INET, socket.SOCK_RAW, 4)          # 4in4: outer IPv4 header included
socks[s4.fileno()] = (s4, "strip-ipv4")
for proto in (4, 41):                                            # 4in6, 6in6: payload only
    s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, proto)
    socks[s.fileno()] = (s, "payload")
g4 = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
g4.bind(("0.0.0.0", gue_port))
socks[g4.fileno()] = (g4, "payload")
g6 = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
g6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
g6.bind(("::", gue_port))
socks[g6.fileno()] = (g6, "payload")

print("ready", flush=True)
held = []  # (due, sequence, inner packet), with DELAY_MS
seq = 0
while True:
    now = time.monotonic()
    while held and held[0][0] <= now:
        os.write(tun, heapq.heappop(held)[2])
    wait = max(0.0, held[0][0] - now) if held else None
    ready, _, _ = select.select(list(socks), [], [], wait)
    for fd in ready:
        sock, how = socks[fd]
        data = sock.recv(65535)
        if how == "strip-ipv4":
            data = data[(data[0] & 0x0F) * 4:]
        if not data or data[0] >> 4 not in (4, 6):
            continue
        if delay:
            seq += 1
            heapq.heappush(held, (time.monotonic() + delay, seq, data))
        else:
            os.write(tun, data)
