"""The mTLS listener: TLS 1.2 and 1.3 with a required client certificate, framing and size limits,
idle/slow-client timeouts, per-client connection limit, and the health endpoint."""

from __future__ import annotations

import socket
import ssl
import time
import urllib.request

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from openkcm.protocol.tags import Op, Status
from tests.kmip.conftest import KmipConnection, read_message
from tests.kmip.wire import request, response


def _closed(sock: ssl.SSLSocket, within: float = 5.0) -> bool:
    sock.settimeout(within)
    try:
        return sock.recv(1) == b""
    except (ConnectionError, ssl.SSLError):
        return True
    except TimeoutError:
        return False


@pytest.mark.parametrize("tls13", [True, False], ids=["tls1.3", "tls1.2"])
def test_discover_versions_over_both_tls_versions(kmip_server, tenant_factory, bundle, tls13):
    tenant_factory(tenant_id="tls-ok")
    with KmipConnection(kmip_server.port, bundle("tls-ok"), tls13=tls13) as conn:
        assert conn.sock.version() == ("TLSv1.3" if tls13 else "TLSv1.2")
        _, results = response(conn.call(request((1, 1), (Op.DISCOVER_VERSIONS, []))))
        assert results[0].status == Status.SUCCESS


def test_client_certificate_is_required(kmip_server):
    ctx = ssl.create_default_context(cafile=str(kmip_server.config.ca_file))
    raw = socket.create_connection(("127.0.0.1", kmip_server.port), timeout=5)
    with pytest.raises((ssl.SSLError, ConnectionError)):
        sock = ctx.wrap_socket(raw, server_hostname="127.0.0.1")
        sock.sendall(request((1, 2), (Op.QUERY, [])))
        read_message(sock)


def test_certificate_from_another_ca_is_refused(kmip_server, tmp_path):
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "tls-ok"),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "svc"),
        ]
    )
    now = __import__("datetime").datetime.now(__import__("datetime").UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now.replace(year=now.year + 1))
        .sign(key, hashes.SHA256())
    )
    (tmp_path / "rogue.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "rogue.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    paths = {"cert": tmp_path / "rogue.pem", "key": tmp_path / "rogue.key", "ca": kmip_server.config.ca_file}
    with pytest.raises((ssl.SSLError, ConnectionError)), KmipConnection(kmip_server.port, paths) as conn:
        conn.call(request((1, 2), (Op.QUERY, [])))


def test_broken_framing_and_oversized_messages_close_the_connection(kmip_server, tenant_factory, bundle):
    tenant_factory(tenant_id="framing")
    paths = bundle("framing")
    with KmipConnection(kmip_server.port, paths) as conn:
        conn.sock.sendall(b"\x42\x00\x78\x02\x00\x00\x00\x08" + b"\x00" * 8)  # not a structure
        assert _closed(conn.sock)
    with KmipConnection(kmip_server.port, paths) as conn:
        conn.sock.sendall(b"\x42\x00\x78\x01" + (10 << 20).to_bytes(4, "big"))  # 10 MiB announced
        assert _closed(conn.sock)
    with KmipConnection(kmip_server.port, paths) as conn:  # well framed but malformed inside: an answer
        conn.sock.sendall(b"\x42\x00\x78\x01\x00\x00\x00\x08" + b"\x42\x00\x77\x01\x00\x00\x00\x00")
        _, results = response(read_message(conn.sock))
        assert results[0].status == Status.OPERATION_FAILED


def test_slow_and_idle_clients_are_dropped(kmip_server, tenant_factory, bundle):
    tenant_factory(tenant_id="slowpoke")
    paths = bundle("slowpoke")
    with KmipConnection(kmip_server.port, paths) as conn:
        data = request((1, 2), (Op.QUERY, []))
        conn.sock.sendall(data[:20])  # half a message, then nothing
        started = time.monotonic()
        assert _closed(conn.sock, within=10)
        assert time.monotonic() - started < 8  # read timeout 2 s in the fixture


def test_per_client_connection_limit(kmip_server, tenant_factory, bundle):
    tenant_factory(tenant_id="greedy")
    paths = bundle("greedy")
    conns = [KmipConnection(kmip_server.port, paths) for _ in range(4)]
    try:
        for conn in conns:
            _, results = response(conn.call(request((1, 2), (Op.QUERY, []))))
            assert results[0].status == Status.SUCCESS
        extra = KmipConnection(kmip_server.port, paths)
        assert _closed(extra.sock)
        extra.close()
    finally:
        for conn in conns:
            conn.close()
    time.sleep(0.3)
    with KmipConnection(kmip_server.port, paths) as again:  # slots are released on close
        _, results = response(again.call(request((1, 2), (Op.QUERY, []))))
        assert results[0].status == Status.SUCCESS


def test_health_endpoint(kmip_server):
    with urllib.request.urlopen(f"http://127.0.0.1:{kmip_server.health_port}/healthz", timeout=5) as reply:
        assert reply.status == 200 and b'"healthy": true' in reply.read()
    with socket.create_connection(("127.0.0.1", kmip_server.health_port), timeout=5):
        pass  # a bare TCP check (NLB) connects too


def test_metrics_are_emitted_as_emf(kmip_server, tenant_factory, bundle):
    from kmip_fargate.server import emf

    tenant_factory(tenant_id="metered")
    with KmipConnection(kmip_server.port, bundle("metered")) as conn:
        conn.call(request((1, 2), (Op.QUERY, [])))
    document = emf(kmip_server.core.metrics.drain(), 0)
    assert document["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "OpenKCM/KMIP"
    assert document["Query.success"] >= 1 and sum(document["LatencyHistogram"]) >= 1


def test_random_frames_over_tls_get_an_answer_or_a_close_never_a_hang(kmip_server, tenant_factory, bundle):
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    tenant_factory(tenant_id="socket-fuzz")
    paths = bundle("socket-fuzz")
    conn = [KmipConnection(kmip_server.port, paths)]

    @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.binary(max_size=200).map(lambda b: b + b"\x00" * (-len(b) % 8)))
    def run(body: bytes):
        frame = b"\x42\x00\x78\x01" + len(body).to_bytes(4, "big") + body
        sock = conn[0].sock
        sock.settimeout(5)
        try:
            sock.sendall(frame)
            reply = read_message(sock)
            assert reply[:3] == b"\x42\x00\x7b"  # a Response Message
        except (ConnectionError, ssl.SSLError, OSError) as exc:
            assert not isinstance(exc, TimeoutError), "the server hung"
            conn[0].close()
            conn[0] = KmipConnection(kmip_server.port, paths)

    try:
        run()
    finally:
        conn[0].close()


def test_a_client_that_never_finishes_the_handshake_is_dropped(kmip_server):
    raw = socket.create_connection(("127.0.0.1", kmip_server.port), timeout=10)
    try:
        raw.sendall(b"\x16\x03\x01")  # the start of a ClientHello, then silence
        started = time.monotonic()
        raw.settimeout(10)
        try:
            data = raw.recv(1024)
        except ConnectionError:
            data = b""
        assert data == b"" and time.monotonic() - started < 8  # handshake timeout is 2 s in the fixture
    finally:
        raw.close()
