"""``/v1/tenants/<id>/keys``: the tenant's managed objects — metadata only, never material."""

from __future__ import annotations

import json
from typing import Any

from aws_lambda_powertools.event_handler.api_gateway import Router

from openkcm.api import auth
from openkcm.api.context import page_body, paginate, tenant_in_scope
from openkcm.api.routes.common import DEFAULT_LIMIT, Limit, NextToken, iso
from openkcm.storage import ManagedObjectModel

router = Router()

_ALGORITHM = ("Cryptographic Algorithm", "cryptographic_algorithm", "algorithm")
_LENGTH = ("Cryptographic Length", "cryptographic_length", "length")


def _first(attributes: dict[str, Any], names: tuple[str, ...]) -> Any:
    for name in names:
        if name in attributes:
            return attributes[name]
    return None


def _object(item: ManagedObjectModel) -> dict[str, Any]:
    try:
        attributes = json.loads(item.attributes_json or "{}")
    except ValueError:
        attributes = {}
    if not isinstance(attributes, dict):
        attributes = {}
    # Deliberately no "wrapped" and no attribute values beyond the descriptive ones.
    return {
        "object_id": item.object_id,
        "object_type": item.object_type,
        "state": item.state,
        "algorithm": _first(attributes, _ALGORITHM),
        "length": _first(attributes, _LENGTH),
        "names": list(item.names or []),
        "created_by": item.created_by,
        "created_at": iso(item.created_at),
        "updated_at": iso(item.updated_at),
        "last_used_at": iso(item.last_used_at),
        "l2_version": int(item.l2_version or 0),
    }


@router.get("/<tenant_id>/keys")
def list_keys(tenant_id: str, limit: Limit = DEFAULT_LIMIT, next_token: NextToken = None) -> dict[str, Any]:
    tenant_in_scope(router, tenant_id, auth.KEYS_READ)
    items = ManagedObjectModel.of_tenant(tenant_id)
    page, token = paginate(items, lambda o: o.object_id, limit, next_token)
    return page_body([_object(o) for o in page], token)
