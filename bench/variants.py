"""Bench-only experiments on our listener, to put numbers on a proposed change BEFORE anyone makes it in
kmip_fargate (whose owner decides). Figures from these variants are printed with their label and never
count as the server's figures.

- ``inline``: run the bytes-in/bytes-out core on the event-loop thread instead of handing every request
  to the thread pool (the profile shows the hand-off, ``run_in_executor`` + ``ThreadPoolExecutor.submit``,
  costing more than the core's own work for a warm Get), and read frames without a ``wait_for`` task per
  read. Only safe where the core does not block: it still touches DynamoDB on a cache miss, the epoch
  poll and Create/Locate, which is why the real change is "inline when warm, pool otherwise".
- ``protocol``: an ``asyncio.Protocol`` listener (framing in ``data_received``, the core called inline,
  no StreamReader/StreamWriter, no task or timer per read) — the shape of the echo server that measures
  the generator's ceiling; it measures what the stream layer costs. Same limits are NOT enforced here
  (no idle/read timeouts, no per-client counts): an experiment, not a server.
- ``reuse_port``: several server processes share the port (SO_REUSEPORT); the kernel spreads connections.
"""

from __future__ import annotations

import asyncio
import types
from typing import Any

from kmip_fargate.server import KmipServer, tls_context
from openkcm.protocol.ttlv import message_length


class _KmipProtocol(asyncio.Protocol):
    def __init__(self, server: KmipServer) -> None:
        self.server = server
        self.buf = bytearray()
        self.need = 0
        self.identity: Any = None
        self.address = ""
        self.transport: Any = None

    def connection_made(self, transport: Any) -> None:
        from cryptography import x509

        from openkcm.domain.pki import identity_from_certificate

        self.transport = transport
        peer = transport.get_extra_info("peername") or ("?", 0)
        self.address = f"{peer[0]}:{peer[1]}"
        der = transport.get_extra_info("ssl_object").getpeercert(binary_form=True)
        try:
            self.identity = identity_from_certificate(
                x509.load_der_x509_certificate(der), self.server.config.trust_domain
            )
        except Exception:  # noqa: BLE001 - experiment: refuse silently
            transport.close()

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        while True:
            if not self.need:
                if len(buf) < 8:
                    return
                self.need = message_length(bytes(buf[:8]))
                if self.need > self.server.config.max_message_size:
                    self.transport.close()
                    return
            if len(buf) < self.need:
                return
            request = bytes(buf[: self.need])
            del buf[: self.need]
            self.need = 0
            self.transport.write(self.server.core.handle(request, self.identity, self.address))


def adapt(server: KmipServer, *, inline: bool, reuse_port: bool, protocol: bool = False) -> KmipServer:
    if protocol:

        async def start_protocol(self: KmipServer) -> None:
            loop = asyncio.get_running_loop()
            self._server = await loop.create_server(
                lambda: _KmipProtocol(self),
                self.config.host,
                self.config.port,
                ssl=tls_context(self.config),
                backlog=512,
                reuse_port=reuse_port,
            )
            self.port = self._server.sockets[0].getsockname()[1]

        server.start = types.MethodType(start_protocol, server)  # type: ignore[method-assign]
        return server
    if reuse_port:

        async def start(self: KmipServer) -> None:
            self._loop = asyncio.get_running_loop()
            self._server = await asyncio.start_server(
                self._client,
                self.config.host,
                self.config.port,
                ssl=tls_context(self.config),
                ssl_handshake_timeout=self.config.read_timeout,
                limit=64 * 1024,
                backlog=512,
                reuse_port=True,
            )
            self.port = self._server.sockets[0].getsockname()[1]

        server.start = types.MethodType(start, server)  # type: ignore[method-assign]
    if inline:

        async def _serve(
            self: KmipServer,
            reader: asyncio.StreamReader,
            writer: asyncio.StreamWriter,
            identity: Any,
            address: str,
        ) -> None:
            cfg = self.config
            handle = self.core.handle
            while True:
                header = await reader.readexactly(8)
                length = message_length(header)
                if length > cfg.max_message_size:
                    return
                body = await reader.readexactly(length - 8)
                writer.write(handle(header + body, identity, address))
                await writer.drain()

        server._serve = types.MethodType(_serve, server)  # type: ignore[method-assign]
    return server
