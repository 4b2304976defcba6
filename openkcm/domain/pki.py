"""One CA per deployment (DECISIONS 9) and the identities it vouches for.

A KMIP client certificate names its tenant and service in a SAN URI
``spiffe://<trust-domain>/tenant/<tenant-id>/service/<service-id>``. Certificates without that URI fall
back to the subject: O = tenant id, OU = service id (documented in the README). The API signs CSRs so it
never sees a client's private key; ``issue_client`` (key generated here) is for the local stack and tests.
"""

from __future__ import annotations

import ipaddress
import json
import re
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from openkcm.clock import SYSTEM_CLOCK, Clock
from openkcm.errors import InvalidRequest, Unauthenticated
from openkcm.files import write_private

_SEGMENT = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
SPIFFE_PATTERN = re.compile(rf"^spiffe://([A-Za-z0-9.-]+)/tenant/({_SEGMENT})/service/([A-Za-z0-9._-]{{1,128}})\Z")
# 64: RFC 5280's bound for an OU (the subject fallback carries the service there); longer service ids made
# cryptography refuse the subject, a 500 for a valid request.
SERVICE_PATTERN = re.compile(r"^[A-Za-z0-9._-]{1,64}\Z")


@dataclass(frozen=True)
class ClientIdentity:
    tenant_id: str
    service_id: str
    subject: str
    serial_hex: str


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


class CertificateAuthority:
    def __init__(self, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate, trust_domain: str,
                 clock: Clock = SYSTEM_CLOCK) -> None:
        self.key, self.cert, self.trust_domain, self._clock = key, cert, trust_domain, clock

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @classmethod
    def load_or_create(cls, directory: Path, trust_domain: str, clock: Clock = SYSTEM_CLOCK) -> CertificateAuthority:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        key_path, cert_path = directory / "ca.key", directory / "ca.pem"
        if key_path.exists() and cert_path.exists():
            key = serialization.load_pem_private_key(key_path.read_bytes(), None)
            assert isinstance(key, ec.EllipticCurvePrivateKey)
            return cls(key, x509.load_pem_x509_certificate(cert_path.read_bytes()), trust_domain, clock)
        key = ec.generate_private_key(ec.SECP256R1())
        now = clock.now()
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"OpenKCM CA ({trust_domain})")])
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        write_private(key_path, _pem_key(key))
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return cls(key, cert, trust_domain, clock)

    @classmethod
    def from_json(cls, document: str, trust_domain: str, clock: Clock = SYSTEM_CLOCK) -> CertificateAuthority:
        """Load the CA from ``{"ca_cert_pem", "ca_key_pem"}`` (the Secrets Manager secret in AWS)."""
        try:
            fields = json.loads(document)
            key = serialization.load_pem_private_key(fields["ca_key_pem"].encode(), None)
            cert = x509.load_pem_x509_certificate(fields["ca_cert_pem"].encode())
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise InvalidRequest("the CA secret is not {ca_cert_pem, ca_key_pem} in PEM") from exc
        if not isinstance(key, ec.EllipticCurvePrivateKey) or key.public_key() != cert.public_key():
            raise InvalidRequest("the CA secret's key does not belong to its certificate")
        return cls(key, cert, trust_domain, clock)

    def spiffe_id(self, tenant_id: str, service_id: str) -> str:
        uri = f"spiffe://{self.trust_domain}/tenant/{tenant_id}/service/{service_id}"
        if not SPIFFE_PATTERN.match(uri):
            raise InvalidRequest("tenant or service id is not SPIFFE-safe", field="service_id")
        return uri

    def _sign(self, builder: x509.CertificateBuilder, days: int) -> x509.Certificate:
        now = self._clock.now()
        return (
            builder.issuer_name(self.cert.subject)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), critical=False
            )
            .sign(self.key, hashes.SHA256())
        )

    def issue_server(self, hostnames: list[str], days: int = 825) -> tuple[bytes, bytes]:
        """A server certificate for the KMIP listener. Returns (cert PEM, key PEM)."""
        key = ec.generate_private_key(ec.SECP256R1())
        names: list[x509.GeneralName] = []
        for host in hostnames:
            try:
                names.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                names.append(x509.DNSName(host))
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostnames[0])]))
            .public_key(key.public_key())
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        )
        cert = self._sign(builder, days)
        return cert.public_bytes(serialization.Encoding.PEM), _pem_key(key)

    def sign_client_csr(self, csr_pem: bytes, tenant_id: str, service_id: str, days: int = 365) -> x509.Certificate:
        """Sign a CSR for a tenant's service. Identity comes from the arguments, never from the CSR."""
        try:
            csr = x509.load_pem_x509_csr(csr_pem)
        except ValueError as exc:
            raise InvalidRequest("csr is not a PEM certificate signing request", field="csr") from exc
        if not csr.is_signature_valid:
            raise InvalidRequest("csr signature does not verify", field="csr")
        if not SERVICE_PATTERN.match(service_id):
            raise InvalidRequest("service id must be 1-64 letters, digits, '.', '_' or '-'", field="service_id")
        subject = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, tenant_id),
                x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, service_id),
                x509.NameAttribute(NameOID.COMMON_NAME, _common_name(tenant_id, service_id)),
            ]
        )
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .public_key(csr.public_key())
            .add_extension(
                x509.SubjectAlternativeName([x509.UniformResourceIdentifier(self.spiffe_id(tenant_id, service_id))]),
                critical=False,
            )
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        )
        return self._sign(builder, days)

    def issue_client(self, tenant_id: str, service_id: str, days: int = 365) -> tuple[x509.Certificate, bytes]:
        """Generate a key and certificate for a tenant's service. Returns (certificate, key PEM)."""
        key = ec.generate_private_key(ec.SECP256R1())
        csr = (
            x509.CertificateSigningRequestBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, service_id)]))
            .sign(key, hashes.SHA256())
        )
        cert = self.sign_client_csr(csr.public_bytes(serialization.Encoding.PEM), tenant_id, service_id, days)
        return cert, _pem_key(key)


def _common_name(tenant_id: str, service_id: str) -> str:
    """``<service>.<tenant>`` where it fits a CN's 64 characters, else the service alone: the CN only
    informs people; identity comes from the SPIFFE URI (or O and OU)."""
    composite = f"{service_id}.{tenant_id}"
    return composite if len(composite) <= 64 else service_id


def write_client_bundle(ca: CertificateAuthority, cert: x509.Certificate, key_pem: bytes, out: Path) -> dict[str, Path]:
    """Write ``client.pem``, ``client.key`` (0600) and ``ca.pem`` into ``out``. Issuing goes through
    ``openkcm.ops.certificates``, which records the certificate: the KMIP listener refuses unrecorded ones."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"cert": out / "client.pem", "key": out / "client.key", "ca": out / "ca.pem"}
    paths["cert"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    write_private(paths["key"], key_pem)
    paths["ca"].write_bytes(ca.cert_pem)
    return paths


def identity_from_certificate(cert: x509.Certificate, trust_domain: str) -> ClientIdentity:
    """Who the peer is. SPIFFE URI first; subject O (tenant) and OU (service) as the fallback."""
    serial_hex = format(cert.serial_number, "x")
    subject = cert.subject.rfc4514_string()
    try:
        uris = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
            x509.UniformResourceIdentifier
        )
    except x509.ExtensionNotFound:
        uris = []
    for uri in uris:
        match = SPIFFE_PATTERN.match(uri)
        if match and match.group(1) == trust_domain:
            return ClientIdentity(match.group(2), match.group(3), subject, serial_hex)
    orgs = cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
    units = cert.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)
    if len(orgs) == 1 and len(units) == 1:
        tenant, service = str(orgs[0].value), str(units[0].value)
        if re.fullmatch(_SEGMENT, tenant) and SERVICE_PATTERN.match(service):
            return ClientIdentity(tenant, service, subject, serial_hex)
    raise Unauthenticated("client certificate names no tenant and service")
