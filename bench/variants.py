"""Bench-only experiments on our listener, to put numbers on a proposed change BEFORE anyone makes it in
kmip_fargate (whose owner decides). Figures from these variants are printed with their label and never
count as the server's figures.

- ``inline``: run the bytes-in/bytes-out core on the event-loop thread for EVERY request instead of
  handing the ones that miss the warm path (and the fsync'd audit sync) to the thread pool: it measures
  what the pool hand-off still costs. Only safe where the core does not block: it touches DynamoDB on a
  cache miss, the epoch poll and Create/Locate, which is why the server does "inline when warm, pool
  otherwise".
- ``reuse_port``: several server processes share the port (SO_REUSEPORT); the kernel spreads connections.
  The server has this as ``ServerConfig.reuse_port`` now; the adapter only sets it.

(The former ``protocol`` experiment, an ``asyncio.Protocol`` listener, is now the server itself.)
"""

from __future__ import annotations

import dataclasses
from typing import Any

from kmip_fargate.server import KmipConnection, KmipServer


class _InlineConnection(KmipConnection):
    """Every request answered on the loop, audit synced there too (no pool hand-off at all)."""

    __slots__ = ()

    def _dispatch(self, core: Any, request: bytes, identity: Any, address: str) -> None:
        self._answer(core.handle(request, identity, address))


def adapt(server: KmipServer, *, inline: bool, reuse_port: bool) -> KmipServer:
    if reuse_port and not server.config.reuse_port:
        server.config = dataclasses.replace(server.config, reuse_port=True)
    if inline:
        server.connection_class = _InlineConnection
    return server
