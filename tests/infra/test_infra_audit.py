"""The audit trail's infrastructure (issue 11): the audit schedule Lambda on its EventBridge rate with a
least-privilege role and an errors alarm, and the root-key grants for audit writer keys.

Uses the session's single synthesis (conftest.py)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.infra.template import as_list, of_type, ref_of

pytestmark = pytest.mark.infra

HANDLER = "functions/audit_schedule/handler.handler"


def _schedule_function(template: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    found = [
        (lid, res["Properties"])
        for lid, res in of_type(template, "AWS::Lambda::Function").items()
        if res["Properties"].get("Handler") == HANDLER
    ]
    assert len(found) == 1, found
    return found[0]


def _role_statements(template: dict[str, Any], role: str) -> dict[str, dict[str, Any]]:
    statements: dict[str, dict[str, Any]] = {}
    for policy in of_type(template, "AWS::IAM::Policy").values():
        props = policy["Properties"]
        if role in [ref_of(r) for r in props["Roles"]]:
            for statement in props["PolicyDocument"]["Statement"]:
                statements[statement.get("Sid", f"#{len(statements)}")] = statement
    return statements


def _logical_of(template: dict[str, Any], prefix: str, kind: str) -> str:
    return next(lid for lid in of_type(template, kind) if lid.startswith(prefix))


@pytest.mark.parametrize("which", ["default", "external"])
def test_audit_schedule_function_runs_on_a_rate(synth, which: str) -> None:
    from aws_cdk.assertions import Match, Template

    template = synth.template if which == "default" else synth.external
    lid, props = _schedule_function(template)
    t = Template.from_json(template)
    t.has_resource_properties(
        "AWS::Lambda::Function",
        {
            "Handler": HANDLER,
            "Runtime": "python3.12",
            "Architectures": ["arm64"],
            "TracingConfig": {"Mode": "Active"},
            "ReservedConcurrentExecutions": 1,
            "Timeout": 240,  # under the 5-minute rate
            "Environment": {
                "Variables": Match.object_like(
                    {
                        "OPENKCM_AUDIT_SIGNER": "aws-kms",
                        "OPENKCM_ROOT_KEY_PROVIDER": "aws-kms",
                        "OPENKCM_AUDIT_RETENTION_DAYS": "90",
                        "OPENKCM_AUDIT_ARCHIVE_BUCKET": {
                            "Ref": Match.string_like_regexp("^DataAuditArchive")
                        },
                        "OPENKCM_AUDIT_SIGNING_KEY_ID": {
                            "Fn::GetAtt": [Match.string_like_regexp("^DataAuditSigningKey"), "Arn"]
                        },
                    }
                )
            },
        },
    )
    assert "VpcConfig" not in props  # AWS APIs only
    # Every variable it gets is one Settings reads (or a documented infrastructure variable).
    from infra_cdk.components.env import INFRA_ONLY
    from openkcm.config import Settings

    fields = {"OPENKCM_" + name.upper() for name in Settings.model_fields}
    for name in props["Environment"]["Variables"]:
        if name.startswith("OPENKCM_"):
            assert name in fields or name in INFRA_ONLY, name
    # The rule: rate(5 minutes) by default, targeting this function.
    rules = [
        r["Properties"]
        for r in of_type(template, "AWS::Events::Rule").values()
        if any(ref_of(target["Arn"]) == lid for target in r["Properties"].get("Targets", []))
    ]
    assert [r["ScheduleExpression"] for r in rules] == ["rate(5 minutes)"]
    permissions = [
        p["Properties"]
        for p in of_type(template, "AWS::Lambda::Permission").values()
        if ref_of(p["Properties"]["FunctionName"]) == lid
    ]
    assert permissions and permissions[0]["Principal"] == "events.amazonaws.com"
    # Its own log group with a retention.
    group = template["Resources"][ref_of(props["LoggingConfig"]["LogGroup"])]
    assert group["Properties"]["RetentionInDays"] >= 365


def test_audit_schedule_role_has_least_privilege(synth) -> None:
    from infra_cdk.components.api import AUDIT_ARCHIVE
    from infra_cdk.components.data import ROOT_CONTEXTS
    from openkcm.config import Settings

    template = synth.template
    _, props = _schedule_function(template)
    role = ref_of(props["Role"])
    assert role is not None and "ManagedPolicyArns" not in template["Resources"][role]["Properties"]
    statements = _role_statements(template, role)

    tenants = _logical_of(template, "DataTabletenants", "AWS::DynamoDB::Table")
    audit = _logical_of(template, "DataTableaudit", "AWS::DynamoDB::Table")
    # Tables: only tenants (scan for the ids) and audit; nothing else.
    tables = {sid for sid in statements if sid.startswith("Table") and not sid.startswith("TableKey")}
    assert tables == {"TableTenants", "TableAudit"}
    assert as_list(statements["TableTenants"]["Action"]) == ["dynamodb:Scan"]
    assert {ref_of(r) for r in as_list(statements["TableTenants"]["Resource"]) if ref_of(r)} == {tenants}
    assert set(as_list(statements["TableAudit"]["Action"])) == {f"dynamodb:{a}" for a in AUDIT_ARCHIVE}
    assert {"dynamodb:Query", "dynamodb:PutItem", "dynamodb:UpdateItem"} <= set(
        statements["TableAudit"]["Action"]
    )
    assert not {"dynamodb:DeleteItem", "dynamodb:Scan"} & set(as_list(statements["TableAudit"]["Action"]))
    audit_resources = as_list(statements["TableAudit"]["Resource"])
    assert {ref_of(r) for r in audit_resources if ref_of(r)} == {audit}
    # ... the tenant-time index too (the same actions, by ARN).
    assert any("Fn::Join" in r and "/index/tenant-time" in str(r) for r in audit_resources)

    # Signing key: sign, verify, public key; on that key only.
    signing = statements["AuditSigning"]
    assert set(signing["Action"]) == {"kms:Sign", "kms:Verify", "kms:GetPublicKey"}
    assert ref_of(signing["Resource"]).startswith("DataAuditSigningKey")

    # Root key: only the audit writer context (wrap its own writer key, unwrap writers' keys to check links).
    purpose, keys = ROOT_CONTEXTS["writer"]
    root = [sid for sid in statements if sid.startswith("RootKey")]
    assert root == ["RootKeyWriterContext"]
    writer = statements["RootKeyWriterContext"]
    assert set(writer["Action"]) == {"kms:Encrypt", "kms:Decrypt"}
    assert writer["Condition"]["StringEquals"] == {"kms:EncryptionContext:purpose": purpose}
    assert writer["Condition"]["ForAllValues:StringEquals"]["kms:EncryptionContextKeys"] == keys
    assert ref_of(writer["Resource"]).startswith("DataRootKey")

    # Archive: list under the prefix, get + put objects under it, never delete.
    prefix = Settings.model_fields["audit_archive_prefix"].default
    listing = statements["AuditArchiveList"]
    assert listing["Action"] == "s3:ListBucket"
    assert listing["Condition"] == {"StringLike": {"s3:prefix": [f"{prefix}*"]}}
    objects = statements["AuditArchiveObjects"]
    assert set(objects["Action"]) == {"s3:GetObject", "s3:PutObject"}
    assert f"/{prefix}*" in str(objects["Resource"]) and "DataAuditArchive" in str(objects["Resource"])

    # Nothing else: no events, SNS, secrets, queues, STS or VPC permissions.
    services = {a.split(":")[0] for s in statements.values() for a in as_list(s["Action"])}
    assert services == {"dynamodb", "kms", "s3", "logs", "xray"}, services

    # The key policies name the role too (both sides must agree).
    signing_key = template["Resources"][ref_of(signing["Resource"])]["Properties"]["KeyPolicy"]["Statement"]
    assert any(ref_of(s["Principal"].get("AWS")) == role and "kms:Sign" in s["Action"] for s in signing_key)
    root_key = template["Resources"][ref_of(writer["Resource"])]["Properties"]["KeyPolicy"]["Statement"]
    mine = [s for s in root_key if ref_of(s["Principal"].get("AWS")) == role]
    assert mine and all(
        s["Condition"]["StringEquals"]["kms:EncryptionContext:purpose"] == purpose for s in mine
    )


def test_audit_schedule_errors_alarm(synth) -> None:
    template = synth.template
    lid, _ = _schedule_function(template)
    alarms = [
        a["Properties"]
        for a in of_type(template, "AWS::CloudWatch::Alarm").values()
        if any(ref_of(d.get("Value")) == lid for d in a["Properties"].get("Dimensions", []))
    ]
    assert {a["MetricName"] for a in alarms} == {"Errors", "Throttles"}
    for alarm in alarms:
        assert alarm["Threshold"] == 1 and alarm["AlarmActions"]


def test_writer_context_is_the_domains() -> None:
    """The root-key conditions for writer keys are built from the context the audit sink really uses."""
    from infra_cdk.components.data import ROOT_CONTEXTS
    from openkcm.domain.audit.chain import writer_key_context

    context = writer_key_context("kmip-task-1:1234")
    assert ROOT_CONTEXTS["writer"] == (context["purpose"], sorted(context))
    assert ROOT_CONTEXTS["writer"][0] == "openkcm-audit-writer"
