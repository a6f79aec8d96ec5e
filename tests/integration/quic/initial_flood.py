"""Sends N real QUIC client Initials (aioquic, server name SNI), each with a
fresh destination connection ID and from its own source port, i.e. N new
UDP flows, as fast as it can; the Initials are made before the clock starts.

usage: initial_flood.py HOST PORT N SNI [other]    prints: SENT <n> <seconds>
  other: datagrams of the same size that are not QUIC (first byte 0x00),
  to tell the queue's cost from the Initial's.
"""
import socket
import sys
import time

from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection

HOST, PORT, N, SNI = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
family = socket.AF_INET6 if ":" in HOST else socket.AF_INET

datagrams = []
for _ in range(N):
    c = QuicConnection(configuration=QuicConfiguration(is_client=True, alpn_protocols=["h3"], server_name=SNI))
    c.connect((HOST, PORT), now=time.monotonic())
    datagrams.append(c.datagrams_to_send(now=time.monotonic())[0][0])
if sys.argv[5:] == ["other"]:
    datagrams = [b"\x00" + d[1:] for d in datagrams]

socks = []
for i in range(N):
    s = socket.socket(family, socket.SOCK_DGRAM)
    s.bind(("", 0))
    socks.append(s)
print("READY", flush=True)
start = time.monotonic()
for s, d in zip(socks, datagrams):
    s.sendto(d, (HOST, PORT))
took = time.monotonic() - start
print("SENT", N, f"{took:.4f}", flush=True)
