"""``/v1/tenants/<id>``: one tenant — read, disable/enable, delete (crypto-shredding), dashboard, services."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from aws_lambda_powertools.event_handler.api_gateway import Router

from openkcm.api import auth
from openkcm.api.context import audit, require_mfa, runtime, tenant_in_scope
from openkcm.api.models import TenantDelete, TenantDisable, TenantEnable
from openkcm.api.routes.common import iso, tenant_summary
from openkcm.domain.tenants import DELETED, DISABLED, FAILED, READY
from openkcm.errors import ConcurrentUpdate, InvalidRequest, WrongState
from openkcm.ops import audit as audit_ops
from openkcm.ops import events, rotation
from openkcm.storage import CertificateModel, ConditionFailed
from openkcm.storage.models import ProvisioningModel, condition_guard

router = Router()

DASHBOARD_DAYS = 30
SERVICES_DAYS = 366


@router.get("/<tenant_id>")
def get_tenant(tenant_id: str) -> dict[str, Any]:
    _, tenant = tenant_in_scope(router, tenant_id, auth.TENANT_READ)
    return tenant_summary(tenant)


@router.post("/<tenant_id>/disable")
def disable_tenant(tenant_id: str, body: TenantDisable) -> dict[str, Any]:
    """Disable at once: every KMIP and API key operation of the tenant fails until it is enabled."""
    who, tenant = tenant_in_scope(router, tenant_id, auth.TENANT_WRITE)
    if tenant.status not in (READY, FAILED):
        raise WrongState(f"a {tenant.status} tenant cannot be disabled", status=tenant.status)
    runtime().audit.ensure_writable()
    tenant = runtime().tenants.set_status(tenant_id, DISABLED, body.reason or "disabled through the API")
    runtime().keyring.invalidate(tenant_id)
    events.publish(runtime(), events.TENANT_DISABLED, tenant_id, reason="disabled")
    audit(router, who, tenant_id=tenant_id, account_id=tenant.account_id, operation="DisableTenant",
          kind="lifecycle", reason=body.reason)
    return tenant_summary(runtime().tenants.get(tenant_id))


@router.post("/<tenant_id>/enable")
def enable_tenant(tenant_id: str, body: TenantEnable) -> dict[str, Any]:
    who, tenant = tenant_in_scope(router, tenant_id, auth.TENANT_WRITE)
    if tenant.status != DISABLED:
        raise WrongState(f"only a Disabled tenant can be enabled (this one is {tenant.status})", status=tenant.status)
    runtime().audit.ensure_writable()
    runtime().tenants.set_status(tenant_id, READY)
    audit(router, who, tenant_id=tenant_id, account_id=tenant.account_id, operation="EnableTenant", kind="lifecycle")
    return tenant_summary(runtime().tenants.get(tenant_id))


@router.delete("/<tenant_id>")
def delete_tenant(tenant_id: str, body: TenantDelete) -> dict[str, Any]:
    """Crypto-shredding (DECISIONS 8). The tenant is disabled at once; after the retention period (default
    ``shred_retention_days``, 0 = now) every L2 version is destroyed and a signed tombstone written, which
    makes all of its objects unrecoverable. ``confirm`` must repeat the tenant id."""
    who, tenant = tenant_in_scope(router, tenant_id, auth.TENANT_DELETE)
    if body.confirm != tenant_id:
        raise InvalidRequest("confirm must repeat the tenant id exactly", field="confirm")
    if tenant.status == DELETED:
        raise WrongState("the tenant is deleted already", status=tenant.status)
    if tenant.key_mode == "hyok":  # shredding destroys a HYOK key chain: the same bar as changing it
        require_mfa(router, who, "deleting a HYOK tenant", tenant.account_id, tenant_id=tenant_id)
    rt = runtime()
    retention = float(rt.settings.shred_retention_days if body.retention_days is None else body.retention_days)
    now = rt.clock.now()
    shred_after = now + timedelta(days=retention)
    rt.audit.ensure_writable()
    reason = "deleted through the API" + ("" if retention else "; crypto-shredded at once")
    # The deletion is recorded before the status says so: a restore in between then cannot take the tenant
    # for one it must finish, and the shred schedule finds every deleted tenant.
    _record_deletion_request(tenant_id, tenant.account_id, now, shred_after)
    rt.tenants.set_status(tenant_id, DELETED, reason)
    rt.keyring.invalidate(tenant_id)
    events.publish(rt, events.TENANT_DISABLED, tenant_id, reason="deleted")
    audit(
        router, who, tenant_id=tenant_id, account_id=tenant.account_id, operation="DeleteTenant", kind="lifecycle",
        details={"retention_days": f"{retention:g}", "shred_after": shred_after.isoformat()},
    )
    out = tenant_summary(rt.tenants.get(tenant_id))
    out.update(retention_days=retention, shred_after=shred_after.isoformat(), tombstone=None)
    if retention == 0:
        # the rotation feature owns destroying: every L2 version, the signed tombstone, the notification
        out["tombstone"] = rotation.shred_tenant(rt, tenant_id, actor=who.subject)
    return out


def _record_deletion_request(tenant_id: str, account_id: str, now: datetime, shred_after: datetime) -> None:
    """Where the rotation schedule looks for tenants due for shredding (``ProvisioningModel.shred_after``)."""
    try:
        progress = ProvisioningModel.get(tenant_id, ProvisioningModel.SORT_KEY)
    except ProvisioningModel.DoesNotExist:
        progress = ProvisioningModel(tenant_id, customer=account_id, created_at=now, updated_at=now)
        try:
            with condition_guard():
                progress.save(condition=ProvisioningModel.tenant_id.does_not_exist())
        except ConditionFailed:
            progress = ProvisioningModel.get(tenant_id, ProvisioningModel.SORT_KEY)
    try:
        with condition_guard():
            progress.update(actions=[ProvisioningModel.deleted_at.set(now), ProvisioningModel.shred_after.set(shred_after),
                                     ProvisioningModel.updated_at.set(now)])
    except ConditionFailed:
        raise ConcurrentUpdate("the tenant's deletion record changed meanwhile; retry") from None


@router.get("/<tenant_id>/dashboard")
def dashboard(tenant_id: str) -> dict[str, Any]:
    """Status, region, master key mode and state, L2 versions, connected services, key operations per day."""
    _, tenant = tenant_in_scope(router, tenant_id, auth.TENANT_READ)
    rt = runtime()
    versions = [
        {
            "version": int(r.l2_version),
            "state": r.state,
            "parent": r.parent_kind,
            "current": int(r.l2_version) == int(tenant.current_l2_version or 0),
            "created_at": iso(r.created_at),
            "retired_at": iso(r.retired_at),
            "destroyed_at": iso(r.destroyed_at),
        }
        for r in rt.keyring.records(tenant_id)
    ]
    figures = audit_ops.usage(rt, tenant_id, days=DASHBOARD_DAYS)  # the audit feature owns the counters
    return {
        "tenant": tenant_summary(tenant),
        "status": tenant.status,
        "region": tenant.region,
        "key_mode": tenant.key_mode,
        "master_key": {"mode": tenant.key_mode, "state": tenant.l1_state, "reason": tenant.l1_reason},
        "l2_versions": versions,
        "services": [_service(s) for s in figures["services"]],
        "operations_per_day": figures["per_day"],
        "operations_by_type": figures["per_operation"],
    }


def _service(summary: dict[str, Any]) -> dict[str, Any]:
    return {"service_id": summary["service"], "last_seen": summary["last_seen"] or None,
            "operations": summary["operations"]}


@router.get("/<tenant_id>/services")
def list_services(tenant_id: str) -> dict[str, Any]:
    """Services of the tenant: those holding a certificate and those seen on KMIP, with last use."""
    tenant_in_scope(router, tenant_id, auth.CERT_READ)
    services: dict[str, dict[str, Any]] = {}
    for cert in CertificateModel.query(tenant_id, CertificateModel.sk.startswith("CERT#")):
        entry = services.setdefault(cert.service_id, {"service_id": cert.service_id, "certificates": 0,
                                                     "active_certificates": 0, "last_seen": None, "operations": 0})
        entry["certificates"] += 1
        entry["active_certificates"] += 0 if cert.revoked_at else 1
    for seen in audit_ops.usage(runtime(), tenant_id, days=SERVICES_DAYS)["services"]:
        entry = services.setdefault(seen["service"], {"service_id": seen["service"], "certificates": 0,
                                                      "active_certificates": 0, "last_seen": None, "operations": 0})
        entry["operations"] = seen["operations"]
        entry["last_seen"] = seen["last_seen"] or None
    return {"items": sorted(services.values(), key=lambda s: s["service_id"]), "next_token": None}
