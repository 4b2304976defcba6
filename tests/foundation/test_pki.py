"""The deployment CA and the identity a client certificate carries."""

from __future__ import annotations

import stat
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from openkcm.domain.pki import CertificateAuthority, identity_from_certificate, write_client_bundle
from openkcm.errors import InvalidRequest, Unauthenticated


@pytest.fixture
def ca(tmp_path):
    return CertificateAuthority.load_or_create(tmp_path / "pki", "openkcm.test")


def test_ca_is_persistent_and_its_key_private(ca, tmp_path):
    again = CertificateAuthority.load_or_create(tmp_path / "pki", "openkcm.test")
    assert again.cert.serial_number == ca.cert.serial_number
    assert stat.S_IMODE((tmp_path / "pki" / "ca.key").stat().st_mode) == 0o600


def test_client_certificate_names_tenant_and_service(ca, tmp_path):
    cert, key_pem = ca.issue_client("tenant-a", "mongodb-cluster-a")
    paths = write_client_bundle(ca, cert, key_pem, tmp_path / "client")
    cert = x509.load_pem_x509_certificate(paths["cert"].read_bytes())
    cert.verify_directly_issued_by(ca.cert)
    identity = identity_from_certificate(cert, "openkcm.test")
    assert (identity.tenant_id, identity.service_id) == ("tenant-a", "mongodb-cluster-a")
    assert stat.S_IMODE(paths["key"].stat().st_mode) == 0o600


def test_identity_from_another_trust_domain_falls_back_to_subject_only(ca):
    cert, _ = ca.issue_client("tenant-a", "svc")
    # The SPIFFE URI is ignored for a foreign trust domain; the subject (O/OU) still names the tenant.
    identity = identity_from_certificate(cert, "someone-else.example")
    assert identity.tenant_id == "tenant-a"


def _self_signed(subject: x509.Name) -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + timedelta(days=1))
        .sign(key, hashes.SHA256())
    )


def test_certificate_without_tenant_is_refused():
    cert = _self_signed(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "nobody")]))
    with pytest.raises(Unauthenticated):
        identity_from_certificate(cert, "openkcm.test")


def test_csr_identity_comes_from_arguments_not_from_the_csr(ca):
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "tenant-b")]))
        .sign(key, hashes.SHA256())
    )
    cert = ca.sign_client_csr(csr.public_bytes(serialization.Encoding.PEM), "tenant-a", "svc")
    assert identity_from_certificate(cert, "openkcm.test").tenant_id == "tenant-a"
    with pytest.raises(InvalidRequest):
        ca.sign_client_csr(b"not a csr", "tenant-a", "svc")
    with pytest.raises(InvalidRequest):
        ca.sign_client_csr(csr.public_bytes(serialization.Encoding.PEM), "Tenant_A!", "svc")


def test_ca_loads_from_the_secrets_manager_secret(aws_endpoint, settings, tmp_path):
    """In AWS the CA comes from Secrets Manager ({ca_cert_pem, ca_key_pem}); the Lambda's disk is read-only."""
    import json

    import boto3

    from openkcm.ops.runtime import build_runtime

    local = CertificateAuthority.load_or_create(tmp_path / "pki", settings.trust_domain)
    document = json.dumps({"ca_cert_pem": local.cert_pem.decode(), "ca_key_pem": (tmp_path / "pki" / "ca.key").read_text()})
    arn = boto3.client("secretsmanager").create_secret(Name=f"ca-{settings.table_prefix}", SecretString=document)["ARN"]
    runtime = build_runtime(settings.model_copy(update={"ca_secret_arn": arn}), create=True)
    try:
        ca = runtime.certificate_authority()
        assert ca.cert.serial_number == local.cert.serial_number
        cert, _ = ca.issue_client("tenant-a", "svc")
        cert.verify_directly_issued_by(local.cert)
        assert not (settings.data_dir / "pki").exists()  # nothing written to the (read-only) disk
    finally:
        runtime.close()
    with pytest.raises(InvalidRequest):
        CertificateAuthority.from_json('{"ca_cert_pem": "x"}', "openkcm.test")
