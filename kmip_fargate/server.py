"""The KMIP listener: asyncio, mutual TLS (1.2 and 1.3) on port 5696, one bytes-in/bytes-out core.

Per connection: the client certificate is required and verified against the deployment CA; the identity
(tenant, service) comes from it (``identity_from_certificate``: SPIFFE URI first, subject O/OU fallback).
A certificate naming no tenant is audited and the connection closed; tenant state and revoked serials are
checked by the core on every request (cached, refreshed with the tenant epoch).

Limits (all configurable): message size (an oversized or malformed frame closes the connection), per
client connections (by certificate serial), total connections, an idle timeout between requests, a read
timeout once a message has started (slow clients), a write timeout (clients that never read), and a
bounded worker pool running the core (no global lock). Requests of one connection are answered in order,
one at a time.

Health: ``GET /healthz`` (or a bare TCP connect) on the health port. Metrics: EMF lines on stdout.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import ssl
import threading
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509

from openkcm.domain.audit import AuditEvent
from openkcm.domain.pki import ClientIdentity, identity_from_certificate
from openkcm.domain.tenants import PLATFORM_TENANT
from openkcm.errors import OpenKCMError
from openkcm.kmip.core import KmipCore, Metrics
from openkcm.protocol.ttlv import TTLVError, message_length

log = logging.getLogger("openkcm.kmip.server")


@dataclass(frozen=True)
class ServerConfig:
    host: str = "0.0.0.0"
    port: int = 5696
    cert_file: Path = Path("server.pem")
    key_file: Path = Path("server.key")
    ca_file: Path = Path("ca.pem")
    trust_domain: str = "openkcm.local"
    health_port: int | None = None
    max_message_size: int = 1 << 20
    max_connections: int = 2048
    max_connections_per_client: int = 64
    idle_timeout: float = 300.0
    read_timeout: float = 15.0
    write_timeout: float = 15.0
    workers: int = 8
    metrics_interval: float = 60.0
    # Several server processes on one port (SO_REUSEPORT): the kernel spreads connections, so a task
    # uses every core instead of one GIL (OPENKCM_KMIP_PROCESSES in kmip_fargate.main).
    reuse_port: bool = False


def tls_context(config: ServerConfig) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.maximum_version = ssl.TLSVersion.TLSv1_3
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_cert_chain(str(config.cert_file), str(config.key_file))
    context.load_verify_locations(cafile=str(config.ca_file))
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE
    context.set_ciphers("ECDHE+AESGCM:ECDHE+CHACHA20")
    return context


class KmipServer:
    def __init__(self, core: KmipCore, config: ServerConfig) -> None:
        self.core = core
        self.config = config
        self._pool = ThreadPoolExecutor(max_workers=config.workers, thread_name_prefix="kmip")
        self._per_client: dict[str, int] = defaultdict(int)
        self._connections = 0
        self._server: asyncio.AbstractServer | None = None
        self._health: asyncio.AbstractServer | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._metrics_task: asyncio.Task[None] | None = None
        self.port = config.port
        self.health_port = config.health_port

    # ---- lifecycle -----------------------------------------------------------------------------
    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._server = await asyncio.start_server(
            self._client,
            self.config.host,
            self.config.port,
            ssl=tls_context(self.config),
            ssl_handshake_timeout=self.config.read_timeout,
            limit=64 * 1024,
            backlog=512,
            reuse_port=self.config.reuse_port or None,
        )
        self.port = self._server.sockets[0].getsockname()[1]
        if self.config.health_port is not None:
            self._health = await asyncio.start_server(
                self._health_client,
                self.config.host,
                self.config.health_port,
                reuse_port=self.config.reuse_port or None,
            )
            self.health_port = self._health.sockets[0].getsockname()[1]
        self._metrics_task = asyncio.create_task(self._emit_metrics())
        log.info(json.dumps({"event": "kmip_listening", "port": self.port, "health_port": self.health_port}))

    async def serve_forever(self) -> None:
        await self.start()
        assert self._server is not None
        async with self._server:
            await self._server.serve_forever()

    def start_in_thread(self) -> KmipServer:
        """Run the server on its own event loop thread (local stack, tests). Returns once listening."""
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self.start())
            except BaseException as exc:  # noqa: BLE001 - reported to the starter
                failure.append(exc)
                ready.set()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self._close_async())
            loop.close()

        self._thread = threading.Thread(target=run, name="kmip-server", daemon=True)
        self._thread.start()
        ready.wait(30)
        if failure:
            raise failure[0]
        return self

    async def _close_async(self) -> None:
        if self._metrics_task is not None:
            self._metrics_task.cancel()
        for server in (self._server, self._health):
            if server is not None:
                server.close()
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(server.wait_closed(), 2)

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
        self._pool.shutdown(wait=False, cancel_futures=True)

    def healthy(self) -> bool:
        return self._server is not None and self._server.is_serving()

    # ---- connections ---------------------------------------------------------------------------
    def _refuse_identity(self, reason: str, address: str, subject: str = "") -> None:
        with contextlib.suppress(OpenKCMError):
            self.core.services.audit.record(
                AuditEvent(
                    tenant_id=PLATFORM_TENANT,
                    source="kmip",
                    operation="Connect",
                    result="denied",
                    kind="security",
                    actor=subject[:256],
                    reason=reason,
                    client_address=address,
                )
            )

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername") or ("?", 0)
        address = f"{peer[0]}:{peer[1]}"
        identity: ClientIdentity | None = None
        key = ""
        try:
            if self._connections >= self.config.max_connections:
                return
            raw = writer.get_extra_info("socket")
            if raw is not None:  # half-open peers (a vanished NLB target, a dead client) get detected
                with contextlib.suppress(OSError):
                    raw.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            ssl_object = writer.get_extra_info("ssl_object")
            der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
            if not der:
                return
            cert = x509.load_der_x509_certificate(der)
            try:
                identity = identity_from_certificate(cert, self.config.trust_domain)
            except OpenKCMError as exc:
                await asyncio.get_running_loop().run_in_executor(
                    self._pool, self._refuse_identity, exc.message, address, cert.subject.rfc4514_string()
                )
                return
            key = f"{identity.tenant_id}/{identity.serial_hex}"
            if self._per_client[key] >= self.config.max_connections_per_client:
                log.warning(json.dumps({"event": "kmip_client_limit", "tenant": identity.tenant_id}))
                key = ""
                return
            self._per_client[key] += 1
            self._connections += 1
            await self._serve(reader, writer, identity, address)
        except (ConnectionError, asyncio.IncompleteReadError, TimeoutError, ssl.SSLError, TTLVError):
            pass
        except Exception:
            log.exception("kmip connection failed")
        finally:
            if key:
                self._connections -= 1
                self._per_client[key] -= 1
                if self._per_client[key] <= 0:
                    self._per_client.pop(key, None)
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 1)

    async def _serve(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        identity: ClientIdentity,
        address: str,
    ) -> None:
        loop = asyncio.get_running_loop()
        cfg = self.config
        core = self.core
        # asyncio.timeout, not wait_for: wait_for wraps every read in a new Task (~9 us vs ~4 us per call,
        # three calls per request; the listener's streams and timeouts were a quarter of a loaded worker's
        # CPU in bench/kmip_load.py --profile). Same TimeoutError, same limits.
        while True:
            async with asyncio.timeout(cfg.idle_timeout):
                header = await reader.readexactly(8)
            length = message_length(header)  # broken framing: TTLVError closes the connection
            if length > cfg.max_message_size:
                return
            async with asyncio.timeout(cfg.read_timeout):
                body = await reader.readexactly(length - 8)
            request = header + body
            # Warm read-only requests are answered on the loop (no worker hand-off); anything that may
            # touch the store goes to the bounded worker pool. Audit is synced before either answer.
            response = core.try_inline(request, identity, address)
            if response is None:
                response = await loop.run_in_executor(self._pool, core.handle, request, identity, address)
            elif core.inline_needs_sync:
                await loop.run_in_executor(self._pool, core.sync_audit)
            writer.write(response)
            async with asyncio.timeout(cfg.write_timeout):
                await writer.drain()

    # ---- health and metrics --------------------------------------------------------------------
    async def _health_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await asyncio.wait_for(reader.readline(), 2)
            ok = self.healthy()
            if line.startswith(b"GET"):
                body = json.dumps({"healthy": ok, "connections": self._connections}).encode()
                status = b"200 OK" if ok else b"503 Service Unavailable"
                writer.write(
                    b"HTTP/1.1 "
                    + status
                    + b"\r\nContent-Type: application/json\r\nContent-Length: "
                    + str(len(body)).encode()
                    + b"\r\nConnection: close\r\n\r\n"
                    + body
                )
                await writer.drain()
        except (TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()

    async def _emit_metrics(self) -> None:
        while True:
            await asyncio.sleep(self.config.metrics_interval)
            print(json.dumps(emf(self.core.metrics.drain(), self._connections)), flush=True)


def emf(snapshot: dict[str, Any], connections: int) -> dict[str, Any]:
    """CloudWatch Embedded Metric Format: counts per operation/result and the latency histogram."""
    metrics: dict[str, Any] = {"Messages": snapshot["messages"], "Connections": connections}
    for (operation, result), count in snapshot["ops"].items():
        metrics[f"{operation}.{result}"] = count
    names = [{"Name": name, "Unit": "Count"} for name in metrics]
    return {
        "_aws": {
            "Timestamp": int(time.time() * 1000),
            "CloudWatchMetrics": [{"Namespace": "OpenKCM/KMIP", "Dimensions": [[]], "Metrics": names}],
        },
        **metrics,
        "LatencyBucketsMs": list(Metrics.BUCKETS),
        "LatencyHistogram": snapshot["latency"],
    }
