"""``/v1/tenants/<id>/rotate`` and ``/rotation-policy``: rotate the tenant's L2 key now; read and set
the rotation period the schedule follows."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.event_handler.api_gateway import Router

from openkcm.api import auth
from openkcm.api.context import audit, runtime, tenant_in_scope
from openkcm.api.models import RotateNow, RotationPolicy
from openkcm.errors import ConcurrentUpdate
from openkcm.ops import rotation
from openkcm.storage import ConditionFailed, TenantModel
from openkcm.storage.models import condition_guard

router = Router()


@router.post("/<tenant_id>/rotate")
def rotate_now(tenant_id: str, body: RotateNow) -> dict[str, Any]:
    """Add a new L2 version under the current parent and make it current. Old versions stay readable."""
    who, _ = tenant_in_scope(router, tenant_id, auth.ROTATION_WRITE)
    # the rotation feature's use case: new version, audit record with the caller as actor, key_rotation event
    version = rotation.rotate_tenant(runtime(), tenant_id, actor=who.subject)
    return {"tenant_id": tenant_id, "current_l2_version": version}


@router.get("/<tenant_id>/rotation-policy")
def get_policy(tenant_id: str) -> dict[str, Any]:
    _, tenant = tenant_in_scope(router, tenant_id, auth.ROTATION_READ)
    return {"tenant_id": tenant_id, "rotation_period_days": int(tenant.rotation_period_days or 0)}


@router.put("/<tenant_id>/rotation-policy")
def set_policy(tenant_id: str, body: RotationPolicy) -> dict[str, Any]:
    who, tenant = tenant_in_scope(router, tenant_id, auth.ROTATION_WRITE)
    rt = runtime()
    rt.audit.ensure_writable()
    try:
        with condition_guard():
            tenant.update(actions=[TenantModel.rotation_period_days.set(body.rotation_period_days),
                                   TenantModel.updated_at.set(rt.clock.now())])
    except ConditionFailed:
        raise ConcurrentUpdate("tenant changed meanwhile; retry") from None
    audit(router, who, tenant_id=tenant_id, account_id=tenant.account_id, operation="SetRotationPolicy",
          details={"rotation_period_days": str(body.rotation_period_days)})
    return {"tenant_id": tenant_id, "rotation_period_days": body.rotation_period_days}
