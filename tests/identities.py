"""Client identities for tests that call the KMIP core directly (no TLS): the core accepts only
certificates the deployment recorded (``openkcm.ops.certificates``), so the serial is recorded first."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from pynamodb.exceptions import PutError

from openkcm.domain.pki import ClientIdentity
from openkcm.storage import CertificateModel


def recorded_identity(tenant_id: str, service_id: str, subject: str, serial_hex: str) -> ClientIdentity:
    """The identity of a recorded, valid certificate (an existing record, e.g. a revoked one, is kept)."""
    now = datetime.now(UTC)
    item = CertificateModel(
        tenant_id,
        CertificateModel.sort_key(serial_hex),
        serial=serial_hex,
        service_id=service_id,
        subject=subject,
        issued_at=now,
        not_after=now + timedelta(days=1),
    )
    try:
        item.save(condition=CertificateModel.sk.does_not_exist())
    except PutError:
        pass
    return ClientIdentity(tenant_id, service_id, subject, serial_hex)
