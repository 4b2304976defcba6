"""KMIP fixtures: a real mTLS listener on a free loopback port, backed by the session's moto server,
and client certificate bundles issued by the deployment CA."""

from __future__ import annotations

import socket
import ssl
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from openkcm.domain.pki import write_client_bundle
from openkcm.ops.certificates import issue_client_bundle


@pytest.fixture
def kmip_core(runtime):
    from openkcm.kmip.core import KmipCore

    return KmipCore(runtime)


@pytest.fixture
def kmip_server(runtime, settings, tmp_path: Path) -> Iterator:
    """The listener as production runs it: its own runtime with an audit WAL (so warm read-only
    requests take the inline path), on the same tables as ``runtime``."""
    from kmip_fargate.server import KmipServer, ServerConfig
    from openkcm.kmip.core import KmipCore
    from openkcm.ops.runtime import build_runtime

    server_runtime = build_runtime(settings, audit_wal_dir=tmp_path / "kmip-audit-wal")
    kmip_core = KmipCore(server_runtime)

    ca = runtime.certificate_authority()
    pki = tmp_path / "server-pki"
    pki.mkdir()
    cert_pem, key_pem = ca.issue_server(["127.0.0.1", "localhost"])
    (pki / "server.pem").write_bytes(cert_pem)
    (pki / "server.key").write_bytes(key_pem)
    (pki / "ca.pem").write_bytes(ca.cert_pem)
    config = ServerConfig(
        host="127.0.0.1",
        port=0,
        health_port=0,
        cert_file=pki / "server.pem",
        key_file=pki / "server.key",
        ca_file=pki / "ca.pem",
        trust_domain=runtime.settings.trust_domain,
        idle_timeout=5,
        read_timeout=2,
        write_timeout=2,
        max_connections_per_client=4,
        max_message_size=64 * 1024,
    )
    server = KmipServer(kmip_core, config).start_in_thread()
    yield server
    server.stop()
    server_runtime.close()


@pytest.fixture
def bundle(runtime, tmp_path: Path) -> Callable[..., dict[str, Path]]:
    """Issue a client certificate bundle for (tenant, service), recorded as every issuing path records it.
    ``recorded=False``: signed by the CA but never recorded (what the listener must refuse), also for a
    tenant that does not exist or is disabled."""

    def make(tenant_id: str, service_id: str = "mongod", *, recorded: bool = True) -> dict[str, Path]:
        out = tmp_path / f"client-{tenant_id}-{service_id}"
        if recorded:
            return issue_client_bundle(runtime, tenant_id, service_id, out, actor="test")
        ca = runtime.certificate_authority()
        cert, key_pem = ca.issue_client(tenant_id, service_id)
        return write_client_bundle(ca, cert, key_pem, out)

    return make


def client_context(paths: dict[str, Path], *, tls13: bool = True) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(paths["ca"]))
    ctx.load_cert_chain(str(paths["cert"]), str(paths["key"]))
    if not tls13:
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    return ctx


def read_message(sock: ssl.SSLSocket) -> bytes:
    def exactly(n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = sock.recv(n - len(data))
            if not chunk:
                raise ConnectionError("closed")
            data += chunk
        return data

    header = exactly(8)
    return header + exactly(int.from_bytes(header[4:8], "big"))


class KmipConnection:
    """A raw TTLV client over a real TLS socket."""

    def __init__(self, port: int, paths: dict[str, Path], tls13: bool = True) -> None:
        raw = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.sock = client_context(paths, tls13=tls13).wrap_socket(raw, server_hostname="127.0.0.1")

    def call(self, request: bytes) -> bytes:
        self.sock.sendall(request)
        return read_message(self.sock)

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> KmipConnection:  # noqa: PYI034
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
