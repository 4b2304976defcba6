"""Client certificates of a tenant's services: the KMIP listener accepts only those recorded here.

Why: the listener used to take a serial without a record for "not revoked", so a certificate signed
outside the API (``openkcm pki issue``, the benchmark) worked for its whole validity and could be neither
listed nor revoked. Every issuing path now records what it signs through this module, and
``KmipCore.authorize`` refuses a serial it has no record of, or whose recorded validity has ended.
"""

from __future__ import annotations

from pathlib import Path

from cryptography import x509

from openkcm.domain.audit import AuditEvent
from openkcm.domain.pki import write_client_bundle
from openkcm.ops.runtime import Runtime
from openkcm.storage import CertificateModel


def record_certificate(runtime: Runtime, tenant_id: str, service_id: str, cert: x509.Certificate) -> CertificateModel:
    """Store the record that makes ``cert`` usable (and listable, revocable) for ``tenant_id``."""
    serial = format(cert.serial_number, "x")
    item = CertificateModel(
        tenant_id,
        CertificateModel.sort_key(serial),
        serial=serial,
        service_id=service_id,
        subject=cert.subject.rfc4514_string(),
        issued_at=runtime.clock.now(),
        not_after=cert.not_valid_after_utc,
    )
    item.save()
    return item


def issue_client_bundle(
    runtime: Runtime,
    tenant_id: str,
    service_id: str,
    out: Path,
    *,
    actor: str,
    source: str = "cli",
    days: int = 365,
) -> dict[str, Path]:
    """Generate a key and certificate for a tenant's service (local stack, operators' tooling, tests),
    record and audit it as the API does for a signed CSR, and write ``client.pem``, ``client.key`` (0600)
    and ``ca.pem`` into ``out``."""
    tenant = runtime.tenants.require_usable(tenant_id)
    runtime.audit.ensure_writable()
    ca = runtime.certificate_authority()
    cert, key_pem = ca.issue_client(tenant_id, service_id, days)
    item = record_certificate(runtime, tenant_id, service_id, cert)
    runtime.audit.record(
        AuditEvent(
            tenant_id=tenant_id,
            account_id=tenant.account_id,
            source=source,
            operation="IssueCertificate",
            kind="security",
            actor=actor,
            object_id=item.serial,
            details={"service_id": service_id},
        )
    )
    return write_client_bundle(ca, cert, key_pem, out)
