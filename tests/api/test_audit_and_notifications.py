"""Routes backed by the audit and provisioning features: chain verification, the compliance report and
an account's notifications."""

from __future__ import annotations

import pytest

from tests.api.conftest import claims


def test_audit_verify_and_compliance_report(api, account, make_tenant):
    pytest.importorskip("openkcm.ops.audit")
    tenant = make_tenant(account)
    admin = claims(account)
    api.call("POST", f"/v1/tenants/{tenant.tenant_id}/rotate", admin, body={})
    auditor = claims(account, "auditor")
    verified = api.call("GET", f"/v1/tenants/{tenant.tenant_id}/audit/verify", auditor)
    assert verified.status == 200, verified.text
    assert verified.json()  # the verifier's statement (records, chain state)
    report = api.call("GET", f"/v1/tenants/{tenant.tenant_id}/audit/compliance-report", auditor)
    assert report.status == 200, report.text
    assert "RotateL2" in report.text or report.json()
    html = api.call("GET", f"/v1/tenants/{tenant.tenant_id}/audit/compliance-report", auditor,
                    query={"format": "html"})
    assert html.status == 200 and html.headers["Content-Type"].startswith("text/html")
    bad = api.call("GET", f"/v1/tenants/{tenant.tenant_id}/audit/compliance-report", auditor, query={"since": "x"})
    assert bad.status == 400 and bad.json()["details"]["field"] == "since"
    assert api.call("GET", f"/v1/tenants/{tenant.tenant_id}/audit/verify", claims(account, "key-admin")).status == 403
    assert api.call("GET", f"/v1/tenants/{tenant.tenant_id}/audit/verify", claims("other", "auditor")).status == 404


def test_account_notifications(api, account, make_tenant, api_runtime):
    notifications = pytest.importorskip("openkcm.ops.notifications")
    tenant = make_tenant(account)
    for i in range(3):
        notifications.notify(api_runtime, tenant_id=tenant.tenant_id, customer=account, kind="key_rotation",
                             subject=f"rotated {i}", message="L2 rotated")
    reply = api.call("GET", f"/v1/accounts/{account}/notifications", claims(account, "auditor"), query={"limit": "2"})
    assert reply.status == 200, reply.text
    page = reply.json()
    assert len(page["items"]) == 2 and page["next_token"]
    rest = api.call("GET", f"/v1/accounts/{account}/notifications", claims(account, "auditor"),
                    query={"next_token": page["next_token"]}).json()
    assert len(rest["items"]) == 1
    subjects = [n["subject"] for n in page["items"] + rest["items"]]
    assert sorted(subjects) == ["rotated 0", "rotated 1", "rotated 2"]
    assert api.call("GET", f"/v1/accounts/{account}/notifications", claims("other")).status == 404
    assert api.call("GET", f"/v1/accounts/{account}/notifications", claims(account, "key-admin")).status == 403
