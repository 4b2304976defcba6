"""Account roles stay in their own account even on a token that is also a platform operator's; changing
or shredding a HYOK tenant needs a multi-factor login whichever route does it."""

from __future__ import annotations

from typing import Any

from openkcm.storage import TenantModel
from tests.api.conftest import claims

OPERATOR = "platform-operator"


def _hyok(tenant_id: str) -> None:
    tenant = TenantModel.get(tenant_id, "TENANT")
    tenant.key_mode = "hyok"
    tenant.save()


def _audited_refusals(api_runtime: Any, tenant_id: str) -> list[dict[str, Any]]:
    from openkcm.domain.audit import read_events

    api_runtime.audit.flush()
    return [e for e in read_events(tenant_id) if e["result"] == "denied"]


def test_an_operator_token_with_an_account_role_has_that_role_only_in_its_account(api, account, make_tenant):
    other = make_tenant("acct-victim")
    mine = make_tenant(account)
    both = claims(account, OPERATOR, "account-admin")
    shred = {"confirm": other.tenant_id, "retention_days": 0}
    reply = api.call("DELETE", f"/v1/tenants/{other.tenant_id}", both, body=shred)
    assert reply.status == 403, reply.text  # the operator role may not delete tenants; account-admin is A's only
    assert api.call("GET", f"/v1/tenants/{other.tenant_id}", both).json()["status"] == "Ready"
    assert api.call("POST", f"/v1/tenants/{other.tenant_id}/rotate", claims(account, OPERATOR, "key-admin"),
                    body={}).status == 403
    assert api.call("GET", f"/v1/tenants/{other.tenant_id}", both).status == 200  # the operator may read
    rotated = api.call("POST", f"/v1/tenants/{mine.tenant_id}/rotate", claims(account, OPERATOR, "key-admin"), body={})
    assert rotated.status == 200, rotated.text  # in its own account the key-admin role still counts


def test_moving_a_hyok_tenant_to_an_aws_key_needs_mfa(api, api_runtime, account, make_tenant, aws_endpoint):
    tenant = make_tenant(account)
    _hyok(tenant.tenant_id)
    keyadmin = claims(account, "key-admin")
    body = {"provider": "aws-kms", "name": "kms", "config": {"region": "us-east-1", "endpoint_url": aws_endpoint},
            "secrets": {"access_key_id": "AKIAEXAMPLE", "secret_access_key": "x" * 40}}
    store = api.call("POST", f"/v1/accounts/{account}/keystores", keyadmin, body=body).json()["keystore_id"]
    link = {"key_ref": "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab",
            "tenant_ids": [tenant.tenant_id]}
    reply = api.call("POST", f"/v1/accounts/{account}/keystores/{store}/link", keyadmin, body=link)
    assert reply.status == 403 and "multi-factor" in reply.json()["message"], reply.text
    assert TenantModel.get(tenant.tenant_id, "TENANT").key_mode == "hyok"
    assert [e["details"]["permission"] for e in _audited_refusals(api_runtime, tenant.tenant_id)] == ["mfa"]


def test_deleting_a_hyok_tenant_needs_mfa(api, account, make_tenant):
    tenant = make_tenant(account)
    _hyok(tenant.tenant_id)
    shred = {"confirm": tenant.tenant_id, "retention_days": 0}
    reply = api.call("DELETE", f"/v1/tenants/{tenant.tenant_id}", claims(account), body=shred)
    assert reply.status == 403 and "multi-factor" in reply.json()["message"], reply.text
    assert TenantModel.get(tenant.tenant_id, "TENANT").status == "Ready"
    done = api.call("DELETE", f"/v1/tenants/{tenant.tenant_id}", claims(account, mfa=True), body=shred)
    assert done.status == 200, done.text
