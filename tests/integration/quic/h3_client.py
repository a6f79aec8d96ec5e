"""An HTTP/3 client (aioquic) that, like a browser, falls back to HTTPS
over TCP with the same server name when QUIC does not answer in time.

usage: h3_client.py HOST PORT SNI MODE QUIC_WAIT TCP_WAIT [ech]
  MODE quic: QUIC only; fallback: QUIC, then TCP if QUIC failed.
  ech: the QUIC ClientHello carries an outer Encrypted Client Hello
  extension (0xfe0d) with random contents, as a GREASE ECH client sends.
prints: QUIC OK|FAIL <ms>, then (fallback) TCP OK|FAIL <ms since start>.
"""
import asyncio
import os
import ssl
import sys
import time

from aioquic.asyncio.client import connect
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.h3.connection import H3_ALPN, H3Connection
from aioquic.h3.events import DataReceived
from aioquic.quic.configuration import QuicConfiguration

HOST, PORT, SNI, MODE = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
QUIC_WAIT, TCP_WAIT = float(sys.argv[5]), float(sys.argv[6])
START = time.monotonic()

if sys.argv[7:] == ["ech"]:
    import aioquic.tls as tls

    # ECHClientHello, outer: type 0, HPKE KDF 1 / AEAD 1, config id, a
    # 32-byte enc and a random payload.
    ECH = b"\x00\x00\x01\x00\x01" + os.urandom(1) + b"\x00\x20" + os.urandom(32)
    ECH += b"\x00\xb0" + os.urandom(0xB0)
    send_hello = tls.Context._client_send_hello

    def send_hello_with_ech(self, buf):
        self.handshake_extensions = list(self.handshake_extensions) + [(0xFE0D, ECH)]
        return send_hello(self, buf)

    tls.Context._client_send_hello = send_hello_with_ech


def ms():
    return int((time.monotonic() - START) * 1000)


class H3Client(QuicConnectionProtocol):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.h3 = H3Connection(self._quic)
        self.body = b""
        self.done = asyncio.get_running_loop().create_future()

    def quic_event_received(self, event):
        for e in self.h3.handle_event(event):
            if isinstance(e, DataReceived):
                self.body += e.data
                if e.stream_ended and not self.done.done():
                    self.done.set_result(self.body)

    async def get(self):
        sid = self._quic.get_next_available_stream_id()
        headers = [
            (b":method", b"GET"),
            (b":scheme", b"https"),
            (b":authority", SNI.encode()),
            (b":path", b"/"),
        ]
        self.h3.send_headers(sid, headers, end_stream=True)
        self.transmit()
        return await self.done


async def quic():
    cfg = QuicConfiguration(
        is_client=True, alpn_protocols=H3_ALPN, server_name=SNI, verify_mode=ssl.CERT_NONE
    )
    async with connect(HOST, PORT, configuration=cfg, create_protocol=H3Client) as c:
        return await c.get()


async def tcp():
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    r, w = await asyncio.open_connection(HOST, PORT, ssl=ctx, server_hostname=SNI)
    w.write(b"GET / HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n" % SNI.encode())
    await w.drain()
    return await r.read()


async def attempt(name, coro, wait, want):
    # The attempt is abandoned, not awaited, when it times out: a blocked
    # QUIC connection would otherwise linger in its closing state.
    task = asyncio.ensure_future(coro)
    done, _ = await asyncio.wait({task}, timeout=wait)
    ok = task in done and task.exception() is None and want in task.result()
    print(f"{name} {'OK' if ok else 'FAIL'} {ms()}", flush=True)
    return ok


async def main():
    ok = await attempt("QUIC", quic(), QUIC_WAIT, b"over h3")
    if MODE == "fallback" and not ok:
        await attempt("TCP", tcp(), TCP_WAIT, b"over tcp")
    print("END", flush=True)
    os._exit(0)


asyncio.run(main())
