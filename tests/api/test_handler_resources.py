"""Every resource through the real Lambda handler with API Gateway v2 events (moto for DynamoDB)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from openkcm.domain.audit import read_events
from openkcm.storage import CertificateModel, ManagedObjectModel, TenantModel, UsageModel
from tests.api.conftest import claims


def _csr(key: ec.EllipticCurvePrivateKey | None = None) -> str:
    key = key or ec.generate_private_key(ec.SECP256R1())
    csr = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mongod")])
    ).sign(key, hashes.SHA256())
    return csr.public_bytes(serialization.Encoding.PEM).decode()


def _api_events(tenant_id: str, operation: str) -> list[dict]:
    return [e for e in read_events(tenant_id, since="1970-01-01T00:00:00+00:00") if e["source"] == "api" and e["operation"] == operation]


def test_health_and_openapi_need_no_token(api):
    assert api.call("GET", "/v1/health").json()["status"] == "ok"
    doc = api.call("GET", "/v1/openapi.json").json()
    assert doc["openapi"].startswith("3.1")
    paths = doc["paths"]
    for path in ("/v1/accounts/{account_id}/tenants", "/v1/tenants/{tenant_id}/certificates",
                 "/v1/tenants/{tenant_id}/audit", "/v1/accounts/{account_id}/keystores"):
        assert path in paths
    schema = doc["components"]["schemas"]["TenantCreate"]
    assert schema["additionalProperties"] is False
    create = doc["paths"]["/v1/accounts/{account_id}/tenants"]["post"]["responses"]
    assert "201" in create and "200" not in create and "422" not in create
    assert create["400"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Error"}
    assert doc["paths"]["/v1/health"]["get"]["security"] == [] and doc["security"] == [{"bearer": []}]
    export = doc["paths"]["/v1/tenants/{tenant_id}/audit/export"]["get"]["responses"]["200"]
    assert list(export["content"]) == ["application/x-ndjson"]


def test_protected_route_without_claims_is_401(api):
    reply = api.call("GET", "/v1/accounts")
    assert reply.status == 401
    assert reply.json()["error"] == "unauthenticated"


def test_tenant_lifecycle_and_pagination(api, account):
    admin = claims(account, "account-admin")
    created = []
    for i in range(5):
        reply = api.call("POST", f"/v1/accounts/{account}/tenants", admin, body={"name": f"t{i}", "region": "eu-west-1"})
        assert reply.status == 201, reply.text
        body = reply.json()
        assert body["status"] == "Ready" and body["current_l2_version"] == 1 and body["region"] == "eu-west-1"
        created.append(body["tenant_id"])
    seen, token, pages = [], None, 0
    while True:
        query = {"limit": "2", **({"next_token": token} if token else {})}
        page = api.call("GET", f"/v1/accounts/{account}/tenants", admin, query=query).json()
        seen += [t["tenant_id"] for t in page["items"]]
        pages += 1
        token = page["next_token"]
        if not token:
            break
    assert pages == 3 and sorted(seen) == sorted(created) and len(set(seen)) == 5
    tenant_id = created[0]
    assert api.call("GET", f"/v1/tenants/{tenant_id}", admin).json()["name"] == "t0"
    assert api.call("GET", f"/v1/accounts/{account}", admin).json()["tenant_count"] == 5
    accounts = api.call("GET", "/v1/accounts", admin).json()["items"]
    assert [a["account_id"] for a in accounts] == [account]

    reply = api.call("POST", f"/v1/tenants/{tenant_id}/disable", admin, body={"reason": "incident 42"})
    assert reply.status == 200 and reply.json()["status"] == "Disabled"
    assert api.call("POST", f"/v1/tenants/{tenant_id}/disable", admin, body={}).status == 409
    assert api.call("POST", f"/v1/tenants/{tenant_id}/rotate", admin, body={}).json()["error"] == "tenant_disabled"
    assert api.call("POST", f"/v1/tenants/{tenant_id}/enable", admin, body={}).json()["status"] == "Ready"
    events = _api_events(tenant_id, "DisableTenant")
    assert len(events) == 1 and events[0]["actor"] == "user-account-admin" and events[0]["reason"] == "incident 42"
    assert events[0]["actor_role"] == "account-admin" and events[0]["client_address"] == "192.0.2.10"
    assert len(_api_events(tenant_id, "EnableTenant")) == 1


def test_bad_next_token_is_400(api, account, make_tenant):
    make_tenant(account)
    reply = api.call("GET", f"/v1/accounts/{account}/tenants", claims(account), query={"next_token": "!!nope"})
    assert reply.status == 400 and reply.json()["details"]["field"] == "next_token"


def test_delete_needs_confirmation_then_disables_and_records_retention(api, account, make_tenant, api_runtime):
    tenant = make_tenant(account)
    admin = claims(account)
    reply = api.call("DELETE", f"/v1/tenants/{tenant.tenant_id}", admin, body={"confirm": "something-else"})
    assert reply.status == 400 and reply.json()["details"]["field"] == "confirm"
    assert api.call("DELETE", f"/v1/tenants/{tenant.tenant_id}", admin, body={}).status == 400
    reply = api.call("DELETE", f"/v1/tenants/{tenant.tenant_id}", admin, body={"confirm": tenant.tenant_id})
    assert reply.status == 200, reply.text
    body = reply.json()
    assert body["status"] == "Deleted" and body["retention_days"] == 7 and body["tombstone"] is None
    # disabled at once: key operations refused, L2 still present until the retention has passed
    assert api.call("POST", f"/v1/tenants/{tenant.tenant_id}/rotate", admin, body={}).status == 403
    assert [r.state for r in api_runtime.keyring.records(tenant.tenant_id)] == ["active"]
    event = _api_events(tenant.tenant_id, "DeleteTenant")[0]
    assert event["details"]["retention_days"] == "7" and event["kind"] == "lifecycle"
    # the deletion request is where the rotation schedule looks for tenants due for shredding
    from openkcm.storage.models import ProvisioningModel

    progress = ProvisioningModel.get(tenant.tenant_id, ProvisioningModel.SORT_KEY)
    assert (progress.shred_after - progress.deleted_at).days == 7 and progress.shredded_at is None
    assert progress.shred_after.isoformat() == body["shred_after"]


def test_delete_with_zero_retention_crypto_shreds_now(api, account, make_tenant, api_runtime):
    tenant = make_tenant(account)
    api_runtime.keyring.rotate(tenant.tenant_id)
    reply = api.call("DELETE", f"/v1/tenants/{tenant.tenant_id}", claims(account),
                     body={"confirm": tenant.tenant_id, "retention_days": 0})
    assert reply.status == 200, reply.text
    tombstone = reply.json()["tombstone"]
    assert tombstone["l2_versions_destroyed"] == [1, 2] and tombstone["signature_valid"] is True
    records = api_runtime.keyring.records(tenant.tenant_id)
    assert {r.state for r in records} == {"destroyed"} and all(r.wrapped is None for r in records)
    shred = [e for e in read_events(tenant.tenant_id, since="1970-01-01T00:00:00+00:00") if e["operation"] == "CryptoShred"]
    assert shred and shred[0]["actor"] == "user-account-admin"


def test_dashboard_shows_versions_services_and_daily_operations(api, account, make_tenant, api_runtime):
    tenant = make_tenant(account, region="eu-central-1")
    api_runtime.keyring.rotate(tenant.tenant_id)
    today = datetime.now(UTC).date().isoformat()
    UsageModel(tenant.tenant_id, f"U#{today}#Get#mongod-1", day=today, operation="Get", service="mongod-1",
               count=7, last_seen=f"{today}T10:00:00+00:00").save()
    UsageModel(tenant.tenant_id, f"U#{today}#Encrypt#mongod-1", day=today, operation="Encrypt", service="mongod-1",
               count=3, last_seen=f"{today}T11:00:00+00:00").save()
    body = api.call("GET", f"/v1/tenants/{tenant.tenant_id}/dashboard", claims(account, "auditor")).json()
    assert body["status"] == "Ready" and body["region"] == "eu-central-1" and body["key_mode"] == "platform-managed"
    assert body["master_key"]["state"] == "Inactive"
    assert [(v["version"], v["current"]) for v in body["l2_versions"]] == [(1, False), (2, True)]
    assert body["services"] == [{"service_id": "mongod-1", "last_seen": f"{today}T11:00:00+00:00", "operations": 10}]
    assert [d for d in body["operations_per_day"] if d["count"]] == [{"day": today, "count": 10}]
    assert len(body["operations_per_day"]) == 30 and body["operations_by_type"] == {"Encrypt": 3, "Get": 7}
    assert "wrapped" not in json.dumps(body)


def test_certificates_issue_list_revoke_and_ca(api, account, make_tenant, api_runtime):
    tenant = make_tenant(account)
    admin = claims(account)
    reply = api.call("POST", f"/v1/tenants/{tenant.tenant_id}/certificates", admin,
                     body={"service_id": "mongod-1", "csr": _csr(), "validity_days": 30})
    assert reply.status == 201, reply.text
    issued = reply.json()
    cert = x509.load_pem_x509_certificate(issued["certificate_pem"].encode())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [issued["spiffe_id"]]
    assert issued["spiffe_id"].endswith(f"/tenant/{tenant.tenant_id}/service/mongod-1")
    assert "PRIVATE KEY" not in reply.text
    listed = api.call("GET", f"/v1/tenants/{tenant.tenant_id}/certificates", admin).json()["items"]
    assert [c["serial"] for c in listed] == [issued["serial"]] and listed[0]["status"] == "active"
    services = api.call("GET", f"/v1/tenants/{tenant.tenant_id}/services", admin).json()["items"]
    assert services[0]["service_id"] == "mongod-1" and services[0]["active_certificates"] == 1

    epoch_before = int(TenantModel.get(tenant.tenant_id, "TENANT").epoch)
    reply = api.call("POST", f"/v1/tenants/{tenant.tenant_id}/certificates/{issued['serial']}/revoke", admin,
                     body={"reason": "host decommissioned"})
    assert reply.status == 200 and reply.json()["status"] == "revoked"
    stored = CertificateModel.get(tenant.tenant_id, CertificateModel.sort_key(issued["serial"]))
    assert stored.revoked_at is not None
    assert int(TenantModel.get(tenant.tenant_id, "TENANT").epoch) == epoch_before + 1
    again = api.call("POST", f"/v1/tenants/{tenant.tenant_id}/certificates/{issued['serial']}/revoke", admin, body={})
    assert again.status == 409
    assert api.call("POST", f"/v1/tenants/{tenant.tenant_id}/certificates/ffff/revoke", admin, body={}).status == 404
    assert [e["object_id"] for e in _api_events(tenant.tenant_id, "RevokeCertificate")] == [issued["serial"]]
    assert len(_api_events(tenant.tenant_id, "IssueCertificate")) == 1
    ca = api.call("GET", "/v1/ca", claims(account, "auditor")).json()
    assert ca["ca_pem"] == api_runtime.certificate_authority().cert_pem.decode()


def test_certificate_request_validation(api, account, make_tenant):
    tenant = make_tenant(account)
    path = f"/v1/tenants/{tenant.tenant_id}/certificates"
    reply = api.call("POST", path, claims(account), body={"service_id": "a b", "csr": _csr()})
    assert reply.status == 400 and reply.json()["details"]["field"] == "service_id"
    bogus = "-----BEGIN CERTIFICATE REQUEST-----\n" + "A" * 80 + "\n-----END CERTIFICATE REQUEST-----\n"
    reply = api.call("POST", path, claims(account), body={"service_id": "svc", "csr": bogus})
    assert reply.status == 400 and reply.json()["details"]["field"] == "csr"


def test_keys_list_metadata_only(api, account, make_tenant, api_runtime):
    tenant = make_tenant(account)
    now = datetime.now(UTC)
    for i in range(3):
        ManagedObjectModel(
            tenant.tenant_id, f"obj-{i}", object_type="SYMMETRIC_KEY", state="ACTIVE", wrapped=b"\x01secret-blob",
            l2_version=1, attributes_json=json.dumps({"Cryptographic Algorithm": "AES", "Cryptographic Length": 256}),
            names=[f"key-{i}"], created_by="mongod-1", created_at=now, updated_at=now,
        ).save()
    page = api.call("GET", f"/v1/tenants/{tenant.tenant_id}/keys", claims(account, "auditor"), query={"limit": "2"})
    body = page.json()
    assert [k["object_id"] for k in body["items"]] == ["obj-0", "obj-1"] and body["next_token"]
    assert body["items"][0]["algorithm"] == "AES" and body["items"][0]["length"] == 256
    assert "wrapped" not in page.text and "secret-blob" not in page.text
    rest = api.call("GET", f"/v1/tenants/{tenant.tenant_id}/keys", claims(account, "auditor"),
                    query={"next_token": body["next_token"]}).json()
    assert [k["object_id"] for k in rest["items"]] == ["obj-2"] and rest["next_token"] is None


def test_rotation_now_and_policy(api, account, make_tenant, api_runtime):
    tenant = make_tenant(account)
    keyadmin = claims(account, "key-admin")
    reply = api.call("POST", f"/v1/tenants/{tenant.tenant_id}/rotate", keyadmin, body={})
    assert reply.status == 200 and reply.json()["current_l2_version"] == 2
    assert [int(r.l2_version) for r in api_runtime.keyring.records(tenant.tenant_id)] == [1, 2]
    event = next(e for e in read_events(tenant.tenant_id, since="1970-01-01T00:00:00+00:00")
                 if e["operation"] == "RotateL2")
    assert event["l2_version"] == 2 and event["actor"] == "user-key-admin"
    assert api.call("POST", f"/v1/tenants/{tenant.tenant_id}/rotate", keyadmin, body={"reason": "x"}).status == 400
    path = f"/v1/tenants/{tenant.tenant_id}/rotation-policy"
    assert api.call("GET", path, keyadmin).json()["rotation_period_days"] == 90
    assert api.call("PUT", path, keyadmin, body={"rotation_period_days": 30}).status == 200
    assert api.call("GET", path, keyadmin).json()["rotation_period_days"] == 30
    bad = api.call("PUT", path, keyadmin, body={"rotation_period_days": 0})
    assert bad.status == 400 and bad.json()["details"]["field"] == "rotation_period_days"
    assert _api_events(tenant.tenant_id, "SetRotationPolicy")[0]["details"] == {"rotation_period_days": "30"}


def test_audit_query_filters_paginates_and_exports(api, account, make_tenant):
    tenant = make_tenant(account)
    admin = claims(account)
    for days in (10, 20, 30):
        api.call("PUT", f"/v1/tenants/{tenant.tenant_id}/rotation-policy", admin, body={"rotation_period_days": days})
    api.call("POST", f"/v1/tenants/{tenant.tenant_id}/rotate", admin, body={})
    auditor = claims(account, "auditor")
    path = f"/v1/tenants/{tenant.tenant_id}/audit"
    config = api.call("GET", path, auditor, query={"kind": "config", "limit": "2"}).json()
    assert len(config["items"]) == 2 and config["next_token"]
    more = api.call("GET", path, auditor, query={"kind": "config", "limit": "2", "next_token": config["next_token"]})
    assert len(more.json()["items"]) == 1 and more.json()["next_token"] is None
    lifecycle = api.call("GET", path, auditor, query={"kind": "lifecycle"}).json()["items"]
    assert {e["operation"] for e in lifecycle} == {"CreateTenant", "RotateL2"}
    future = api.call("GET", path, auditor, query={"since": "2999-01-01T00:00:00Z"}).json()["items"]
    assert future == []
    assert api.call("GET", path, auditor, query={"since": "yesterday"}).json()["details"]["field"] == "since"
    assert api.call("GET", path, auditor, query={"kind": "bogus"}).status == 400
    for end in ("9999-12-31T23:59:59.999999Z", "9999-12-31T23:59:59.9-01:00"):  # the calendar's end: 4xx or 200
        assert api.call("GET", path, auditor, query={"until": end}).status in (200, 400), end
    # a bound with an offset means that instant: everything so far is before 2999-01-01T00:00+14:00
    offset = api.call("GET", path, auditor, query={"until": "2999-01-01T00:00:00+14:00", "limit": "100"})
    assert len(offset.json()["items"]) == 5
    newest = max(e["time"] for e in lifecycle + config["items"] + more.json()["items"])
    later = datetime.fromisoformat(newest).astimezone(timezone(timedelta(hours=2))).isoformat()
    assert api.call("GET", path, auditor, query={"since": later}).json()["items"][0]["time"] == newest
    export = api.call("GET", f"{path}/export", auditor)
    assert export.status == 200 and export.headers["Content-Type"] == "application/x-ndjson"
    lines = [json.loads(line) for line in export.text.splitlines()]
    assert len(lines) == 5 and lines == sorted(lines, key=lambda e: e["time"])
    # newest first (what the web UI shows), page by page with the tokens it issues
    newest_first, token = [], None
    while True:
        query = {"order": "newest", "limit": "2", **({"next_token": token} if token else {})}
        page = api.call("GET", path, auditor, query=query).json()
        newest_first += page["items"]
        if not (token := page["next_token"]):
            break
    assert newest_first == lines[::-1]
    bad = api.call("GET", path, auditor, query={"order": "latest"})
    assert bad.status == 400 and bad.json()["details"]["field"] == "order"


def test_validation_errors_name_field_and_reason_and_refuse_unknown_fields(api, account):
    admin = claims(account)
    reply = api.call("POST", f"/v1/accounts/{account}/tenants", admin, body={"name": "x", "colour": "blue"})
    body = reply.json()
    assert reply.status == 400 and body["error"] == "invalid_request"
    assert body["details"]["field"] == "colour" and "not permitted" in body["details"]["reason"]
    reply = api.call("POST", f"/v1/accounts/{account}/tenants", admin, body={"tenant_id": "UPPER_case"})
    assert reply.status == 400 and reply.json()["details"]["field"] == "tenant_id"
    reply = api.call("POST", f"/v1/accounts/{account}/tenants", admin, body="{not json")
    assert reply.status == 400 and reply.json()["details"]["field"] == "body"
    # bodies the JSON parser itself gives up on: a number of thousands of digits, nesting thousands deep
    tenant = api.call("POST", f"/v1/accounts/{account}/tenants", admin, body={"name": "n"}).json()["tenant_id"]
    huge = '{"rotation_period_days": ' + "9" * 5000 + "}"
    reply = api.call("PUT", f"/v1/tenants/{tenant}/rotation-policy", admin, body=huge)
    assert reply.status == 400 and reply.json()["details"]["field"] == "body", reply.text
    deep = '{"name": "x", "config": ' + "[" * 100_000 + "]" * 100_000 + "}"
    reply = api.call("POST", f"/v1/accounts/{account}/keystores", claims(account, "key-admin"), body=deep)
    assert reply.status == 400 and reply.json()["details"]["field"] == "body", reply.text
    report = f"/v1/tenants/{tenant}/audit/compliance-report"
    assert api.call("GET", report, claims(account, "auditor"), query={"until": "9999-12-31"}).status == 400


def test_a_recursion_or_value_error_inside_the_api_is_a_500_not_the_callers_fault(api, account, monkeypatch):
    """The body guards sit where the body is parsed: the same errors raised by the code stay 500s."""
    from openkcm.ops import rotation

    admin = claims(account)
    tenant = api.call("POST", f"/v1/accounts/{account}/tenants", admin, body={"name": "n"}).json()["tenant_id"]
    for error in (RecursionError("deep"), ValueError("Exceeds the limit (4300 digits) for integer string conversion")):
        def broken(*args, error=error, **kwargs):
            raise error

        monkeypatch.setattr(rotation, "rotate_tenant", broken)
        reply = api.call("POST", f"/v1/tenants/{tenant}/rotate", admin, body={})
        assert reply.status == 500 and reply.json()["error"] == "internal_error", reply.text
    reply = api.call("GET", f"/v1/accounts/{account}/tenants", admin, query={"limit": "1000"})
    assert reply.status == 400 and reply.json()["details"]["field"] == "limit"
    assert "input" not in reply.text  # the offending value is never echoed


def test_idempotent_create(api, account):
    admin = claims(account)
    headers = {"idempotency-key": "create-tenant-0001"}
    first = api.call("POST", f"/v1/accounts/{account}/tenants", admin, body={"name": "once"}, headers=headers)
    second = api.call("POST", f"/v1/accounts/{account}/tenants", admin, body={"name": "once"}, headers=headers)
    assert first.status == second.status == 201
    assert first.json()["tenant_id"] == second.json()["tenant_id"]
    listed = api.call("GET", f"/v1/accounts/{account}/tenants", admin).json()["items"]
    assert len(listed) == 1
    clash = api.call("POST", f"/v1/accounts/{account}/tenants", admin, body={"name": "other"}, headers=headers)
    assert clash.status == 409 and clash.json()["error"] == "idempotency_conflict"
    # the same key and body for another account's collection is another request, not the first's answer
    operator = claims("", "platform-operator")
    here = api.call("POST", f"/v1/accounts/{account}/tenants", operator, body={"name": "op"}, headers=headers)
    there = api.call("POST", f"/v1/accounts/{account}-b/tenants", operator, body={"name": "op"}, headers=headers)
    assert here.status == there.status == 201, there.text
    assert there.json()["account_id"] == f"{account}-b" != here.json()["account_id"]


def test_cross_account_is_404_everywhere(api, account, make_tenant):
    tenant = make_tenant(account)
    other = claims("someone-else", "account-admin")
    for method, path, body in [
        ("GET", f"/v1/tenants/{tenant.tenant_id}", None),
        ("GET", f"/v1/tenants/{tenant.tenant_id}/dashboard", None),
        ("POST", f"/v1/tenants/{tenant.tenant_id}/disable", {}),
        ("DELETE", f"/v1/tenants/{tenant.tenant_id}", {"confirm": tenant.tenant_id}),
        ("POST", f"/v1/tenants/{tenant.tenant_id}/rotate", {}),
        ("GET", f"/v1/tenants/{tenant.tenant_id}/audit", None),
        ("GET", f"/v1/tenants/{tenant.tenant_id}/keys", None),
        ("GET", f"/v1/accounts/{account}/tenants", None),
        ("POST", f"/v1/accounts/{account}/tenants", {}),
        ("GET", f"/v1/accounts/{account}", None),
        ("GET", f"/v1/accounts/{account}/keystores", None),
        ("GET", "/v1/tenants/t-doesnotexist000/dashboard", None),
    ]:
        reply = api.call(method, path, other, body=body)
        assert reply.status == 404, (method, path, reply.text)
        assert reply.json()["error"] == "not_found"
    assert TenantModel.get(tenant.tenant_id, "TENANT").status == "Ready"


def test_platform_operator_sees_every_account(api, account, make_tenant):
    tenant = make_tenant(account)
    operator = claims("", "platform-operator")
    assert api.call("GET", f"/v1/tenants/{tenant.tenant_id}", operator).status == 200
    ids = [a["account_id"] for a in api.call("GET", "/v1/accounts", operator, query={"limit": "100"}).json()["items"]]
    assert account in ids
    assert api.call("POST", f"/v1/tenants/{tenant.tenant_id}/rotate", operator, body={}).status == 403


def test_api_gateway_flattened_array_claims_are_understood(api, account, make_tenant):
    tenant = make_tenant(account)
    who = claims(account, "auditor", "key-admin", flattened=True)
    assert api.call("GET", f"/v1/tenants/{tenant.tenant_id}/audit", who).status == 200
    assert api.call("POST", f"/v1/tenants/{tenant.tenant_id}/rotate", who, body={}).status == 200


def test_unknown_route_is_json_404(api, account):
    reply = api.call("GET", "/v1/nothing-here", claims(account))
    assert reply.status == 404 and reply.json()["error"] == "not_found"


def test_body_with_another_content_type_is_415(api, account):
    reply = api.call("POST", f"/v1/accounts/{account}/tenants", claims(account), body={"name": "x"},
                     headers={"content-type": "text/plain"})
    assert reply.status == 415 and reply.json()["details"]["field"] == "Content-Type"


def test_multipart_body_is_415_not_a_crash(api, account):
    reply = api.call("POST", f"/v1/accounts/{account}/tenants", claims(account), body="--x\r\n\r\n--x--",
                     headers={"content-type": "multipart/form-data"})
    assert reply.status == 415


def test_binary_body_is_400_not_a_crash(api, account, make_tenant):
    import base64

    from tests.api.conftest import v2_event

    tenant = make_tenant(account)
    event = v2_event("DELETE", f"/v1/tenants/{tenant.tenant_id}", claims_=claims(account))
    event.update(body=base64.b64encode(b"\x80").decode(), isBase64Encoded=True)
    from functions.cmk_api.handler import handler
    from openkcm.local.http_adapter import LocalLambdaContext

    result = handler(event, LocalLambdaContext("t"))
    assert result["statusCode"] == 400 and json.loads(result["body"])["details"]["field"] == "body"


def test_certificates_are_signed_by_the_ca_from_secrets_manager(api, account, make_tenant, aws_endpoint, monkeypatch,
                                                              tmp_path):
    import uuid

    import boto3

    from openkcm.domain.pki import CertificateAuthority

    ca = CertificateAuthority.load_or_create(tmp_path / "deployment-ca", "openkcm.local")
    key_pem = (tmp_path / "deployment-ca" / "ca.key").read_text()
    client = boto3.client("secretsmanager", region_name="us-east-1", endpoint_url=aws_endpoint)
    empty = client.create_secret(Name=f"ca-empty-{uuid.uuid4().hex}")["ARN"]
    filled = client.create_secret(Name=f"ca-{uuid.uuid4().hex}", SecretString=json.dumps(
        {"ca_cert_pem": ca.cert_pem.decode(), "ca_key_pem": key_pem}))["ARN"]
    tenant = make_tenant(account)
    path = f"/v1/tenants/{tenant.tenant_id}/certificates"
    from openkcm.api.context import runtime as current_runtime

    rt = current_runtime()
    monkeypatch.delitem(rt.extras, "ca", raising=False)
    monkeypatch.setattr(rt.settings, "ca_secret_arn", empty)
    reply = api.call("POST", path, claims(account), body={"service_id": "svc", "csr": _csr()})
    assert reply.status == 503 and "CA secret" in reply.json()["message"]
    monkeypatch.setattr(rt.settings, "ca_secret_arn", filled)
    reply = api.call("POST", path, claims(account), body={"service_id": "svc", "csr": _csr()})
    assert reply.status == 201, reply.text
    cert = x509.load_pem_x509_certificate(reply.json()["certificate_pem"].encode())
    assert cert.issuer == ca.cert.subject and reply.json()["ca_pem"] == ca.cert_pem.decode()
    assert api.call("GET", "/v1/ca", claims(account)).json()["ca_pem"] == ca.cert_pem.decode()
