"""Client certificates of a tenant's services, and the CA bundle. The API signs CSRs: it never sees a
private key. Revocation bumps the tenant epoch so every KMIP worker re-reads the revoked serials."""

from __future__ import annotations

import re
from typing import Any

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.api_gateway import Router
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from openkcm.api import auth
from openkcm.api.context import (
    audit,
    certificate_authority,
    check_id,
    idempotent,
    page_body,
    paginate,
    principal,
    runtime,
    tenant_in_scope,
)
from openkcm.api.errors import json_response
from openkcm.api.models import CertificateIssue, CertificateRevoke
from openkcm.api.routes.common import DEFAULT_LIMIT, Limit, NextToken, iso
from openkcm.errors import InvalidRequest, NotFound, WrongState
from openkcm.ops.certificates import record_certificate
from openkcm.storage import CertificateModel

router = Router()
ca_router = Router()
SERIAL = re.compile(r"^[0-9a-f]{1,40}\Z")
_EC_CURVES = (ec.SECP256R1, ec.SECP384R1, ec.SECP521R1)


def _cert(item: CertificateModel) -> dict[str, Any]:
    return {
        "serial": item.serial,
        "service_id": item.service_id,
        "subject": item.subject,
        "issued_at": iso(item.issued_at),
        "not_after": iso(item.not_after),
        "revoked_at": iso(item.revoked_at),
        "revoked_reason": item.revoked_reason,
        "status": "revoked" if item.revoked_at else "active",
    }


def _check_csr_key(csr_pem: bytes) -> None:
    try:
        key = x509.load_pem_x509_csr(csr_pem).public_key()
    except ValueError as exc:
        raise InvalidRequest("csr is not a PEM certificate signing request", field="csr") from exc
    if isinstance(key, rsa.RSAPublicKey) and key.key_size >= 2048:
        return
    if isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, _EC_CURVES):
        return
    raise InvalidRequest("csr key must be RSA (2048 bits or more) or ECDSA P-256/P-384/P-521", field="csr")


@router.get("/<tenant_id>/certificates")
def list_certificates(tenant_id: str, limit: Limit = DEFAULT_LIMIT, next_token: NextToken = None) -> dict[str, Any]:
    tenant_in_scope(router, tenant_id, auth.CERT_READ)
    items = CertificateModel.query(tenant_id, CertificateModel.sk.startswith("CERT#"))
    page, token = paginate(items, lambda c: c.serial, limit, next_token)
    return page_body([_cert(c) for c in page], token)


@router.post("/<tenant_id>/certificates")
def issue_certificate(tenant_id: str, body: CertificateIssue) -> Response[dict[str, Any]]:
    """Sign a service's CSR. Identity (tenant, service) comes from the path and body, never the CSR."""
    who, tenant = tenant_in_scope(router, tenant_id, auth.CERT_WRITE)
    rt = runtime()
    rt.tenants.require_usable(tenant_id)
    csr_pem = body.csr.encode("utf-8", errors="replace")
    _check_csr_key(csr_pem)

    def create() -> dict[str, Any]:
        rt.audit.ensure_writable()
        ca = certificate_authority()
        cert = ca.sign_client_csr(csr_pem, tenant_id, body.service_id, body.validity_days)
        item = record_certificate(rt, tenant_id, body.service_id, cert)
        audit(router, who, tenant_id=tenant_id, account_id=tenant.account_id, operation="IssueCertificate",
              kind="security", object_id=item.serial, details={"service_id": body.service_id})
        out = _cert(item)
        out.update(
            spiffe_id=ca.spiffe_id(tenant_id, body.service_id),
            certificate_pem=cert.public_bytes(serialization.Encoding.PEM).decode(),
            ca_pem=ca.cert_pem.decode(),
        )
        return out

    return json_response(201, idempotent(router, who, "issue_certificate", body.model_dump(), create))


@router.post("/<tenant_id>/certificates/<serial>/revoke")
def revoke_certificate(tenant_id: str, serial: str, body: CertificateRevoke) -> dict[str, Any]:
    """Revoke at once; the KMIP server refuses the certificate after its next epoch check (≤ 5 s)."""
    who, tenant = tenant_in_scope(router, tenant_id, auth.CERT_WRITE)
    check_id(serial, SERIAL)
    rt = runtime()
    try:
        item = CertificateModel.get(tenant_id, CertificateModel.sort_key(serial))
    except CertificateModel.DoesNotExist:
        raise NotFound("no such certificate") from None
    if item.revoked_at is not None:
        raise WrongState("the certificate is revoked already")
    rt.audit.ensure_writable()
    item.update(actions=[CertificateModel.revoked_at.set(rt.clock.now()),
                         CertificateModel.revoked_reason.set(body.reason or "revoked through the API")])
    rt.tenants.bump_epoch(tenant_id)
    rt.keyring.invalidate(tenant_id)
    audit(router, who, tenant_id=tenant_id, account_id=tenant.account_id, operation="RevokeCertificate",
          kind="security", object_id=serial, reason=body.reason, details={"service_id": item.service_id})
    return _cert(item)


@ca_router.get("/ca")
def ca_bundle() -> dict[str, Any]:
    """The deployment's CA certificate (PEM): KMIP clients trust the server with it."""
    principal(ca_router)
    ca = certificate_authority()
    return {"trust_domain": ca.trust_domain, "ca_pem": ca.cert_pem.decode()}
