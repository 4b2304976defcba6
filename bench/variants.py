"""Bench-only experiments on our listener, to put numbers on a proposed change BEFORE anyone makes it in
kmip_fargate (whose owner decides). Figures from these variants are printed with their label and never
count as the server's figures.

- ``inline``: run the bytes-in/bytes-out core on the event-loop thread instead of handing every request
  to the thread pool (the profile shows the hand-off, ``run_in_executor`` + ``ThreadPoolExecutor.submit``,
  costing more than the core's own work for a warm Get), and read frames without a ``wait_for`` task per
  read. Only safe where the core does not block: it still touches DynamoDB on a cache miss, the epoch
  poll and Create/Locate, which is why the real change is "inline when warm, pool otherwise".
- ``reuse_port``: several server processes share the port (SO_REUSEPORT); the kernel spreads connections.
"""

from __future__ import annotations

import asyncio
import types
from typing import Any

from kmip_fargate.server import KmipServer, tls_context
from openkcm.protocol.ttlv import message_length


def adapt(server: KmipServer, *, inline: bool, reuse_port: bool) -> KmipServer:
    if reuse_port:
        async def start(self: KmipServer) -> None:
            self._loop = asyncio.get_running_loop()
            self._server = await asyncio.start_server(
                self._client, self.config.host, self.config.port, ssl=tls_context(self.config),
                ssl_handshake_timeout=self.config.read_timeout, limit=64 * 1024, backlog=512, reuse_port=True,
            )
            self.port = self._server.sockets[0].getsockname()[1]

        server.start = types.MethodType(start, server)  # type: ignore[method-assign]
    if inline:
        async def _serve(self: KmipServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                         identity: Any, address: str) -> None:
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
