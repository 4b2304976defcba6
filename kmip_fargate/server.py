"""The KMIP listener: asyncio, mutual TLS (1.2 and 1.3) on port 5696, one bytes-in/bytes-out core.

Per connection: the client certificate is required and verified against the deployment CA; the identity
(tenant, service) comes from it (``identity_from_certificate``: SPIFFE URI first, subject O/OU fallback).
A certificate naming no tenant is audited and the connection closed; tenant state and revoked serials are
checked by the core on every request (cached, refreshed with the tenant epoch).

Limits (all configurable): message size (an oversized or malformed frame closes the connection and is
audited, at most once a minute per certificate with a count), per
client connections (by tenant and certificate serial), total connections, TLS handshakes in progress (a
TCP connection is counted from its accept, and dropped at once over the limit, so silent peers cannot hold
sockets without bound; the handshake has its own, shorter timeout), an idle timeout between
requests, a read timeout once a message has started (slow clients), a write timeout (clients that never
read), and a bounded worker pool running the core (no global lock). Requests of one connection are
answered in order, one at a time; a client that half-closes (TCP FIN after its last request) still gets
the answers it is owed before the connection closes.

Why an ``asyncio.Protocol`` and not streams: under load, ``StreamReader.readexactly``, a timeout context
per read and ``drain`` were ~20-24 % of a worker's CPU (bench/README.md, "Performance"; the bench's
Protocol experiment measured 163 -> 109 µs per request against the older ``wait_for`` streams). Against
the streams with ``asyncio.timeout`` it replaced (bench/kmip_load.py, 2 processes, 16 connections,
before/after runs interleaved on the shared box, 11:41-11:55 UTC, medians of 6 / 5 runs): null audit
sink, server CPU per Get 114 -> 99 µs and per Encrypt 140 -> 127 µs; the "streams, timeouts, event
loop" share of a loaded worker's profile 20 % -> 5 %. With the fsync'd audit sink the per-request sync
hand-off dominated and the figures moved within noise (Get 325 vs 339 µs). So a connection is a small
state machine:

- frames are cut from a ``bytearray`` in ``data_received``; a small, warm read-only request of an
  accepted certificate is answered on the loop (``KmipCore.try_inline_or_decoded``; anything larger than
  ``KmipConfig.inline_max_size``, or from a certificate not known to be accepted, is not even decoded
  there: one client's hostile messages must not stall the loop every connection shares) and its answer
  held until one audit sync covers every answer computed in that loop pass (``KmipServer._commit``: a
  write to the OS on the loop, or one fsync in the pool); anything else runs in the worker pool
  (``KmipCore.handle``, or ``handle_decoded`` with what the loop already decoded) while the connection's
  reading is paused, and buffered (pipelined) frames are processed once that answer is written;
- when the transport's write buffer passes its high-water mark (``pause_writing``) the connection stops
  processing and reading until it drains, so a client that never reads holds at most one read chunk plus
  the transport's buffer;
- timeouts use no timer or task per request: each connection keeps ``time.monotonic`` stamps and one
  sweeper per server (every ``min(timeouts) / 4``, at most 1 s) aborts the expired ones.

Health: ``GET /healthz`` (or a bare TCP connect) on the health port. Metrics: EMF lines on stdout.
"""

from __future__ import annotations

import asyncio
import asyncio.sslproto
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

from openkcm.domain.audit import AuditEvent, RefusalThrottle
from openkcm.domain.pki import ClientIdentity, identity_from_certificate
from openkcm.domain.tenants import PLATFORM_TENANT
from openkcm.errors import OpenKCMError
from openkcm.kmip.core import KmipCore, Metrics
from openkcm.protocol.ttlv import TTLVError, message_length

log = logging.getLogger("openkcm.kmip.server")


def _connect_refused(
    tenant_id: str, address: str, reason: str, subject: str = "", serial: str = ""
) -> AuditEvent:
    """The security event of a connection refused before any request was read."""
    return AuditEvent(
        tenant_id=tenant_id,
        source="kmip",
        operation="Connect",
        result="denied",
        kind="security",
        actor=subject[:256],
        reason=reason,
        client_address=address,
        details={"serial": serial[:64]} if serial else {},
    )


LIMIT_AUDIT_SECONDS = 60.0  # connection-limit refusals: at most one audit record a minute per certificate

_monotonic = time.monotonic


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
    # TLS handshakes in progress, counted from the TCP accept (and never more than max_connections): a
    # peer that connects and says nothing holds a socket until handshake_timeout, whoever it is
    max_handshakes: int = 256
    handshake_timeout: float = 5.0
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


class _Accepted(asyncio.Protocol):
    """A TCP connection before TLS: :meth:`KmipServer._accept` counts it against the handshake limit
    (or drops it) and hands it to ``loop.start_tls``; it never reads (reading is paused until then)."""

    __slots__ = ("server",)

    def __init__(self, server: KmipServer) -> None:
        self.server = server

    def connection_made(self, transport: Any) -> None:  # type: ignore[override]
        self.server._accept(transport)


class _HalfClose(asyncio.BufferedProtocol):
    """Between the TCP transport and asyncio's TLS protocol. A TCP EOF from the peer (``shutdown(SHUT_WR)``
    after its last request) reaches TLS only once the connection has written the answers it owes: TLS
    would start closing at once and drop them. Everything else is passed through."""

    # The calls of every read and write go straight to TLS's own methods, bound per instance (these slots
    # shadow BufferedProtocol's methods): no extra Python frame per read on the hot path.
    __slots__ = (
        "buffer_updated",
        "connection",
        "connection_made",
        "deferred",
        "get_buffer",
        "pause_writing",
        "raw",
        "resume_writing",
        "tls",
    )

    def __init__(self, tls: Any, raw: Any, connection: KmipConnection) -> None:
        self.tls, self.raw, self.connection = tls, raw, connection
        self.deferred = False
        self.get_buffer = tls.get_buffer
        self.buffer_updated = tls.buffer_updated
        self.pause_writing = tls.pause_writing
        self.resume_writing = tls.resume_writing
        self.connection_made = tls.connection_made

    def connection_lost(self, exc: Exception | None) -> None:
        self.deferred = False
        self.tls.connection_lost(exc)

    def eof_received(self) -> bool | None:
        if self.deferred:
            return True
        if self.connection.owes_answers():
            self.deferred = True  # the socket stays open (reading stops) until release()
            self.connection.half_closed = self
            return True
        return self.tls.eof_received()

    def release(self) -> None:
        """The connection has written what it owed: let TLS see the EOF now (it then closes)."""
        connection = self.connection
        if not self.deferred or (not connection.closed and connection.owes_answers()):
            return  # nothing held, or a request came in meanwhile: called again once it is answered
        self.deferred = False
        connection.half_closed = None
        try:
            keep_open = self.tls.eof_received()
        except Exception:
            log.exception("kmip half-close failed")
            self.raw.abort()
            return
        if not keep_open:
            self.raw.close()


class KmipConnection(asyncio.Protocol):
    """One mTLS client connection: framing, in-order dispatch, flow control and deadline stamps.

    States: *waiting* (nothing or part of a message buffered: idle or read deadline from ``stamp``),
    *busy* (a request or an audit sync in the pool; reading paused, no client deadline), *write-paused*
    (the transport is over its high-water mark; reading paused, write deadline from ``write_stamp``).
    """

    __slots__ = (
        "address",
        "buf",
        "busy",
        "closed",
        "half_closed",
        "held_paused",
        "identity",
        "key",
        "loop",
        "need",
        "server",
        "stamp",
        "transport",
        "write_paused",
        "write_stamp",
    )

    def __init__(self, server: KmipServer) -> None:
        self.server = server
        self.loop = server._loop
        self.transport: Any = None
        self.buf = bytearray()
        self.need = 0  # length of the message being read, once its header is in
        self.identity: ClientIdentity | None = None  # set once accepted
        self.address = ""
        self.key = ""  # tenant/serial while it holds a per-client slot
        self.busy = False
        self.held_paused = False  # reading paused because data came while an answer was held
        self.closed = False
        self.half_closed: _HalfClose | None = None  # the peer's EOF, held until its answers are written
        self.write_paused = False
        self.stamp = _monotonic()
        self.write_stamp = 0.0

    # ---- accept ------------------------------------------------------------------------------------
    def _guard(self, raw: Any) -> None:
        """Put a :class:`_HalfClose` between the TCP transport and the TLS protocol ``start_tls`` just
        gave it (scheduled before that protocol's ``connection_made``, so before any byte is read)."""
        tls = raw.get_protocol()
        if isinstance(tls, asyncio.sslproto.SSLProtocol) and not raw.is_closing():
            raw.set_protocol(_HalfClose(tls, raw, self))

    def connection_made(self, transport: Any) -> None:  # type: ignore[override]
        """Called by :meth:`KmipServer._handshake` once the TLS handshake is done (``start_tls`` does not
        call it); bytes that came before were kept in ``buf``."""
        self.transport = transport
        server = self.server
        server._live.add(self)
        try:
            peer = transport.get_extra_info("peername") or ("?", 0)
            self.address = f"{peer[0]}:{peer[1]}"
            config = server.config
            if server._connections >= config.max_connections:
                log.warning(
                    json.dumps({"event": "kmip_connection_limit", "connections": server._connections})
                )
                server._limit_refused(PLATFORM_TENANT, "", self.address, "the server's connection limit")
                self.abort()
                return
            raw = transport.get_extra_info("socket")
            if raw is not None:  # half-open peers (a vanished NLB target, a dead client) get detected
                with contextlib.suppress(OSError):
                    raw.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            ssl_object = transport.get_extra_info("ssl_object")
            der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
            if not der:
                self.abort()
                return
            cert = x509.load_der_x509_certificate(der)
            try:
                identity = identity_from_certificate(cert, config.trust_domain)
            except OpenKCMError as exc:
                self._refuse(exc.message, cert.subject.rfc4514_string())
                return
            key = f"{identity.tenant_id}/{identity.serial_hex}"
            if server._per_client[key] >= config.max_connections_per_client:
                log.warning(json.dumps({"event": "kmip_client_limit", "tenant": identity.tenant_id}))
                server._limit_refused(
                    identity.tenant_id,
                    identity.serial_hex,
                    self.address,
                    "the per-certificate connection limit",
                    subject=identity.subject,
                )
                self.abort()
                return
            server._per_client[key] += 1
            server._connections += 1
            self.key = key
            self.identity = identity
            self.stamp = _monotonic()
            if self.buf:  # the first request came with the end of the handshake
                self._process()
                if self.half_closed is not None:
                    self._settled()
        except Exception:
            log.exception("kmip connection failed")
            self.abort()

    def _refuse(self, reason: str, subject: str) -> None:
        """Audit a certificate that names no tenant (in the pool: the sink may block), then close."""
        self.busy = True  # no deadline while the record is written; nothing the client sends is read
        self.transport.pause_reading()
        try:
            future = self.loop.run_in_executor(
                self.server._pool, self.server._refuse_identity, reason, self.address, subject
            )
        except RuntimeError:  # the pool is shut down: the server is stopping
            self.abort()
            return
        future.add_done_callback(self._refused)

    def _refused(self, future: asyncio.Future[Any]) -> None:
        if not future.cancelled() and future.exception() is not None:
            log.error("kmip refusal audit failed: %r", future.exception())
        self.close()

    # ---- requests ----------------------------------------------------------------------------------
    def data_received(self, data: bytes) -> None:
        if self.closed or self.identity is None:
            if self.transport is None and not self.closed:
                self.buf += data  # after the handshake, before connection_made: kept for it
            return  # refused or closing: nothing is read
        buf = self.buf
        if not buf and not self.busy:
            self.stamp = _monotonic()  # a new message starts: the read deadline runs from here
        buf += data
        if not self.busy and not self.write_paused:
            self._process()
        elif self.busy and not self.held_paused:
            self.held_paused = True  # pipelining while an answer is held: read on once it is answered
            self.transport.pause_reading()

    def _process(self) -> None:
        """Answer the complete frames in the buffer, in order, until one needs the pool, the transport
        pushes back, or only part of a message is left."""
        server = self.server
        core = server.core
        identity = self.identity
        address = self.address
        buf = self.buf
        max_size = server.config.max_message_size
        try:
            while not self.busy and not self.write_paused and not self.closed:
                need = self.need
                if not need:
                    if len(buf) < 8:
                        return
                    need = message_length(buf)  # broken framing: TTLVError closes
                    if need > max_size:
                        log.info(json.dumps({"event": "kmip_oversized", "length": need, "client": address}))
                        server._framing_refused(
                            identity, address, f"a message of {need} bytes (the limit is {max_size})"
                        )
                        self.close()
                        return
                    self.need = need
                if len(buf) < need:
                    return
                if len(buf) == need:
                    request = bytes(buf)
                    buf.clear()
                else:
                    request = bytes(buf[:need])
                    del buf[:need]
                self.need = 0
                self._dispatch(core, request, identity, address)  # type: ignore[arg-type]
        except TTLVError:
            server._framing_refused(identity, address, "a message that is not a KMIP TTLV structure")
            self.close()
        except Exception:
            log.exception("kmip connection failed")
            self.abort()

    def _dispatch(self, core: KmipCore, request: bytes, identity: ClientIdentity, address: str) -> None:
        # Small warm read-only requests of accepted certificates are answered on the loop (no worker
        # hand-off); anything else goes to the bounded worker pool, with what the loop decoded, if
        # anything. Audit is synced before either answer.
        answer = core.try_inline_or_decoded(request, identity, address, defer_sync=True)
        if answer.__class__ is bytes:
            self.busy = True  # the answer waits for its audit record (KmipServer._commit)
            self.server._hold(self, answer)  # type: ignore[arg-type]
        elif answer is None:
            self._offload(core.handle, request, identity, address)
        else:
            self._offload(core.handle_decoded, answer, identity, address)

    def _release(self, response: bytes) -> None:
        """A held answer whose audit record the server has made durable: send it, go on reading."""
        if self.closed or self.transport.is_closing():
            self.closed = True
            return
        self.busy = False
        self._answer(response)
        if self.closed or self.write_paused:
            return
        self._process()  # frames that arrived meanwhile, first
        if self.held_paused and not (self.busy or self.write_paused or self.closed):
            self.held_paused = False
            self.transport.resume_reading()
        if self.half_closed is not None:
            self._settled()

    def _offload(self, function: Any, *args: Any) -> None:
        """Run ``function(*args)`` -> response bytes in the pool; reading pauses until it is written."""
        self.busy = True
        self.transport.pause_reading()
        try:
            future = self.loop.run_in_executor(self.server._pool, function, *args)
        except RuntimeError:  # the pool is shut down: the server is stopping
            self.abort()
            return
        future.add_done_callback(self._pooled)

    def _pooled(self, future: asyncio.Future[bytes]) -> None:
        if self.closed or self.transport.is_closing():
            self.closed = True
            return  # the client went away (or the server stopped) while the pool worked: nothing to write
        if future.cancelled():
            self.abort()
            return
        exc = future.exception()
        if exc is not None:
            log.error("kmip request failed in the pool", exc_info=exc)
            self.abort()
            return
        self.busy = False
        self._answer(future.result())
        if self.closed:
            return
        if not self.write_paused:
            self.held_paused = False
            self.transport.resume_reading()
            self._process()  # frames that arrived (pipelined) while the pool worked
        if self.half_closed is not None:
            self._settled()

    def _answer(self, response: bytes) -> None:
        self.transport.write(response)  # may call pause_writing synchronously
        self.stamp = _monotonic()

    # ---- flow control ------------------------------------------------------------------------------
    def pause_writing(self) -> None:
        self.write_paused = True
        self.write_stamp = _monotonic()
        if not self.closed:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        self.stamp = _monotonic()
        if self.closed or self.busy:
            return
        self.held_paused = False
        self.transport.resume_reading()
        self._process()
        if self.half_closed is not None:
            self._settled()

    # ---- half-close ----------------------------------------------------------------------------------
    def owes_answers(self) -> bool:
        """A request was received and its answer is not written yet (or bytes came before
        ``connection_made``, which may hold one)."""
        if self.closed:
            return False
        if self.transport is None:
            return bool(self.buf)
        return self.identity is not None and (self.busy or self.write_paused)

    def _settled(self) -> None:
        """The peer half-closed and this connection may owe nothing more: let the EOF through, after the
        bytes TLS still holds for us were read (resume_reading's delivery is scheduled before this)."""
        guard = self.half_closed
        if guard is not None and not (self.busy or self.write_paused or self.closed):
            self.loop.call_soon(guard.release)

    # ---- deadlines and closing -----------------------------------------------------------------------
    def expired(self, now: float, idle: float, read: float, write: float) -> bool:
        if self.write_paused:
            return now - self.write_stamp > write
        if self.busy:
            return False  # the server's own work (pool, audit sync): not the client's deadline
        if self.need or self.buf:
            return now - self.stamp > read
        return now - self.stamp > idle

    def close(self) -> None:
        """Graceful close (TLS close_notify, pending answers flushed); the handshake-shutdown timeout of the
        server bounds it when the peer does not answer."""
        if not self.closed:
            self.closed = True
            self.transport.close()
            if self.half_closed is not None:  # the peer's FIN was held: TLS must see it to finish closing
                self.loop.call_soon(self.half_closed.release)

    def abort(self) -> None:
        """Drop at once: for stale peers, where a graceful close would wait on them."""
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    def eof_received(self) -> bool | None:
        return None  # the peer's TLS close_notify: close our side too (a TCP FIN: see _HalfClose)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        server = self.server
        server._live.discard(self)
        key = self.key
        if key:  # released exactly once
            self.key = ""
            server._connections -= 1
            server._per_client[key] -= 1
            if server._per_client[key] <= 0:
                server._per_client.pop(key, None)
        self.buf = bytearray()


class KmipServer:
    connection_class: type[KmipConnection] = KmipConnection

    def __init__(self, core: KmipCore, config: ServerConfig) -> None:
        self.core = core
        self.config = config
        self._pool = ThreadPoolExecutor(max_workers=config.workers, thread_name_prefix="kmip")
        self._per_client: dict[str, int] = defaultdict(int)
        self._limit_refusals = RefusalThrottle(LIMIT_AUDIT_SECONDS)  # per certificate (or the server)
        self._framing_refusals = RefusalThrottle(LIMIT_AUDIT_SECONDS)  # per certificate
        self._connections = 0
        self._live: set[KmipConnection] = set()
        # TCP connections whose TLS handshake is in progress -> the task running it
        self._handshaking: dict[Any, asyncio.Task[None]] = {}
        self._tls: ssl.SSLContext | None = None
        self._server: asyncio.AbstractServer | None = None
        self._health: asyncio.AbstractServer | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._metrics_task: asyncio.Task[None] | None = None
        self._sweeper: asyncio.TimerHandle | None = None
        self._held: list[tuple[KmipConnection, bytes]] = []  # inline answers waiting for one audit sync
        self.port = config.port
        self.health_port = config.health_port

    # ---- lifecycle -----------------------------------------------------------------------------
    async def start(self) -> None:
        loop = self._loop = asyncio.get_running_loop()
        self._tls = tls_context(self.config)
        # Plain TCP first, TLS by start_tls (_handshake): asyncio's ssl= server calls the protocol only
        # after the handshake, so connections that never finish it could be neither counted nor closed.
        self._server = await loop.create_server(
            lambda: _Accepted(self),
            self.config.host,
            self.config.port,
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
        self._sweeper = loop.call_later(self._sweep_interval(), self._sweep)
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
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for server in (self._server, self._health):
            if server is not None:
                server.close()
        for connection in list(self._live):
            connection.abort()
        handshakes = list(self._handshaking.values())
        for raw in list(self._handshaking):
            raw.abort()
        if handshakes:
            await asyncio.wait(handshakes, timeout=2)
        for server in (self._server, self._health):
            if server is not None:
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
    def _accept(self, raw: Any) -> None:
        """A TCP connection was accepted: start its TLS handshake, or drop it at once when the handshakes
        in progress are at their limit (they are counted until they finish, fail or time out)."""
        config = self.config
        if len(self._handshaking) >= min(config.max_handshakes, config.max_connections):
            raw.abort()
            self._handshake_refused(raw)
            return
        raw.pause_reading()  # not a byte before TLS owns the transport
        self._handshaking[raw] = self._loop.create_task(self._handshake(raw))  # type: ignore[union-attr]

    async def _handshake(self, raw: Any) -> None:
        loop = self._loop
        assert loop is not None
        connection = self.connection_class(self)
        loop.call_soon(connection._guard, raw)  # runs once start_tls has put its protocol on raw
        try:
            transport = await loop.start_tls(
                raw,
                connection,
                self._tls,  # type: ignore[arg-type]
                server_side=True,
                ssl_handshake_timeout=self.config.handshake_timeout,
                # a graceful close waits for the peer's close_notify at most this long, then aborts
                ssl_shutdown_timeout=self.config.write_timeout,
            )
        except OSError:  # failed, reset or timed out (SSLError, ConnectionError, TimeoutError)
            return  # start_tls closed the socket
        except Exception:
            log.exception("kmip handshake failed")
            raw.abort()
            return
        finally:
            self._handshaking.pop(raw, None)
        if transport is None or connection.closed:
            return  # lost at the end of the handshake
        connection.connection_made(transport)

    def _handshake_refused(self, raw: Any) -> None:
        """A connection dropped at the handshake limit: logged and audited at most once a minute, with
        the count of those dropped in between (no identity is known yet)."""
        count = self._limit_refusals.admit("handshakes")
        if count is None:
            return
        peer = raw.get_extra_info("peername") or ("?", 0)
        log.warning(
            json.dumps({"event": "kmip_handshake_limit", "handshakes": len(self._handshaking), "more": count})
        )
        event = _connect_refused(
            PLATFORM_TENANT,
            f"{peer[0]}:{peer[1]}",
            f"the server's limit of TLS handshakes in progress was reached; {count} more refused since "
            "the last record",
        )
        with contextlib.suppress(RuntimeError):  # the pool is shut down: the server is stopping
            self._pool.submit(self._record_quietly, event)

    def _limit_refused(
        self, tenant_id: str, serial: str, address: str, limit: str, *, subject: str = ""
    ) -> None:
        """Audit connections refused at a limit: the first at once, then at most one record a minute per
        certificate (or for the server), counting the refusals in between; a flood of connections must not
        become a flood of audit writes."""
        count = self._limit_refusals.admit(f"{tenant_id}/{serial}")
        if count is None:
            return
        event = _connect_refused(
            tenant_id,
            address,
            f"{limit} was reached; {count} more refused since the last record",
            subject,
            serial,
        )
        with contextlib.suppress(RuntimeError):  # the pool is shut down: the server is stopping
            self._pool.submit(self._record_quietly, event)

    def _framing_refused(self, identity: ClientIdentity | None, address: str, message: str) -> None:
        """Audit a connection closed for a message that cannot be framed (no KMIP answer can name it): the
        first at once, then at most one record a minute per certificate, like the connection limits."""
        if identity is None:
            return
        count = self._framing_refusals.admit(f"{identity.tenant_id}/{identity.serial_hex}")
        if count is None:
            return
        try:
            event = self._framing_event(identity, address, message, count)
        except OpenKCMError:  # a subject the event rules refuse: such a certificate fails every request too
            log.warning(json.dumps({"event": "kmip_framing_not_audited", "tenant": identity.tenant_id}))
            return
        with contextlib.suppress(RuntimeError):  # the pool is shut down: the server is stopping
            self._pool.submit(self._record_quietly, event)

    @staticmethod
    def _framing_event(identity: ClientIdentity, address: str, message: str, count: int) -> AuditEvent:
        return AuditEvent(
            tenant_id=identity.tenant_id,
            source="kmip",
            operation="Message",
            result="denied",
            kind="security",
            actor=identity.subject[:256],
            actor_role=identity.service_id,
            reason=f"{message} closed the connection; {count} more since the last record",
            client_address=address,
            details={"serial": identity.serial_hex[:64]},
        )

    def _record_quietly(self, event: AuditEvent) -> None:
        try:
            self.core.services.audit.record(event)
        except OpenKCMError as exc:
            log.warning("kmip connection refusal not audited: %s", exc.code)

    def _refuse_identity(self, reason: str, address: str, subject: str = "") -> None:
        with contextlib.suppress(OpenKCMError):
            self.core.services.audit.record(_connect_refused(PLATFORM_TENANT, address, reason, subject))

    # ---- audit group commit ------------------------------------------------------------------------
    def _hold(self, connection: KmipConnection, response: bytes) -> None:
        """Answers computed in one pass of the event loop share one audit sync: one WAL write to the OS
        (or one fsync in the pool, with ``audit_wal_fsync``) instead of one per request. That write
        was ~8 us of every Get on the benchmark box; held answers wait one loop pass, never longer."""
        self._held.append((connection, response))
        if len(self._held) == 1:
            self._loop.call_soon(self._commit)  # type: ignore[union-attr]

    def _commit(self) -> None:
        held, self._held = self._held, []
        if not self.core.inline_needs_sync:
            try:
                self.core.sync_audit()
            except Exception:  # the records are not in the WAL: no answer leaves (fail closed)
                log.exception("kmip audit sync failed; held answers dropped")
                self._release(held, None, failed=True)
                return
            self._release(held, None)
            return
        try:
            future = self._loop.run_in_executor(self._pool, self.core.sync_audit)  # type: ignore[union-attr]
        except RuntimeError:  # the pool is shut down: the server is stopping
            for connection, _ in held:
                connection.abort()
            return
        future.add_done_callback(lambda done: self._release(held, done))

    @staticmethod
    def _release(
        held: list[tuple[KmipConnection, bytes]], done: asyncio.Future[Any] | None, *, failed: bool = False
    ) -> None:
        failed = failed or (done is not None and (done.cancelled() or done.exception() is not None))
        for connection, response in held:
            try:
                if failed:
                    connection.abort()
                else:
                    connection._release(response)
            except Exception:  # one broken transport must not strand the others of the batch
                log.exception("kmip answer release failed")
                with contextlib.suppress(Exception):
                    connection.abort()

    def _sweep_interval(self) -> float:
        cfg = self.config
        return max(0.05, min(1.0, min(cfg.idle_timeout, cfg.read_timeout, cfg.write_timeout) / 4))

    def _sweep(self) -> None:
        """Abort the connections whose idle, read or write deadline has passed (one timer per server)."""
        cfg = self.config
        now = _monotonic()
        try:
            for connection in list(self._live):
                if not connection.closed and connection.expired(
                    now, cfg.idle_timeout, cfg.read_timeout, cfg.write_timeout
                ):
                    connection.abort()
        except Exception:
            log.exception("kmip sweeper failed")
        finally:
            if self._loop is not None and self._sweeper is not None:
                self._sweeper = self._loop.call_later(self._sweep_interval(), self._sweep)

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
