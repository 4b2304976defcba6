"""Query parameters and serialisers the routers share."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from aws_lambda_powertools.event_handler.openapi.params import Query

from openkcm.api.context import DEFAULT_PAGE, MAX_PAGE

Limit = Annotated[int, Query(ge=1, le=MAX_PAGE, description="page size")]
NextToken = Annotated[str | None, Query(max_length=512, description="cursor from the previous page")]
DEFAULT_LIMIT = DEFAULT_PAGE


def iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def tenant_summary(tenant: Any) -> dict[str, Any]:
    return {
        "tenant_id": tenant.tenant_id,
        "account_id": tenant.account_id,
        "name": tenant.name,
        "region": tenant.region,
        "status": tenant.status,
        "status_reason": tenant.status_reason,
        "key_mode": tenant.key_mode,
        "l1_state": tenant.l1_state,
        "l1_reason": tenant.l1_reason,
        "l1_key_ref": tenant.l1_key_ref,
        "current_l2_version": int(tenant.current_l2_version or 0),
        "rotation_period_days": int(tenant.rotation_period_days or 0),
        "created_at": iso(tenant.created_at),
        "updated_at": iso(tenant.updated_at),
    }
