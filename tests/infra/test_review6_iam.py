"""Security review 6: least-privilege fixes, checked on the session's single synthesis (conftest.py).

1. The CMK API may Scan the accounts table (platform operators list every account) and nothing else.
2. The account's administration statement on the root key(s) and the audit signing key cannot create
   grants (a grant would hand Encrypt/Decrypt or Sign to any principal of the account).
3. The rotation Lambda has no write access to the audit archive (only the audit schedule archives).
4. The CloudFront ``/v1/*`` behaviour keeps the API's own Content-Security-Policy (compliance report).
5. EventBridge may use the table key only for rules of this account (confused deputy).
"""

from __future__ import annotations

import json
from fnmatch import fnmatchcase
from typing import Any

import pytest

from tests.infra.template import as_list, of_type, ref_of

pytestmark = pytest.mark.infra

BOTH = pytest.mark.parametrize("which", ["default", "external"])


def _tpl(synth, which: str) -> dict[str, Any]:
    return synth.template if which == "default" else synth.external


def _allows(statement: dict[str, Any], action: str) -> bool:
    """Whether an Allow statement's actions (wildcards included) cover ``action``."""
    if statement.get("Effect", "Allow") != "Allow":
        return False
    return any(fnmatchcase(action.lower(), a.lower()) for a in as_list(statement.get("Action", [])))


def _role(template: dict[str, Any], prefix: str) -> str:
    [lid] = [lid for lid in of_type(template, "AWS::IAM::Role") if lid.startswith(prefix)]
    return lid


def _role_statements(template: dict[str, Any], role: str) -> list[dict[str, Any]]:
    out = []
    for policy in of_type(template, "AWS::IAM::Policy").values():
        props = policy["Properties"]
        if role in [ref_of(r) for r in props["Roles"]]:
            out += props["PolicyDocument"]["Statement"]
    for policy in template["Resources"][role]["Properties"].get("Policies", []):
        out += policy["PolicyDocument"]["Statement"]
    return out


def _lambda_env(template: dict[str, Any], handler: str) -> dict[str, Any]:
    [env] = [
        f["Properties"]["Environment"]["Variables"]
        for f in of_type(template, "AWS::Lambda::Function").values()
        if f["Properties"].get("Handler") == handler
    ]
    return env


# -- 1. CMK API: Scan on the accounts table only ----------------------------------------------------------


@BOTH
def test_cmk_api_scans_the_accounts_table_and_nothing_else(synth, which: str) -> None:
    template = _tpl(synth, which)
    role = _role(template, "ApiCmkApiRole")
    accounts = next(
        lid for lid in of_type(template, "AWS::DynamoDB::Table") if lid.startswith("DataTableaccounts")
    )
    scans = [s for s in _role_statements(template, role) if _allows(s, "dynamodb:Scan")]
    assert len(scans) == 1, scans  # AccountModel.scan() in openkcm/api/routes/accounts.py (list_accounts)
    [scan] = scans
    assert scan["Sid"] == "TableAccounts"
    assert [ref_of(r) for r in as_list(scan["Resource"])] == [accounts]  # the table itself, no other ARN


# -- 2. Key administration cannot create grants -----------------------------------------------------------


def _admin_keys(template: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        lid: res["Properties"]
        for lid, res in of_type(template, "AWS::KMS::Key").items()
        if "internal root key" in res["Properties"]["Description"]
        or res["Properties"].get("KeyUsage") == "SIGN_VERIFY"
    }


@BOTH
def test_root_and_signing_key_policies_allow_no_create_grant(synth, which: str) -> None:
    keys = _admin_keys(_tpl(synth, which))
    assert len(keys) == (1 if which == "default" else 2) + 1  # root key version(s) + the signing key
    for lid, props in keys.items():
        statements = props["KeyPolicy"]["Statement"]
        for statement in statements:
            actions = as_list(statement["Action"])
            assert not _allows(statement, "kms:CreateGrant"), (lid, statement)
            assert "kms:Create*" not in actions, (lid, statement)
        admin = [s for s in statements if s.get("Sid", "").startswith("AccountAdministers")]
        assert len(admin) == 1 and "kms:CreateAlias" in admin[0]["Action"], lid


# -- 3. Rotation: no write access to the audit archive ----------------------------------------------------


@BOTH
def test_rotation_role_cannot_write_the_audit_archive(synth, which: str) -> None:
    template = _tpl(synth, which)
    role = _role(template, "RotationRotateRole")
    archive = next(lid for lid in of_type(template, "AWS::S3::Bucket") if lid.startswith("DataAuditArchive"))
    statements = _role_statements(template, role)
    writes = [s for s in statements if _allows(s, "s3:PutObject") and archive in json.dumps(s["Resource"])]
    assert writes == []
    # Nothing of the rotation function reads the archive either (functions/rotate, openkcm/ops/rotation.py).
    assert [s for s in statements if archive in json.dumps(s.get("Resource"))] == []
    assert "OPENKCM_AUDIT_ARCHIVE_BUCKET" not in _lambda_env(template, "functions/rotate/handler.handler")
    # The audit schedule is the archiver and keeps its write access.
    schedule = _role(template, "AuditAuditScheduleRole")
    assert any(_allows(s, "s3:PutObject") for s in _role_statements(template, schedule))


# -- 4. CloudFront: /v1/* keeps the API's CSP -------------------------------------------------------------


@BOTH
def test_api_behaviour_keeps_the_origins_content_security_policy(synth, which: str) -> None:
    template = _tpl(synth, which)
    [dist] = of_type(template, "AWS::CloudFront::Distribution").values()
    config = dist["Properties"]["DistributionConfig"]

    def csp_of(behaviour: dict[str, Any]) -> dict[str, Any] | None:
        policy = template["Resources"][ref_of(behaviour["ResponseHeadersPolicyId"])]
        headers = policy["Properties"]["ResponseHeadersPolicyConfig"].get("SecurityHeadersConfig", {})
        return headers.get("ContentSecurityPolicy")

    [api] = [b for b in config["CacheBehaviors"] if b["PathPattern"] == "/v1/*"]
    api_csp = csp_of(api)
    # The compliance report sets its own CSP (default-src 'none'): CloudFront must not replace it.
    assert api_csp is None or api_csp["Override"] is False, api_csp
    # The web UI (S3 sends no CSP) still gets the UI's policy.
    ui_csp = csp_of(config["DefaultCacheBehavior"])
    assert ui_csp is not None and "default-src 'self'" in json.dumps(ui_csp["ContentSecurityPolicy"])
    assert "frame-ancestors" in json.dumps(ui_csp["ContentSecurityPolicy"])


# -- 5. Table key: EventBridge only for this account's rules ----------------------------------------------
