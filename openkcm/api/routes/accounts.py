"""``/v1/accounts``: accounts, the tenants of an account, and an account's notifications."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.api_gateway import Router

from openkcm.api import auth
from openkcm.api.context import authorize, check_id, idempotent, page_body, paginate, principal, runtime
from openkcm.api.errors import json_response, optional_ops
from openkcm.api.models import TenantCreate
from openkcm.api.routes.common import DEFAULT_LIMIT, Limit, NextToken, iso, tenant_summary
from openkcm.domain.tenants import ACCOUNT_PATTERN, is_digest_tenant_id
from openkcm.errors import InvalidRequest, NotFound
from openkcm.ops.tenants import create_platform_tenant
from openkcm.storage import AccountModel

router = Router()


def _account(account: Any) -> dict[str, Any]:
    return {"account_id": account.account_id, "name": account.name, "status": account.status,
            "created_at": iso(account.created_at)}


def _scoped_account(account_id: str, permission: str) -> tuple[auth.Principal, str]:
    who = principal(router)
    check_id(account_id, ACCOUNT_PATTERN)
    authorize(router, who, permission, account_id)
    return who, account_id


@router.get("/")
def list_accounts(limit: Limit = DEFAULT_LIMIT, next_token: NextToken = None) -> dict[str, Any]:
    """Accounts the caller can see: its own, or every account for a platform operator."""
    who = principal(router)
    if who.is_operator:
        accounts: list[Any] = list(AccountModel.scan())
    else:
        try:
            accounts = [AccountModel.get(who.account_id)]
        except AccountModel.DoesNotExist:
            accounts = []
    page, token = paginate(accounts, lambda a: a.account_id, limit, next_token)
    return page_body([_account(a) for a in page], token)


@router.get("/<account_id>")
def get_account(account_id: str) -> dict[str, Any]:
    _scoped_account(account_id, auth.TENANT_READ)
    try:
        account = AccountModel.get(account_id)
    except AccountModel.DoesNotExist:
        raise NotFound("no such account") from None
    body = _account(account)
    body["tenant_count"] = sum(1 for _ in runtime().tenants.list_for_account(account_id))
    return body


@router.get("/<account_id>/tenants")
def list_tenants(account_id: str, limit: Limit = DEFAULT_LIMIT, next_token: NextToken = None) -> dict[str, Any]:
    _scoped_account(account_id, auth.TENANT_READ)
    tenants = runtime().tenants.list_for_account(account_id)
    page, token = paginate(tenants, lambda t: t.tenant_id, limit, next_token)
    return page_body([tenant_summary(t) for t in page], token)


@router.post("/<account_id>/tenants")
def create_tenant(account_id: str, body: TenantCreate) -> Response[dict[str, Any]]:
    """Create an additional platform-managed tenant (L2 version 1 under the platform root key)."""
    who, _ = _scoped_account(account_id, auth.TENANT_WRITE)
    if body.tenant_id and is_digest_tenant_id(body.tenant_id):
        # The marketplace's fallback ids (c- + 20 hex digits): choosing one could block a customer.
        raise InvalidRequest("tenant ids of the form c-<20 hex digits> are reserved", field="tenant_id")

    def create() -> dict[str, Any]:
        tenant = create_platform_tenant(
            runtime(), account_id, tenant_id=body.tenant_id, name=body.name, region=body.region,
            actor=who.subject, source="api",
        )
        return tenant_summary(tenant)

    return json_response(201, idempotent(router, who, "create_tenant", body.model_dump(), create))


@router.get("/<account_id>/notifications")
def list_notifications(account_id: str, limit: Limit = DEFAULT_LIMIT, next_token: NextToken = None) -> dict[str, Any]:
    """Notifications of the account (provisioning, key and security events), newest first."""
    _scoped_account(account_id, auth.NOTIFICATIONS_READ)
    module = optional_ops("openkcm.ops.notifications", "notifications")
    items = list(module.list_notifications(runtime(), account_id))

    def key(item: Any) -> str:
        data = item if isinstance(item, dict) else getattr(item, "__dict__", {})
        digest = hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]
        return f"{data.get('time') or data.get('timestamp') or ''}|{data.get('tenant_id', '')}|{digest}"

    page, token = paginate(items, key, limit, next_token, newest_first=True)
    return page_body([i if isinstance(i, dict) else dict(vars(i)) for i in page], token)
