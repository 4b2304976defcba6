"""End to end: a service's certificate issued by the API from a CSR works on the real KMIP listener
(mutual TLS, PyKMIP as the client); once the API revokes it, the listener refuses it."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.api.conftest import claims

pytest.importorskip("kmip_fargate.server")


@pytest.fixture
def kmip_listener(api_runtime, tmp_path: Path):
    from kmip_fargate.server import KmipServer, ServerConfig
    from openkcm.kmip.core import KmipCore

    ca = api_runtime.certificate_authority()
    cert_pem, key_pem = ca.issue_server(["127.0.0.1"])
    (tmp_path / "server.pem").write_bytes(cert_pem)
    (tmp_path / "server.key").write_bytes(key_pem)
    (tmp_path / "ca.pem").write_bytes(ca.cert_pem)
    config = ServerConfig(
        host="127.0.0.1", port=0, health_port=0, cert_file=tmp_path / "server.pem", key_file=tmp_path / "server.key",
        ca_file=tmp_path / "ca.pem", trust_domain=api_runtime.settings.trust_domain, idle_timeout=5,
        read_timeout=2, write_timeout=2, max_connections_per_client=4, max_message_size=64 * 1024,
    )
    server = KmipServer(KmipCore(api_runtime), config).start_in_thread()
    yield server
    server.stop()


def _assert_refused(port: int, directory: Path) -> None:
    """The listener answers a Create with Authentication Not Successful for this bundle."""
    from kmip.core import enums
    from kmip.pie.exceptions import KmipOperationFailure

    client = _client(port, directory)
    try:
        with pytest.raises(KmipOperationFailure) as refused:
            client.create(enums.CryptographicAlgorithm.AES, 256, name="refused")
        assert refused.value.reason == enums.ResultReason.AUTHENTICATION_NOT_SUCCESSFUL
    finally:
        client.close()


def _client(port: int, directory: Path):
    from kmip.pie.client import ProxyKmipClient

    client = ProxyKmipClient(hostname="127.0.0.1", port=port, cert=str(directory / "client.pem"),
                             key=str(directory / "client.key"), ca=str(directory / "ca.pem"), config_file="/dev/null")
    client.open()
    return client


def test_issued_certificate_works_on_kmip_until_revoked(api, account, make_tenant, kmip_listener, tmp_path):
    from kmip.core import enums

    tenant = make_tenant(account)
    key = ec.generate_private_key(ec.SECP256R1())  # stays here: the API only ever sees the CSR
    csr = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mongod")])).sign(key, hashes.SHA256())
    reply = api.call("POST", f"/v1/tenants/{tenant.tenant_id}/certificates", claims(account), body={
        "service_id": "mongod-1", "csr": csr.public_bytes(serialization.Encoding.PEM).decode()})
    assert reply.status == 201, reply.text
    issued = reply.json()
    (tmp_path / "client.pem").write_text(issued["certificate_pem"])
    (tmp_path / "ca.pem").write_text(issued["ca_pem"])
    (tmp_path / "client.key").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))

    client = _client(kmip_listener.port, tmp_path)
    try:
        uid = client.create(enums.CryptographicAlgorithm.AES, 256, name="api-e2e")
        assert uid
    finally:
        client.close()
    keys = api.call("GET", f"/v1/tenants/{tenant.tenant_id}/keys", claims(account, "auditor")).json()["items"]
    assert [k["object_id"] for k in keys] == [uid] and keys[0]["created_by"]

    revoke = api.call("POST", f"/v1/tenants/{tenant.tenant_id}/certificates/{issued['serial']}/revoke",
                      claims(account), body={"reason": "compromised host"})
    assert revoke.status == 200
    _assert_refused(kmip_listener.port, tmp_path)


def test_a_certificate_issued_outside_the_api_is_recorded_listed_and_revocable(
    api, account, make_tenant, kmip_listener, tmp_path
):
    """``openkcm pki issue`` (and the local stack, the benchmark) issue through the same record: the
    certificate shows in the API's list and its revocation reaches the listener."""
    from kmip.core import enums

    from openkcm.ops.certificates import issue_client_bundle

    tenant = make_tenant(account)
    issue_client_bundle(api_runtime_of(api), tenant.tenant_id, "cli-svc", tmp_path / "cli", actor="test")
    listed = api.call("GET", f"/v1/tenants/{tenant.tenant_id}/certificates", claims(account, "auditor")).json()
    [cert] = listed["items"]
    assert cert["service_id"] == "cli-svc" and cert["status"] == "active"

    client = _client(kmip_listener.port, tmp_path / "cli")
    try:
        assert client.create(enums.CryptographicAlgorithm.AES, 256, name="from-cli")
    finally:
        client.close()
    revoke = api.call("POST", f"/v1/tenants/{tenant.tenant_id}/certificates/{cert['serial']}/revoke",
                      claims(account), body={"reason": "host retired"})
    assert revoke.status == 200
    _assert_refused(kmip_listener.port, tmp_path / "cli")


def test_a_certificate_the_deployment_never_recorded_is_refused_and_audited(
    api, account, make_tenant, kmip_listener, tmp_path
):
    """Signed by the deployment's CA but never recorded (its key leaked from a test, a bug, an old tool):
    it could be neither listed nor revoked, so the listener does not accept it."""

    from openkcm.domain.audit import read_events
    from openkcm.domain.pki import write_client_bundle

    tenant = make_tenant(account)
    ca = api_runtime_of(api).certificate_authority()
    cert, key_pem = ca.issue_client(tenant.tenant_id, "ghost")
    write_client_bundle(ca, cert, key_pem, tmp_path / "ghost")
    _assert_refused(kmip_listener.port, tmp_path / "ghost")
    api_runtime_of(api).audit.flush()
    serial = format(cert.serial_number, "x")
    refusals = [
        e for e in read_events("_platform", since="2000-01-01T00:00:00+00:00")
        if e["kind"] == "security" and e["details"].get("serial") == serial
    ]
    assert refusals and "not issued by this deployment" in refusals[0]["reason"]


def test_long_service_ids_get_a_certificate_or_a_400_never_a_500(api, account, make_tenant):
    tenant = make_tenant(account)
    key = ec.generate_private_key(ec.SECP256R1())
    csr = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "svc")])).sign(key, hashes.SHA256())
    pem = csr.public_bytes(serialization.Encoding.PEM).decode()
    service = "s" * 64
    reply = api.call("POST", f"/v1/tenants/{tenant.tenant_id}/certificates", claims(account),
                     body={"service_id": service, "csr": pem})
    assert reply.status == 201, reply.text
    issued = x509.load_pem_x509_certificate(reply.json()["certificate_pem"].encode())
    assert issued.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == service
    assert issued.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)[0].value == service
    reply = api.call("POST", f"/v1/tenants/{tenant.tenant_id}/certificates", claims(account),
                     body={"service_id": "s" * 65, "csr": pem})
    assert reply.status == 400 and reply.json()["details"]["field"] == "service_id", reply.text


def api_runtime_of(api):
    from openkcm.api.context import runtime

    return runtime()
