#!/usr/bin/python3
"""Userspace tunnel endpoint for test and demo backends on kernels without the
ipip/ip6tnl/fou modules. Receives IP-in-IP (IPv4 protocol 4, IPv6 next header
4 and 41) and GUE (UDP, variant 1: the inner IP packet directly) and writes the
inner packet to a TUN device, so it meets the kernel's own TCP/UDP stack, which
answers the client directly from the VIP (on lo). Production backends use the
kernel's ipip/ip6tnl devices or a fou port instead (docs/operations.md).

    backend-decap.py TUN_NAME [GUE_PORT]    (prints "ready" when listening)
"""
import fcntl
import os
import select
import socket
import struct
import subprocess
import sys

TUNSETIFF = 0x400454CA
IFF_TUN, IFF_NO_PI = 0x0001, 0x1000

name = sys.argv[1]
gue_port = int(sys.argv[2]) if len(sys.argv) > 2 else 6080

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
while True:
    ready, _, _ = select.select(list(socks), [], [])
    for fd in ready:
        sock, how = socks[fd]
        data = sock.recv(65535)
        if how == "strip-ipv4":
            data = data[(data[0] & 0x0F) * 4:]
        if data and data[0] >> 4 in (4, 6):
            os.write(tun, data)
