"""Keystores and the L1 flows through the API against AWS KMS on the moto server: create (secrets in,
never out), test, list keys, link + activate for a tenant (BYOK), return to platform; HYOK MFA rule."""

from __future__ import annotations

import boto3
import pytest

from openkcm.storage import TenantModel
from tests.api.conftest import claims

pytest.importorskip("openkcm.ops.keystores")

SECRET = "wJalrXUtnFEMI-K7MDENG-bPxRfiCYEXAMPLEKEY"


@pytest.fixture
def kms_key(aws_endpoint):
    kms = boto3.client("kms", region_name="us-east-1", endpoint_url=aws_endpoint)
    return kms.create_key(Description="customer L1", KeySpec="SYMMETRIC_DEFAULT")["KeyMetadata"]["Arn"]


def _create(api, account, aws_endpoint, who=None):
    body = {"provider": "aws-kms", "name": "prod kms", "config": {"region": "us-east-1", "endpoint_url": aws_endpoint},
            "secrets": {"access_key_id": "AKIAEXAMPLE", "secret_access_key": SECRET}}
    return api.call("POST", f"/v1/accounts/{account}/keystores", who or claims(account, "key-admin"), body=body)


def test_keystore_crud_test_and_keys(api, account, aws_endpoint, kms_key):
    created = _create(api, account, aws_endpoint)
    assert created.status == 201, created.text
    store = created.json()
    assert store["provider"] == "aws-kms" and store["secrets_set"] is True and SECRET not in created.text
    ks = store["keystore_id"]
    base = f"/v1/accounts/{account}/keystores"
    keyadmin = claims(account, "key-admin")
    listed = api.call("GET", base, claims(account, "auditor")).json()
    assert [k["keystore_id"] for k in listed["items"]] == [ks] and SECRET not in str(listed)
    assert api.call("GET", f"{base}/{ks}", keyadmin).json()["name"] == "prod kms"
    renamed = api.call("PATCH", f"{base}/{ks}", keyadmin, body={"name": "renamed"})
    assert renamed.status == 200 and renamed.json()["name"] == "renamed"
    assert api.call("PATCH", f"{base}/{ks}", keyadmin, body={}).status == 400
    tested = api.call("POST", f"{base}/{ks}/test", keyadmin, body={"key_ref": kms_key})
    assert tested.status == 200, tested.text
    checks = tested.json()["checks"]
    assert checks and all({"name", "ok", "message", "fix"} <= set(c) for c in checks)
    keys = api.call("GET", f"{base}/{ks}/keys", keyadmin)
    assert keys.status == 200, keys.text
    assert kms_key in keys.text
    bad = api.call("POST", base, keyadmin, body={"provider": "aws-kms", "name": "x", "config": {"region": "nowhere"}})
    assert bad.status == 400
    # requests to a customer-chosen endpoint would carry OpenKCM's own signed credentials: AWS KMS hosts only
    for url in ("http://127.0.0.1:9/", "https://kms.us-east-1.amazonaws.com.example.net", "https://attacker.test"):
        ssrf = api.call("POST", base, keyadmin, body={"provider": "aws-kms", "name": "x",
                                                      "config": {"region": "us-east-1", "endpoint_url": url}})
        assert ssrf.status == 400 and ssrf.json()["details"]["field"] == "endpoint_url", (url, ssrf.text)
    for url in ("https://vpce-0a1b2c3d-abcd.kms.eu-central-1.vpce.amazonaws.com", "https://kms.eu-central-1.api.aws",
                "https://KMS.eu-central-1.amazonaws.com:443/"):
        aws = {"region": "eu-central-1", "endpoint_url": url}
        assert api.call("POST", base, keyadmin, body={"provider": "aws-kms", "name": "vpc", "config": aws}).status == 201
    unknown = api.call("POST", base, keyadmin, body={"provider": "vault", "name": "x"})
    assert unknown.status == 400 and unknown.json()["details"]["field"] == "provider"
    assert api.call("DELETE", f"{base}/{ks}", keyadmin).status == 200
    assert api.call("GET", f"{base}/{ks}", keyadmin).status == 404


def test_link_activate_and_return_to_platform(api, account, aws_endpoint, kms_key, make_tenant):
    tenant = make_tenant(account)
    ks = _create(api, account, aws_endpoint).json()["keystore_id"]
    keyadmin = claims(account, "key-admin")
    reply = api.call("POST", f"/v1/accounts/{account}/keystores/{ks}/link", keyadmin,
                     body={"key_ref": kms_key, "tenant_ids": [tenant.tenant_id]})
    assert reply.status == 200, reply.text
    body = reply.json()
    assert body["result"][0]["ok"] is True, body
    assert body["progress"], "the flow reports its progress"
    stored = TenantModel.get(tenant.tenant_id, "TENANT")
    assert stored.key_mode == "byok" and stored.l1_state == "Active" and stored.l1_key_ref.endswith(kms_key)
    other = make_tenant("elsewhere")
    foreign = api.call("POST", f"/v1/accounts/{account}/keystores/{ks}/link", keyadmin,
                       body={"key_ref": kms_key, "tenant_ids": [other.tenant_id]})
    assert foreign.status == 404
    back = api.call("POST", f"/v1/tenants/{tenant.tenant_id}/return-to-platform", keyadmin, body={"confirm": True})
    assert back.status == 200, back.text
    assert TenantModel.get(tenant.tenant_id, "TENANT").key_mode == "platform-managed"
    again = api.call("POST", f"/v1/tenants/{tenant.tenant_id}/return-to-platform", keyadmin, body={"confirm": True})
    assert again.status == 409


def test_hyok_changes_need_mfa(api, account):
    body = {"provider": "pkcs11", "name": "hsm", "config": {}, "secrets": {"pin": "123456"}}
    base = f"/v1/accounts/{account}/keystores"
    refused = api.call("POST", base, claims(account, "key-admin"), body=body)
    assert refused.status == 403 and "mfa" in refused.json()["message"] and "123456" not in refused.text
    # with MFA the request reaches the keystore feature (which judges the configuration itself)
    allowed = api.call("POST", base, claims(account, "key-admin", mfa=True), body=body)
    assert allowed.status != 403, allowed.text


def test_idempotent_keystore_create_keeps_no_digest_of_secrets(api, account, aws_endpoint, api_runtime):
    import hashlib
    import json

    headers = {"idempotency-key": "create-ks-000001"}
    body = {"provider": "aws-kms", "name": "once", "config": {"region": "us-east-1", "endpoint_url": aws_endpoint},
            "secrets": {"access_key_id": "AKIAEXAMPLE", "secret_access_key": SECRET}}
    who = claims(account, "key-admin")
    first = api.call("POST", f"/v1/accounts/{account}/keystores", who, body=body, headers=headers)
    second = api.call("POST", f"/v1/accounts/{account}/keystores", who, body=body, headers=headers)
    assert first.status == second.status == 201 and first.json()["keystore_id"] == second.json()["keystore_id"]
    assert len(api.call("GET", f"/v1/accounts/{account}/keystores", who).json()["items"]) == 1
    table = boto3.client("dynamodb", region_name="us-east-1", endpoint_url=aws_endpoint)
    items = table.scan(TableName=api_runtime.settings.table_name("idempotency"))["Items"]
    dump = json.dumps(items)
    assert SECRET not in dump
    for secret_digest in (hashlib.md5(SECRET.encode()).hexdigest(), hashlib.sha256(SECRET.encode()).hexdigest()):
        assert secret_digest not in dump


def test_aws_trust_template(api, account):
    reply = api.call("GET", f"/v1/accounts/{account}/trust-template/aws", claims(account, "key-admin"),
                     query={"role_name": "OpenKCMAccess",
                            "key_arn": "arn:aws:kms:eu-central-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"})
    assert reply.status == 200, reply.text
    body = reply.json()
    statement = body["role_trust_policy"]["Statement"][0]
    assert statement["Action"] == "sts:AssumeRole" and "sts:ExternalId" in statement["Condition"]["StringEquals"]
    assert body["key_policy_statement"]["Principal"]["AWS"] == "arn:aws:iam::111122223333:role/OpenKCMAccess"
    bad = api.call("GET", f"/v1/accounts/{account}/trust-template/aws", claims(account), query={"key_arn": "nope"})
    assert bad.status == 400 and bad.json()["details"]["field"] == "key_arn"
    assert api.call("GET", f"/v1/accounts/{account}/trust-template/aws", claims("other")).status == 404


def test_the_credential_filter_keeps_a_pkcs11_token_label():
    from openkcm.api.routes.keystores import _safe

    shown = _safe({"config": {"token_label": "hsm-1", "slot": 0}, "session_token": "x", "user_pin": "1234"})
    assert shown == {"config": {"token_label": "hsm-1", "slot": 0}}
