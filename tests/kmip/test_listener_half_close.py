"""The listener after the start_tls rewrite (found by a review): session resumption keeps the identity, a request
sent with the end of the handshake (and a FIN) is answered, a close during the handshake frees its slot, and a
server-side close after a held FIN is immediate (it waited for the TLS shutdown timeout before)."""

from __future__ import annotations

import socket
import ssl
import time

from openkcm.protocol.tags import Op, Status
from tests.kmip.conftest import KmipConnection, client_context, read_message
from tests.kmip.test_listener_protocol import QUERY, _closed, _until, _warm_key, listener  # noqa: F401
from tests.kmip.test_protocol import create_payload
from tests.kmip.wire import request, response, uid


def _resume(port, paths, tls13):
    ctx = client_context(paths, tls13=tls13)
    with KmipConnection(port, paths, tls13=tls13) as c:
        c.sock.close()
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    s = ctx.wrap_socket(raw, server_hostname="127.0.0.1")
    s.sendall(QUERY)
    read_message(s)
    session = s.session
    s.close()
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    s = ctx.wrap_socket(raw, server_hostname="127.0.0.1", session=session)
    return s


def test_resumption_keeps_identity(listener, tenant_factory, bundle):  # noqa: F811
    server = listener()
    tenant_factory(tenant_id="resume")
    paths = bundle("resume")
    with KmipConnection(server.port, paths) as conn:
        key_id = _warm_key(conn)
    get = request((1, 2), (Op.GET, [uid(key_id)]))
    for tls13 in (True, False):
        s = _resume(server.port, paths, tls13)
        try:
            s.sendall(get)
            r = response(read_message(s))[1][0]
            assert s.session_reused, tls13
            assert r.status == Status.SUCCESS, (tls13, r.reason, r.message)
        finally:
            s.close()


def _coalesced(port, paths, data, tls13=True, session=None, fin=True):
    """Client Finished + request (+ FIN) in ONE TCP write: the request reaches the server together with
    the end of the handshake (before KmipConnection.connection_made)."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = client_context(paths, tls13=tls13).wrap_bio(incoming, outgoing, server_hostname="127.0.0.1",
                                                      session=session)
    while True:
        try:
            tls.do_handshake()
            break
        except ssl.SSLWantReadError:
            pending = outgoing.read()
            if pending:
                raw.sendall(pending)
            chunk = raw.recv(65536)
            if not chunk:
                raise ConnectionError("closed in handshake")
            incoming.write(chunk)
    tls.write(data)
    raw.sendall(outgoing.read())  # Finished + application data together
    if fin:
        raw.shutdown(socket.SHUT_WR)
    received = b""
    raw.settimeout(5)
    out = []
    while True:
        if len(received) >= 8 and len(received) >= 8 + int.from_bytes(received[4:8], "big"):
            end = 8 + int.from_bytes(received[4:8], "big")
            out.append(received[:end]); received = received[end:]
            continue
        try:
            received += tls.read(65536)
        except ssl.SSLWantReadError:
            try:
                chunk = raw.recv(65536)
            except (TimeoutError, ConnectionError):
                break
            if not chunk:
                break
            incoming.write(chunk)
        except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
            break
    raw.close()
    return out


def test_request_coalesced_with_handshake_then_fin(listener, tenant_factory, bundle):  # noqa: F811
    server = listener()
    tenant_factory(tenant_id="coal")
    paths = bundle("coal")
    with KmipConnection(server.port, paths) as conn:
        key_id = _warm_key(conn)
    get = request((1, 2), (Op.GET, [uid(key_id)]))
    create = request((1, 2), (Op.CREATE, create_payload()))
    for data, n in ((get, 1), (create, 1), (get + create + QUERY, 3)):
        for fin in (True, False):
            out = _coalesced(server.port, paths, data, fin=fin)
            assert [response(a)[1][0].status for a in out] == [Status.SUCCESS] * n, (n, fin, len(out))
    assert _until(lambda: server._connections == 0 and not server._per_client and not server._handshaking, 6)


def test_close_during_handshake_releases_slot(listener, tenant_factory, bundle):  # noqa: F811
    server = listener(handshake_timeout=30)
    tenant_factory(tenant_id="mid")
    paths = bundle("mid")
    for how in ("fin", "rst"):
        raw = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        tls = client_context(paths).wrap_bio(incoming, outgoing, server_hostname="127.0.0.1")
        try:
            tls.do_handshake()
        except ssl.SSLWantReadError:
            raw.sendall(outgoing.read())  # ClientHello only
        assert _until(lambda: len(server._handshaking) == 1, 2)
        if how == "rst":
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        raw.close()
        assert _until(lambda: not server._handshaking, 2), how


def _fin_after_close_case(port, paths, data):
    """Request needing the pool, then a frame that makes the server close(), then FIN."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    ctx = client_context(paths)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(incoming, outgoing, server_hostname="127.0.0.1")
    while True:
        try:
            tls.do_handshake(); break
        except ssl.SSLWantReadError:
            p = outgoing.read()
            if p: raw.sendall(p)
            incoming.write(raw.recv(65536))
    raw.sendall(outgoing.read())
    tls.write(data)
    raw.sendall(outgoing.read())
    raw.shutdown(socket.SHUT_WR)
    return raw


def test_server_close_while_eof_deferred_is_prompt(listener, tenant_factory, bundle):  # noqa: F811
    """A pooled request, then garbage (the server closes), then FIN: the server's socket must not stay
    open for ssl_shutdown_timeout (write_timeout) waiting for a close_notify it can no longer read."""
    server = listener(write_timeout=30)
    tenant_factory(tenant_id="defer")
    paths = bundle("defer")
    create = request((1, 2), (Op.CREATE, create_payload()))
    garbage = b"\x00" * 16  # not a KMIP frame: close()
    raw = _fin_after_close_case(server.port, paths, create + garbage)
    raw.settimeout(8)
    started = time.monotonic()
    got = b""
    try:
        while True:
            chunk = raw.recv(65536)
            if not chunk:
                break
            got += chunk
    except TimeoutError:
        pass
    took = time.monotonic() - started
    raw.close()
    assert took < 3, took
