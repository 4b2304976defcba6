"""The asyncio.Protocol listener over real mTLS sockets: framing across and within writes, in-order
answers when inline and pooled requests are pipelined, the size limit, the idle / read / write deadlines
(one sweeper, no timer per request), back-pressure from a client that never reads, connection limits and
their release, and a client that leaves while its request is in the worker pool."""

from __future__ import annotations

import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from openkcm.domain.audit import read_events
from openkcm.protocol import ttlv
from openkcm.protocol.tags import Op, QueryFunction, Status, Tag
from tests.kmip.conftest import KmipConnection, read_message
from tests.kmip.test_protocol import create_payload
from tests.kmip.wire import request, response, uid

QUERY = request((1, 2), (Op.QUERY, []))


@pytest.fixture
def listener(runtime, settings, tmp_path: Path) -> Iterator[Callable[..., Any]]:
    """Start a listener with ServerConfig overrides (small timeouts and limits), as production builds it:
    its own runtime with an audit WAL, so warm Gets take the inline path."""
    from kmip_fargate.server import KmipServer, ServerConfig
    from openkcm.kmip.core import KmipCore
    from openkcm.ops.runtime import build_runtime

    started: list[tuple[Any, Any]] = []
    ca = runtime.certificate_authority()
    pki = tmp_path / "listener-pki"
    pki.mkdir()
    cert_pem, key_pem = ca.issue_server(["127.0.0.1", "localhost"])
    (pki / "server.pem").write_bytes(cert_pem)
    (pki / "server.key").write_bytes(key_pem)
    (pki / "ca.pem").write_bytes(ca.cert_pem)

    def start(**overrides: Any) -> Any:
        server_runtime = build_runtime(settings, audit_wal_dir=tmp_path / f"wal-{len(started)}")
        fields: dict[str, Any] = {
            "host": "127.0.0.1",
            "port": 0,
            "cert_file": pki / "server.pem",
            "key_file": pki / "server.key",
            "ca_file": pki / "ca.pem",
            "trust_domain": runtime.settings.trust_domain,
            "idle_timeout": 30,
            "read_timeout": 30,
            "write_timeout": 30,
            "max_message_size": 64 * 1024,
        }
        fields.update(overrides)
        server = KmipServer(KmipCore(server_runtime), ServerConfig(**fields)).start_in_thread()
        started.append((server, server_runtime))
        return server

    yield start
    for server, server_runtime in started:
        server.stop()
        server_runtime.close()


def _closed(sock: ssl.SSLSocket, within: float) -> bool:
    """True when the server closed the connection within ``within`` seconds (EOF or reset)."""
    sock.settimeout(within)
    try:
        while True:
            if sock.recv(4096) == b"":
                return True
    except (ConnectionError, ssl.SSLError):
        return True
    except TimeoutError:
        return False


def _until(predicate: Callable[[], bool], within: float) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def _live(server: Any) -> list[Any]:
    for _ in range(50):
        try:
            return list(server._live)
        except RuntimeError:  # the loop thread changed the set while we copied it
            time.sleep(0.001)
    return []


def _warm_key(conn: KmipConnection) -> str:
    """Create and activate a key over the connection and Get it once (warms every cache)."""
    _, results = response(conn.call(request((1, 2), (Op.CREATE, create_payload()), (Op.ACTIVATE, []))))
    assert [r.status for r in results] == [Status.SUCCESS, Status.SUCCESS]
    key_id = results[0].payload.child_value(Tag.UNIQUE_IDENTIFIER)
    _, results = response(conn.call(request((1, 2), (Op.GET, [uid(key_id)]))))
    assert results[0].status == Status.SUCCESS
    return key_id


def _operations(conn: KmipConnection, count: int) -> list[tuple[int, int]]:
    out = []
    for _ in range(count):
        _, results = response(read_message(conn.sock))
        out.append((results[0].operation, results[0].status))
    return out


def test_pipelined_requests_in_one_write_are_answered_in_order(listener, tenant_factory, bundle):
    server = listener()
    tenant_factory(tenant_id="pipe")
    with KmipConnection(server.port, bundle("pipe")) as conn:
        key_id = _warm_key(conn)
        get = request((1, 2), (Op.GET, [uid(key_id)]))
        discover = request((1, 2), (Op.DISCOVER_VERSIONS, []))
        conn.sock.sendall(get + discover + QUERY + get)
        assert _operations(conn, 4) == [
            (Op.GET, Status.SUCCESS),
            (Op.DISCOVER_VERSIONS, Status.SUCCESS),
            (Op.QUERY, Status.SUCCESS),
            (Op.GET, Status.SUCCESS),
        ]


def test_pooled_and_inline_requests_interleaved_on_one_connection_keep_their_order(
    listener, tenant_factory, bundle
):
    """A Create (worker pool) followed by warm Gets (answered on the loop) in the same write: a Get must
    not overtake the Create that was sent before it."""
    server = listener()
    tenant_factory(tenant_id="interleave")
    with KmipConnection(server.port, bundle("interleave")) as conn:
        key_id = _warm_key(conn)
        get = request((1, 2), (Op.GET, [uid(key_id)]))
        create = request((1, 2), (Op.CREATE, create_payload()))
        sequence = [create, get, get, create, QUERY, get, create, create, get]
        conn.sock.sendall(b"".join(sequence))
        expected = [Op.CREATE, Op.GET, Op.GET, Op.CREATE, Op.QUERY, Op.GET, Op.CREATE, Op.CREATE, Op.GET]
        assert _operations(conn, len(sequence)) == [(op, Status.SUCCESS) for op in expected]
        # and a cold key (not in the object cache of the server yet) between two warm Gets
        _, results = response(
            KmipConnection(server.port, bundle("interleave")).call(
                request((1, 2), (Op.CREATE, create_payload()), (Op.ACTIVATE, []))
            )
        )
        cold = results[0].payload.child_value(Tag.UNIQUE_IDENTIFIER)
        conn.sock.sendall(get + request((1, 2), (Op.GET, [uid(cold)])) + get)
        answers = [response(read_message(conn.sock))[1][0] for _ in range(3)]
        assert [a.status for a in answers] == [Status.SUCCESS] * 3
        ids = [a.payload.child_value(Tag.UNIQUE_IDENTIFIER) for a in answers]
        assert ids == [key_id, cold, key_id]


def test_requests_split_byte_by_byte_across_writes(listener, tenant_factory, bundle):
    server = listener()
    tenant_factory(tenant_id="trickle")
    with KmipConnection(server.port, bundle("trickle")) as conn:
        conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        two = QUERY + request((1, 2), (Op.DISCOVER_VERSIONS, []))
        for i in range(len(two)):
            conn.sock.sendall(two[i : i + 1])  # one TLS record per byte, across the message boundary too
            if i % 16 == 0:
                time.sleep(0.001)
        assert _operations(conn, 2) == [(Op.QUERY, Status.SUCCESS), (Op.DISCOVER_VERSIONS, Status.SUCCESS)]


def test_size_limit_is_inclusive_and_an_oversized_frame_closes_the_connection(
    listener, tenant_factory, bundle
):
    server = listener(max_message_size=4096)
    tenant_factory(tenant_id="sizer")
    paths = bundle("sizer")
    with KmipConnection(server.port, paths) as conn:
        # exactly the limit: framed fine, malformed inside -> an error answer, the connection stays
        conn.sock.sendall(b"\x42\x00\x78\x01" + (4096 - 8).to_bytes(4, "big") + b"\x00" * (4096 - 8))
        _, results = response(read_message(conn.sock))
        assert results[0].status == Status.OPERATION_FAILED
        _, results = response(conn.call(QUERY))
        assert results[0].status == Status.SUCCESS
    with KmipConnection(server.port, paths) as conn:
        conn.sock.sendall(b"\x42\x00\x78\x01" + (4096).to_bytes(4, "big"))  # 8 bytes over, only the header
        assert _closed(conn.sock, within=5)
    for _ in range(3):  # broken framing (not a structure), again and again: counted, not one record each
        with KmipConnection(server.port, paths) as conn:
            conn.sock.sendall(b"\x42\x00\x78\x02\x00\x00\x00\x08" + b"\x00" * 8)
            assert _closed(conn.sock, within=5)
    assert _until(lambda: server._connections == 0, 5)
    audit = server.core.services.audit

    def closed_for_framing() -> list[dict]:
        audit.flush()
        return [e for e in read_events("sizer") if "closed the connection" in e["reason"]]

    assert _until(lambda: len(closed_for_framing()) == 1, 5)
    [record] = closed_for_framing()
    assert record["kind"] == "security" and record["result"] == "denied"
    assert record["reason"].startswith("a message of 4104 bytes (the limit is 4096) closed the connection")
    assert record["actor_role"] and record["details"]["serial"]  # the certificate's service and serial
    server._framing_refusals.clear()  # a minute later: the next one is recorded, with the count between
    with KmipConnection(server.port, paths) as conn:
        conn.sock.sendall(b"\x42\x00\x78\x02\x00\x00\x00\x08" + b"\x00" * 8)
        assert _closed(conn.sock, within=5)
    assert _until(lambda: len(closed_for_framing()) == 2, 5)
    assert "not a KMIP TTLV structure" in closed_for_framing()[1]["reason"]


def test_slow_client_is_cut_after_the_read_timeout_even_when_it_trickles(listener, tenant_factory, bundle):
    server = listener(read_timeout=0.5)
    tenant_factory(tenant_id="loris")
    paths = bundle("loris")
    with KmipConnection(server.port, paths) as conn:
        conn.sock.sendall(QUERY[:20])  # half a message, then silence
        assert _closed(conn.sock, within=3)
    with KmipConnection(server.port, paths) as conn:  # one byte every 0.1 s never completes in time
        conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        started = time.monotonic()
        cut = False
        for i in range(len(QUERY) - 1):
            try:
                conn.sock.sendall(QUERY[i : i + 1])
            except (ConnectionError, ssl.SSLError):
                cut = True
                break
            time.sleep(0.1)
            if time.monotonic() - started > 4:
                break
        assert cut or _closed(conn.sock, within=0.5)
        assert time.monotonic() - started < 4
    with KmipConnection(server.port, paths) as conn:  # a prompt client is unaffected
        for _ in range(3):
            _, results = response(conn.call(QUERY))
            assert results[0].status == Status.SUCCESS


def test_idle_connection_is_cut_after_the_idle_timeout_and_activity_keeps_it(
    listener, tenant_factory, bundle
):
    server = listener(idle_timeout=0.5)
    tenant_factory(tenant_id="idler")
    paths = bundle("idler")
    with KmipConnection(server.port, paths) as conn:
        for _ in range(8):  # 1.6 s of activity, each gap shorter than the idle timeout
            _, results = response(conn.call(QUERY))
            assert results[0].status == Status.SUCCESS
            time.sleep(0.2)
        assert _closed(conn.sock, within=3)  # then silence: cut
    assert _until(lambda: server._connections == 0, 3)


def test_client_that_never_reads_is_cut_after_the_write_timeout_with_bounded_buffers(
    listener, tenant_factory, bundle
):
    """Requests keep coming, answers are never read: the transport pushes back (pause_writing), the
    connection stops reading and processing, its buffers stay bounded, and the write timeout cuts it."""
    server = listener(write_timeout=0.5)
    tenant_factory(tenant_id="hoarder")
    paths = bundle("hoarder")
    functions = [
        ttlv.enumeration(Tag.QUERY_FUNCTION, f)
        for f in (
            QueryFunction.QUERY_OPERATIONS,
            QueryFunction.QUERY_OBJECTS,
            QueryFunction.QUERY_SERVER_INFORMATION,
        )
    ]
    batch = request((1, 2), *[(Op.QUERY, functions)] * 50)  # a few KB asking for 50 long Query answers
    with KmipConnection(server.port, paths) as conn:  # warms the tenant; measures one answer
        answer = len(conn.call(batch))
    assert answer > 3 * len(batch)
    raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # fill the server's send side quickly
    raw.settimeout(10)
    raw.connect(("127.0.0.1", server.port))
    from tests.kmip.conftest import client_context

    sock = client_context(paths).wrap_socket(raw, server_hostname="127.0.0.1")
    peak = {"buffered": 0, "samples": 0}
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            for connection in _live(server):
                transport = connection.transport
                try:
                    size = len(connection.buf) + (transport.get_write_buffer_size() if transport else 0)
                except Exception:  # noqa: BLE001 - the loop thread closed it meanwhile
                    size = 0
                peak["buffered"] = max(peak["buffered"], size)
                peak["samples"] += 1
            time.sleep(0.005)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    chunk = batch * 4
    sent = 0
    started = time.monotonic()
    cut = False
    try:
        sock.settimeout(1.0)
        while time.monotonic() - started < 15:
            try:
                sock.sendall(chunk)
                sent += len(chunk)
            except TimeoutError:
                break  # the server stopped reading: our send blocks
            except (ConnectionError, ssl.SSLError, OSError):
                cut = True
                break
        stalled = time.monotonic()
        if not cut:  # wait for the server to drop it: the connection leaves the server's books
            cut = _until(lambda: server._connections == 0, 5)
        assert cut, "a client that never reads was not cut"
        assert time.monotonic() - stalled < 5
        assert _until(lambda: server._connections == 0, 3)
    finally:
        stop.set()
        sampler.join(2)
        sock.close()
    answers_owed = (sent // len(batch)) * answer
    assert peak["samples"] > 0
    # bounded by the transport's high-water mark (+ one answer) and one read chunk, not by what was sent
    assert peak["buffered"] < 2 * 1024 * 1024 < answers_owed, (peak, sent)
    # the server still serves others
    with KmipConnection(server.port, paths) as conn:
        _, results = response(conn.call(QUERY))
        assert results[0].status == Status.SUCCESS


def test_per_client_and_total_connection_limits_are_enforced_and_released(listener, tenant_factory, bundle):
    server = listener(max_connections_per_client=2, max_connections=3)
    tenant_factory(tenant_id="limits")
    first, second = bundle("limits", "svc-a"), bundle("limits", "svc-b")  # two certificates, two serials
    conns = [KmipConnection(server.port, first) for _ in range(2)]
    try:
        for conn in conns:
            assert response(conn.call(QUERY))[1][0].status == Status.SUCCESS
        extra = KmipConnection(server.port, first)  # a third with the same certificate
        assert _closed(extra.sock, within=5)
        extra.close()
        other = KmipConnection(server.port, second)  # another serial of the same tenant: its own count
        assert response(other.call(QUERY))[1][0].status == Status.SUCCESS
        conns.append(other)
        over = KmipConnection(server.port, second)  # the server's total (3) is reached
        assert _closed(over.sock, within=5)
        over.close()
        assert server._connections == 3
        for _ in range(3):  # a burst: counted, not one record each
            burst = KmipConnection(server.port, first)
            assert _closed(burst.sock, within=5)
            burst.close()
        audit = server.core.services.audit

        def refusals(tenant_id: str) -> list[dict]:
            audit.flush()
            return [e for e in read_events(tenant_id) if e["operation"] == "Connect" and e["result"] == "denied"]

        assert _until(lambda: len(refusals("limits")) == 1, 5)
        [per_cert] = refusals("limits")
        assert per_cert["kind"] == "security" and "per-certificate connection limit" in per_cert["reason"]
        assert _until(lambda: any("server's connection limit" in e["reason"] for e in refusals("_platform")), 5)
    finally:
        for conn in conns:
            conn.close()
    assert _until(lambda: server._connections == 0 and not server._per_client, 5)
    again = [KmipConnection(server.port, first) for _ in range(2)]  # slots came back, exactly once each
    try:
        for conn in again:
            assert response(conn.call(QUERY))[1][0].status == Status.SUCCESS
        assert server._connections == 2
    finally:
        for conn in again:
            conn.close()


def test_client_leaving_while_its_request_is_in_the_pool_is_harmless(
    listener, tenant_factory, bundle, caplog
):
    server = listener()
    tenant_factory(tenant_id="leaver")
    paths = bundle("leaver")
    caplog.set_level(logging.WARNING)
    for _ in range(5):
        conn = KmipConnection(server.port, paths)
        conn.sock.sendall(request((1, 2), (Op.CREATE, create_payload())) + QUERY * 10)
        conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        conn.close()  # reset at once, the Create still running in the pool
    assert _until(lambda: server._connections == 0 and not _live(server), 5)
    time.sleep(0.5)  # the pooled Creates finish after their connections are gone
    with KmipConnection(server.port, paths) as conn:
        assert response(conn.call(QUERY))[1][0].status == Status.SUCCESS
    noisy = [
        r
        for r in caplog.records
        if r.name in ("openkcm.kmip.server", "asyncio") and r.levelno >= logging.WARNING
    ]
    assert noisy == [], [r.getMessage() for r in noisy]


def test_garbage_never_leaks_a_trace_and_the_loop_survives(listener, tenant_factory, bundle, caplog):
    server = listener()
    tenant_factory(tenant_id="garbage")
    paths = bundle("garbage")
    caplog.set_level(logging.WARNING)
    for frame in (
        b"\x00" * 8,  # not a structure
        b"\x42\x00\x78\x01\x00\x00\x00\x07",  # length not a multiple of 8
        b"\x42\x00\x78\x01\x00\x00\x00\x10" + b"\xff" * 16,  # framed, nonsense inside
    ):
        with KmipConnection(server.port, paths) as conn:
            conn.sock.sendall(frame)
            conn.sock.settimeout(5)
            try:
                reply = read_message(conn.sock)
            except (ConnectionError, ssl.SSLError):
                continue  # closed: fine
            assert reply[:3] == b"\x42\x00\x7b" and b"Traceback" not in reply
    assert not [r for r in caplog.records if r.name == "openkcm.kmip.server" and r.exc_info]
    with KmipConnection(server.port, paths) as conn:
        assert response(conn.call(QUERY))[1][0].status == Status.SUCCESS


def test_certificate_naming_no_tenant_is_audited_and_closed(runtime, listener, tmp_path):
    """A certificate from the deployment CA that names no tenant passes TLS but is refused by the listener:
    the refusal is audited (in the worker pool) before the connection closes, and holds no slot."""
    from datetime import UTC, datetime, timedelta

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    from openkcm.domain.audit import read_events

    server = listener()
    ca = runtime.certificate_authority()
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "anonymous-listener-probe")]))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(ca.key, hashes.SHA256())
    )
    (tmp_path / "anon.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "anon.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    paths = {"cert": tmp_path / "anon.pem", "key": tmp_path / "anon.key", "ca": server.config.ca_file}
    with KmipConnection(server.port, paths) as conn:  # the handshake succeeds: same CA
        try:
            conn.sock.sendall(QUERY)
        except (ConnectionError, ssl.SSLError):
            pass
        assert _closed(conn.sock, within=5)
    assert server._connections == 0 and not server._per_client
    server.core.services.audit.flush()
    refusals = [
        e
        for e in read_events("_platform", since="2000-01-01T00:00:00+00:00")
        if e["operation"] == "Connect" and "anonymous-listener-probe" in e.get("actor", "")
    ]
    assert refusals and refusals[0]["result"] == "denied" and refusals[0]["kind"] == "security"
