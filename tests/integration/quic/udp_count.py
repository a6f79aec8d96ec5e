"""Counts UDP datagrams on PORT; after the first, reports when none came for
a second: COUNT <n> <seconds from first to last>.

usage: udp_count.py PORT
"""
import socket
import sys
import time

s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
try:
    s.setsockopt(socket.SOL_SOCKET, 33, 64 << 20)  # SO_RCVBUFFORCE (root)
except OSError:
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 << 20)
s.bind(("::", int(sys.argv[1])))
print("LISTENING", flush=True)
n, first, last = 0, None, None
while True:
    s.settimeout(None if n == 0 else 1.0)
    try:
        s.recv(2048)
    except socket.timeout:
        print("COUNT", n, f"{last - first:.4f}", flush=True)
        n, first, last = 0, None, None
        continue
    now = time.monotonic()
    first = first or now
    last = now
    n += 1
