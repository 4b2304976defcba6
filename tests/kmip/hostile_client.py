"""A hostile KMIP client for the listener tests, run in its own process (it must share no GIL with the
server): ``python -m tests.kmip.hostile_client PORT CERT KEY CA CONNECTIONS SECONDS`` sends maximal
messages of empty Text Strings (:func:`hostile`) over each connection, one at a time, reading each
answer, and prints how many were answered."""

from __future__ import annotations

import socket
import ssl
import struct
import sys
import threading
import time

from openkcm.protocol import ttlv
from openkcm.protocol.tags import Tag


def hostile(size: int = 1 << 20) -> bytes:
    """A Request Message of ``size`` bytes made of empty Text Strings (8 bytes each: the most items per
    byte), broken only at the very end, so a decoder without an item bound reads all of it."""
    room = size - 8
    body = struct.pack(">II", (0x420001 << 8) | ttlv.TEXT_STRING, 0) * (room // 8 - 1)
    body += struct.pack(">II", (0x420001 << 8) | 0x0B, 0)  # unknown type 0x0B
    return struct.pack(">II", (Tag.REQUEST_MESSAGE << 8) | ttlv.STRUCTURE, len(body)) + body


def main(port: int, cert: str, key: str, ca: str, connections: int, seconds: float) -> None:
    message = hostile()
    answered = [0]

    def run() -> None:
        ctx = ssl.create_default_context(cafile=ca)
        ctx.load_cert_chain(cert, key)
        with ctx.wrap_socket(socket.create_connection(("127.0.0.1", port)), server_hostname="127.0.0.1") as s:
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                s.sendall(message)
                head = b""
                while len(head) < 8:
                    head += s.recv(8 - len(head))
                need, body = int.from_bytes(head[4:], "big"), b""
                while len(body) < need:
                    body += s.recv(need - len(body))
                answered[0] += 1

    threads = [threading.Thread(target=run) for _ in range(connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(answered[0], flush=True)


if __name__ == "__main__":
    a = sys.argv[1:]
    main(int(a[0]), a[1], a[2], a[3], int(a[4]), float(a[5]))
