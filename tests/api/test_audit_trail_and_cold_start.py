"""Refusals are security events in the audit trail; the Lambda builds its own runtime from the
environment at cold start (no test binding), as it does in AWS."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from openkcm.domain.audit import read_events
from openkcm.domain.tenants import PLATFORM_TENANT
from tests.api.conftest import claims

EPOCH = "1970-01-01T00:00:00+00:00"


def test_refused_calls_are_recorded_as_security_events(api, account, make_tenant):
    tenant = make_tenant(account)
    assert api.call("POST", f"/v1/tenants/{tenant.tenant_id}/rotate", claims(account, "auditor"), body={}).status == 403
    denied = [e for e in read_events(tenant.tenant_id, since=EPOCH) if e["result"] == "denied"]
    assert len(denied) == 1
    event = denied[0]
    assert event["kind"] == "security" and event["actor"] == "user-auditor" and event["actor_role"] == "auditor"
    assert event["details"]["permission"] == "rotation:write" and event["details"]["method"] == "POST"
    # an MFA refusal on an account-level resource lands in the platform partition with the account id
    body = {"provider": "pkcs11", "name": "hsm", "config": {}}
    assert api.call("POST", f"/v1/accounts/{account}/keystores", claims(account, "key-admin"), body=body).status == 403
    platform = [e for e in read_events(PLATFORM_TENANT, since=EPOCH)
                if e["result"] == "denied" and e["account_id"] == account]
    assert [e["details"]["permission"] for e in platform] == ["mfa"]
    # a cross-account probe answers exactly like a missing tenant, and is recorded in the victim's trail
    before = len(read_events(tenant.tenant_id, since=EPOCH))
    probe = api.call("POST", f"/v1/tenants/{tenant.tenant_id}/rotate", claims("intruder"), body={})
    missing = api.call("POST", "/v1/tenants/t-doesnotexist0000/rotate", claims("intruder"), body={})
    assert probe.status == missing.status == 404 and probe.text == missing.text
    after = read_events(tenant.tenant_id, since=EPOCH)
    assert len(after) == before + 1
    assert (after[-1]["result"], after[-1]["actor"], after[-1]["reason"]) == (
        "denied", "user-account-admin", "outside the caller's account")
    # ... and a probe of a missing id in the caller's own account partition (one audit write either way)
    probes = [e for e in read_events(PLATFORM_TENANT, since=EPOCH) if e["account_id"] == "intruder"]
    assert [e["reason"] for e in probes] == ["no such tenant"]
    # probing again within the minute is counted, not recorded each time (no flooding a trail or the bus)
    for _ in range(5):
        assert api.call("POST", f"/v1/tenants/{tenant.tenant_id}/rotate", claims("intruder"), body={}).status == 404
    assert len(read_events(tenant.tenant_id, since=EPOCH)) == before + 1


def test_lambda_cold_start_builds_its_runtime_from_the_environment(api_runtime, account, make_tenant, tmp_path):
    tenant = make_tenant(account)
    script = f"""
import json, sys
from functions.cmk_api.handler import handler
from openkcm.local.http_adapter import LocalLambdaContext
from tests.api.conftest import claims, v2_event
out = []
for event in (v2_event("GET", "/v1/health"),
              v2_event("GET", "/v1/tenants/{tenant.tenant_id}", claims_=claims("{account}", "auditor"))):
    result = handler(event, LocalLambdaContext("openkcm-cmk-api"))
    out.append([result["statusCode"], json.loads(result["body"])])
print("RESULT" + json.dumps(out))
"""
    env = {**os.environ, "OPENKCM_TABLE_PREFIX": api_runtime.settings.table_prefix,
           "OPENKCM_DATA_DIR": str(api_runtime.settings.data_dir), "AWS_LAMBDA_FUNCTION_NAME": "openkcm-cmk-api",
           "POWERTOOLS_TRACE_DISABLED": "true"}
    proc = subprocess.run([sys.executable, "-c", script], env=env, check=False, cwd=Path(__file__).resolve().parents[2],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    line = next(line for line in proc.stdout.splitlines() if line.startswith("RESULT"))
    (health_status, health), (tenant_status, body) = json.loads(line[len("RESULT"):])
    assert health_status == 200 and health["status"] == "ok"
    assert tenant_status == 200 and body["tenant_id"] == tenant.tenant_id
    # the Lambda's structured log lines carry the correlation id and never a token or claim values
    assert "openkcm:roles" not in proc.stdout
