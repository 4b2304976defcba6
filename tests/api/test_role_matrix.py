"""Each role x each endpoint, through the real handler: allowed calls are not refused (whatever their
business answer), refused ones answer 403 permission_denied and change nothing."""

from __future__ import annotations

import pytest

from openkcm.storage import TenantModel
from tests.api.conftest import claims

A, K, U, O = "account-admin", "key-admin", "auditor", "platform-operator"
ROLES = (A, K, U, O)
ALL = {A, K, U, O}

# (method, path template, body, roles allowed). {t} = tenant id, {a} = account id.
ENDPOINTS = [
    ("GET", "/v1/accounts/{a}", None, ALL),
    ("GET", "/v1/accounts/{a}/tenants", None, ALL),
    ("POST", "/v1/accounts/{a}/tenants", {"name": "extra"}, {A, O}),
    ("GET", "/v1/accounts/{a}/notifications", None, {A, U, O}),
    ("GET", "/v1/accounts/{a}/keystores", None, ALL),
    ("POST", "/v1/accounts/{a}/keystores", {"provider": "aws-kms", "name": "k", "config": {}}, {A, K}),
    ("POST", "/v1/accounts/{a}/keystores/ks-1/link", {"key_ref": "k", "tenant_ids": ["{t}"]}, {A, K}),
    ("POST", "/v1/accounts/{a}/keystores/ks-1/test", {}, {A, K}),
    ("GET", "/v1/accounts/{a}/keystores/ks-1", None, ALL),
    ("GET", "/v1/accounts/{a}/trust-template/aws", None, ALL),
    ("PATCH", "/v1/accounts/{a}/keystores/ks-1", {"name": "n"}, {A, K}),
    ("DELETE", "/v1/accounts/{a}/keystores/ks-1", None, {A, K}),
    ("GET", "/v1/accounts/{a}/keystores/ks-1/keys", None, ALL),
    ("POST", "/v1/accounts/{a}/keystores/ks-1/import", {}, {A, K}),
    ("POST", "/v1/accounts/{a}/keystores/ks-1/import/complete",
     {"key_ref": "k", "import_token": "dA==", "encrypted_key_material": "dA=="}, {A, K}),
    ("GET", "/v1/tenants/{t}", None, ALL),
    ("GET", "/v1/tenants/{t}/dashboard", None, ALL),
    ("GET", "/v1/tenants/{t}/services", None, ALL),
    ("POST", "/v1/tenants/{t}/disable", {}, {A, O}),
    ("POST", "/v1/tenants/{t}/enable", {}, {A, O}),
    ("DELETE", "/v1/tenants/{t}", {"confirm": "{t}"}, {A}),
    ("GET", "/v1/tenants/{t}/certificates", None, ALL),
    ("POST", "/v1/tenants/{t}/certificates/abc/revoke", {}, {A}),
    ("GET", "/v1/tenants/{t}/keys", None, ALL),
    ("POST", "/v1/tenants/{t}/rotate", {}, {A, K}),
    ("GET", "/v1/tenants/{t}/rotation-policy", None, ALL),
    ("PUT", "/v1/tenants/{t}/rotation-policy", {"rotation_period_days": 45}, {A, K}),
    ("GET", "/v1/tenants/{t}/audit", None, {A, U, O}),
    ("GET", "/v1/tenants/{t}/audit/export", None, {A, U, O}),
    ("GET", "/v1/tenants/{t}/audit/verify", None, {A, U, O}),
    ("GET", "/v1/tenants/{t}/audit/compliance-report", None, {A, U, O}),
    ("POST", "/v1/tenants/{t}/return-to-platform", {"confirm": True}, {A, K}),
    ("POST", "/v1/tenants/{t}/certificates", {"service_id": "svc", "csr": "-" * 64}, {A}),
    ("GET", "/v1/ca", None, ALL),
]


@pytest.fixture(scope="module")
def shared(api_runtime):
    from openkcm.ops.tenants import create_platform_tenant

    account = "matrix-account"
    return account, create_platform_tenant(api_runtime, account, actor="test", source="cli")


def _fill(value, tenant_id: str, account_id: str):
    if isinstance(value, str):
        return value.replace("{t}", tenant_id).replace("{a}", account_id)
    if isinstance(value, list):
        return [_fill(v, tenant_id, account_id) for v in value]
    if isinstance(value, dict):
        return {k: _fill(v, tenant_id, account_id) for k, v in value.items()}
    return value


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize(("method", "template", "body", "allowed"), ENDPOINTS,
                         ids=[f"{m} {p}" for m, p, _, _ in ENDPOINTS])
def test_role_matrix(api, shared, make_tenant, role, method, template, body, allowed):
    account, tenant = shared
    if role in allowed and method != "GET":
        tenant = make_tenant(account)  # a state-changing call that goes through gets its own tenant
    before = TenantModel.get(tenant.tenant_id, "TENANT")
    who = claims("" if role == O else account, role)
    reply = api.call(method, _fill(template, tenant.tenant_id, account), who, body=_fill(body, tenant.tenant_id, account))
    if role in allowed:
        assert reply.status != 403, reply.text
        assert reply.status < 500 or reply.status == 501, reply.text  # 501: a parallel feature not installed
    else:
        assert reply.status == 403, reply.text
        assert reply.json()["error"] == "permission_denied"
        after = TenantModel.get(tenant.tenant_id, "TENANT")
        assert (after.status, after.current_l2_version, after.rotation_period_days) == (
            before.status, before.current_l2_version, before.rotation_period_days)


def test_token_without_a_role_or_account_is_refused(api, account, make_tenant):
    tenant = make_tenant(account)
    nobody = {"sub": "x", "openkcm:account": account, "openkcm:roles": ["superuser"]}
    assert api.call("GET", f"/v1/tenants/{tenant.tenant_id}", nobody).status == 403
    no_account = {"sub": "x", "openkcm:roles": ["account-admin"]}
    assert api.call("GET", f"/v1/tenants/{tenant.tenant_id}", no_account).status == 403
    assert api.call("GET", f"/v1/tenants/{tenant.tenant_id}", {"openkcm:account": account}).status == 401
