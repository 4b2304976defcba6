"""Assertions on the synthesized OpenKCM stacks (one synthesis per session, see conftest.py)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.infra.template import as_list, ref_of

pytestmark = pytest.mark.infra


def _template(synth, which: str = "default"):
    from aws_cdk.assertions import Template

    return Template.from_json(synth.template if which == "default" else synth.external)


def _statements(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return doc.get("Statement", [])


def _key_list(value: Any) -> list[str]:
    """Logical ids of the keys in OPENKCM_ROOT_KMS_KEY_IDS (a join of ARNs, or one ARN)."""
    if isinstance(value, dict) and "Fn::Join" in value:
        return [ref_of(item) for item in value["Fn::Join"][1]]
    return [ref_of(value)]


def _logical_ids(synth, kind: str, template=None) -> set[str]:
    return set(synth.resources(kind, template))


# -- Data ------------------------------------------------------------------------------------------------


def test_tables_match_the_models_and_are_protected(synth) -> None:
    from infra_cdk.components.data import table_specs
    from openkcm.storage.models import table_names

    tables = {r["Properties"]["TableName"]: r for r in synth.resources("AWS::DynamoDB::Table").values()}
    expected = table_names("openkcm")
    assert set(tables) == set(expected.values())
    keys = _logical_ids(synth, "AWS::KMS::Key")
    specs = table_specs()
    for logical, physical in expected.items():
        props = tables[physical]["Properties"]
        assert props["BillingMode"] == "PAY_PER_REQUEST"
        assert props["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
        assert props["DeletionProtectionEnabled"] is True
        assert props["SSESpecification"]["SSEEnabled"] is True
        assert props["SSESpecification"]["SSEType"] == "KMS"
        assert ref_of(props["SSESpecification"]["KMSMasterKeyId"]) in keys
        assert "StreamSpecification" not in props  # nothing consumes streams
        spec = specs[logical]
        key_schema = {k["AttributeName"]: k["KeyType"] for k in props["KeySchema"]}
        assert key_schema[spec.hash_key[0]] == "HASH"
        if spec.range_key:
            assert key_schema[spec.range_key[0]] == "RANGE"
        assert tables[physical]["DeletionPolicy"] == "Retain"
        for index in props.get("GlobalSecondaryIndexes", []):
            kind, _ = spec.projection(index["IndexName"])
            assert index["Projection"]["ProjectionType"] == kind
    tenants = tables["openkcm-tenants"]["Properties"]
    assert [g["IndexName"] for g in tenants["GlobalSecondaryIndexes"]] == ["account-tenants"]
    audit = tables["openkcm-audit"]["Properties"]
    assert [g["IndexName"] for g in audit["GlobalSecondaryIndexes"]] == ["tenant-time"]
    assert audit["TimeToLiveSpecification"] == {"AttributeName": "expire_at", "Enabled": True}
    idem = tables["openkcm-idempotency"]["Properties"]
    assert idem["KeySchema"] == [{"AttributeName": "id", "KeyType": "HASH"}]
    assert idem["TimeToLiveSpecification"] == {"AttributeName": "expiration", "Enabled": True}


def test_models_sharing_a_table_agree_on_its_keys() -> None:
    from infra_cdk.components.data import table_specs

    specs = table_specs()
    assert specs["tenants"].hash_key == ("tenant_id", "S")
    assert specs["tenants"].range_key == ("sk", "S")
    assert specs["objects"].range_key == ("object_id", "S")


def _root_key(synth) -> tuple[str, dict[str, Any]]:
    for lid, res in synth.resources("AWS::KMS::Key").items():
        if "internal root key" in res["Properties"].get("Description", ""):
            return lid, res["Properties"]
    raise AssertionError("no root key")


def test_root_key_is_used_only_by_service_roles_with_an_encryption_context(synth) -> None:
    from infra_cdk.components.data import ROOT_CONTEXTS

    _, props = _root_key(synth)
    assert props["EnableKeyRotation"] is True
    roles = _logical_ids(synth, "AWS::IAM::Role")
    users: dict[str, set[str]] = {}
    by_purpose: dict[tuple[str, str], set[str]] = {}
    for statement in _statements(props["KeyPolicy"]):
        actions = set(as_list(statement["Action"]))
        crypto = {
            a for a in actions if a in ("kms:Encrypt", "kms:Decrypt", "kms:ReEncrypt*", "kms:GenerateDataKey")
        }
        principal = statement["Principal"]["AWS"]
        if not crypto:
            continue
        assert "kms:*" not in actions
        role = ref_of(principal)
        assert role in roles, f"root key usable by a non-role principal: {principal}"
        cond = statement["Condition"]
        purpose = cond["StringEquals"]["kms:EncryptionContext:purpose"]
        expected = {p: keys for p, keys in ROOT_CONTEXTS.values()}
        assert purpose in expected
        assert sorted(cond["ForAllValues:StringEquals"]["kms:EncryptionContextKeys"]) == expected[purpose]
        assert set(cond["Null"]) == {f"kms:EncryptionContext:{k}" for k in expected[purpose]}
        users.setdefault(role, set()).update(crypto)
        by_purpose.setdefault((role, purpose), set()).update(crypto)
    # The account itself may administer the key but not use it.
    account_statements = [
        s for s in _statements(props["KeyPolicy"]) if ref_of(s["Principal"]["AWS"]) is None
    ]
    assert account_statements and all(
        not {"kms:Encrypt", "kms:Decrypt", "kms:*"} & set(as_list(s["Action"])) for s in account_statements
    )
    # API, worker and rotation wrap and unwrap L2 keys; KMIP only unwraps them.
    l2, creds, writer = (ROOT_CONTEXTS[name][0] for name in ("l2", "credentials", "writer"))
    kmip_role = ref_of(synth.resources("AWS::ECS::TaskDefinition").popitem()[1]["Properties"]["TaskRoleArn"])
    assert by_purpose[(kmip_role, l2)] == by_purpose[(kmip_role, creds)] == {"kms:Decrypt"}
    assert (
        sum(1 for (_, p), acts in by_purpose.items() if p == l2 and acts == {"kms:Encrypt", "kms:Decrypt"})
        == 3
    )
    # The webhook and the audit schedule never touch an L2 key or keystore credentials.
    webhook = next(lid for lid in roles if lid.startswith("ApiWebhookRole"))
    schedule = next(lid for lid in roles if lid.startswith("AuditAuditScheduleRole"))
    for role in (webhook, schedule):
        assert {p for (r, p) in by_purpose if r == role} == {writer}
    # Every audit writer wraps its link-MAC key (Encrypt, writer context); the verifier (CMK API), the
    # KMIP checkpointer and the audit schedule also unwrap; the other writers only wrap.
    writers = {r: acts for (r, p), acts in by_purpose.items() if p == writer}
    prefixes = {
        "ApiCmkApiRole": {"kms:Encrypt", "kms:Decrypt"},
        "ApiWebhookRole": {"kms:Encrypt"},
        "ApiProvisionWorkerRole": {"kms:Encrypt"},
        "RotationRotateRole": {"kms:Encrypt"},
        "AuditAuditScheduleRole": {"kms:Encrypt", "kms:Decrypt"},
    }
    for prefix, expected_actions in prefixes.items():
        role = next(lid for lid in roles if lid.startswith(prefix))
        assert writers.get(role) == expected_actions, prefix
    assert writers[kmip_role] == {"kms:Encrypt", "kms:Decrypt"}
    assert len(writers) == len(prefixes) + 1


def test_l2_context_is_the_domains(synth) -> None:
    from infra_cdk.components.data import ROOT_CONTEXTS
    from openkcm.domain.hierarchy import l2_context

    purpose, keys = ROOT_CONTEXTS["l2"]
    assert purpose == l2_context("x", 3)["purpose"]
    assert keys == sorted(l2_context("x", 3))
    assert {"tenant_id", "l2_version"} <= set(keys)


def test_signing_key_and_audit_archive(synth) -> None:
    t = _template(synth)
    t.has_resource_properties("AWS::KMS::Key", {"KeySpec": "ECC_NIST_P256", "KeyUsage": "SIGN_VERIFY"})
    t.has_resource_properties(
        "AWS::S3::Bucket",
        {
            "ObjectLockEnabled": True,
            "ObjectLockConfiguration": {
                "ObjectLockEnabled": "Enabled",
                "Rule": {"DefaultRetention": {"Mode": "COMPLIANCE", "Days": 2555}},
            },
            "VersioningConfiguration": {"Status": "Enabled"},
        },
    )
    # Segments are written once: puts without If-None-Match are refused, whoever sends them.
    policies = [
        p["Properties"]["PolicyDocument"]["Statement"]
        for p in synth.resources("AWS::S3::BucketPolicy").values()
        if "AuditArchive" in str(p["Properties"]["Bucket"])
    ]
    [write_once] = [
        s for statements in policies for s in statements if s.get("Sid") == "AuditSegmentsWriteOnce"
    ]
    assert write_once["Effect"] == "Deny" and write_once["Action"] == "s3:PutObject"
    assert write_once["Condition"] == {"Null": {"s3:if-none-match": "true"}}
    for bucket in synth.resources("AWS::S3::Bucket").values():
        block = bucket["Properties"]["PublicAccessBlockConfiguration"]
        assert all(
            block[k]
            for k in ("BlockPublicAcls", "BlockPublicPolicy", "IgnorePublicAcls", "RestrictPublicBuckets")
        )


# -- IAM -------------------------------------------------------------------------------------------------


def _policies(template: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for lid, res in template["Resources"].items():
        if res["Type"] == "AWS::IAM::Policy":
            out += [(lid, s) for s in _statements(res["Properties"]["PolicyDocument"])]
        if res["Type"] == "AWS::IAM::Role":
            for policy in res["Properties"].get("Policies", []):
                out += [(lid, s) for s in _statements(policy["PolicyDocument"])]
    return out


def _is_cdk_internal(lid: str) -> bool:
    return lid.startswith("CustomCDKBucketDeployment")


@pytest.mark.parametrize("which", ["default", "external"])
def test_no_wildcard_actions_and_data_actions_are_scoped(synth, which: str) -> None:
    template = synth.template if which == "default" else synth.external
    statements = _policies(template)
    assert statements
    for lid, statement in statements:
        actions = as_list(statement["Action"])
        assert "*" not in actions, (lid, statement)
        assert not any(a.endswith(":*") for a in actions), (lid, statement)
        if _is_cdk_internal(lid):
            continue
        data_actions = [
            a for a in actions if a.split(":")[0] in ("dynamodb", "kms", "s3", "secretsmanager", "sqs", "sns")
        ]
        if data_actions:
            assert statement["Resource"] != "*", (lid, statement)
            assert "*" not in as_list(statement["Resource"]), (lid, statement)
        if any(a.startswith("dynamodb:") for a in actions):
            # Only the schedules scan (rotation: every tenant/object/keystore; audit: tenant ids), and the
            # CMK API the accounts table alone (a platform operator's list of accounts).
            scans = "Rotat" in lid or "AuditSchedule" in lid
            accounts = [r for r in template["Resources"] if r.startswith("DataTableaccounts")]
            scans = scans or (
                lid.startswith("ApiCmkApiRole")
                and statement.get("Sid") == "TableAccounts"
                and [ref_of(r) for r in as_list(statement["Resource"])] == accounts
            )
            assert not any(a in ("dynamodb:Scan",) for a in actions) or scans, (lid, actions)
    # No managed policies on our roles.
    for lid, role in template["Resources"].items():
        if role["Type"] == "AWS::IAM::Role" and not _is_cdk_internal(lid):
            assert "ManagedPolicyArns" not in role["Properties"], lid


def test_kms_statements_on_the_root_key_carry_conditions(synth) -> None:
    root_lid, _ = _root_key(synth)
    found = 0
    for _lid, statement in _policies(synth.template):
        resources = as_list(statement.get("Resource"))
        if any(ref_of(r) == root_lid for r in resources):
            found += 1
            assert statement["Condition"]["StringEquals"]["kms:EncryptionContext:purpose"].startswith(
                "openkcm-"
            )
    assert found >= 4


def test_table_key_is_used_only_through_dynamodb_sqs_sns_or_s3(synth) -> None:
    for lid, statement in _policies(synth.template):
        if _is_cdk_internal(lid):
            continue
        if statement.get("Sid", "").startswith("TableKeyVia"):
            via = statement["Condition"]["StringEquals"]["kms:ViaService"]
            assert any(service in json.dumps(via) for service in ("dynamodb.", "sqs.", "sns.", "s3."))


def test_each_function_gets_only_its_tables(synth) -> None:
    """The webhook touches only audit, usage and idempotency; KMIP never writes tenants or accounts."""
    by_role: dict[str, set[str]] = {}
    for lid, statement in _policies(synth.template):
        sid = statement.get("Sid", "")
        if sid.startswith("Table") and not sid.startswith("TableKey"):
            by_role.setdefault(lid, set()).add(sid[len("Table") :].lower())
    webhook = next(v for k, v in by_role.items() if k.startswith("ApiWebhookRole"))
    assert webhook == {"audit", "usage", "idempotency"}
    kmip = next(k for k in by_role if k.startswith("KmipTaskRole"))
    for lid, statement in _policies(synth.template):
        if lid == kmip and statement.get("Sid") in ("TableTenants", "TableAccounts"):
            assert not {"dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem"} & set(
                statement["Action"]
            )


# -- Lambdas and environment -----------------------------------------------------------------------------


def test_functions_runtime_architecture_and_environment(synth) -> None:
    from infra_cdk.components.env import INFRA_ONLY
    from openkcm.config import Settings

    functions = synth.resources("AWS::Lambda::Function")
    ours = {
        f["Properties"]["Handler"]: f["Properties"]
        for lid, f in functions.items()
        if f["Properties"].get("Handler", "").startswith("functions/")
    }
    assert set(ours) == {
        "functions/cmk_api/handler.handler",
        "functions/provision/handler.webhook_handler",
        "functions/provision/handler.worker_handler",
        "functions/rotate/handler.handler",
        "functions/audit_schedule/handler.handler",
    }
    fields = {"OPENKCM_" + name.upper() for name in Settings.model_fields}
    for handler, props in ours.items():
        assert props["Runtime"] == "python3.12"
        assert props["Architectures"] == ["arm64"]
        assert props["TracingConfig"] == {"Mode": "Active"}
        env = props["Environment"]["Variables"]
        assert env["OPENKCM_ROOT_KEY_PROVIDER"] == "aws-kms"
        assert env["OPENKCM_TABLE_PREFIX"] == "openkcm"
        bus = synth.template["Resources"][ref_of(env["OPENKCM_EVENT_BUS_NAME"])]
        assert bus["Properties"]["Name"] == "openkcm-events"
        assert env["OPENKCM_TRUST_DOMAIN"] == "kcm.example.com"
        assert _key_list(env["OPENKCM_ROOT_KMS_KEY_IDS"]) == [_root_key(synth)[0]]
        for name in env:
            if name.startswith("OPENKCM_"):
                assert name in fields or name in INFRA_ONLY, f"{handler}: {name} is read by nobody"
    webhook = ours["functions/provision/handler.webhook_handler"]["Environment"]["Variables"]
    assert "OPENKCM_WEBHOOK_SECRET_ARN" in webhook and "OPENKCM_PROVISION_QUEUE_URL" in webhook
    worker = ours["functions/provision/handler.worker_handler"]
    assert worker["ReservedConcurrentExecutions"] == 5
    assert "VpcConfig" in ours["functions/cmk_api/handler.handler"]
    assert "VpcConfig" in ours["functions/rotate/handler.handler"]
    # Every function logs to its own group with a retention.
    for group in synth.resources("AWS::Logs::LogGroup").values():
        assert group["Properties"].get("RetentionInDays"), group


def test_provisioning_queue_has_a_dead_letter_queue(synth) -> None:
    queues = synth.resources("AWS::SQS::Queue")
    redrives = [
        q["Properties"]["RedrivePolicy"] for q in queues.values() if "RedrivePolicy" in q["Properties"]
    ]
    assert len(redrives) == 1 and redrives[0]["maxReceiveCount"] == 5
    assert ref_of(redrives[0]["deadLetterTargetArn"]) in queues
    assert all("KmsMasterKeyId" in q["Properties"] for q in queues.values())
    mappings = synth.resources("AWS::Lambda::EventSourceMapping")
    assert len(mappings) == 1
    assert list(mappings.values())[0]["Properties"]["FunctionResponseTypes"] == ["ReportBatchItemFailures"]


# -- API -------------------------------------------------------------------------------------------------


def test_http_api_jwt_authorizer_and_webhook_route(synth) -> None:
    authorizers = synth.resources("AWS::ApiGatewayV2::Authorizer")
    assert len(authorizers) == 1
    auth_lid, auth = authorizers.popitem()
    props = auth["Properties"]
    assert props["AuthorizerType"] == "JWT"
    assert props["IdentitySource"] == ["$request.header.Authorization"]
    assert "cognito-idp" in json.dumps(props["JwtConfiguration"]["Issuer"])
    assert props["JwtConfiguration"]["Audience"]
    routes = {
        r["Properties"]["RouteKey"]: r["Properties"]
        for r in synth.resources("AWS::ApiGatewayV2::Route").values()
    }
    from openkcm.api.app import PUBLIC_ROUTES

    public = {"POST /v1/marketplace/events"} | {f"{m} {p}" for m, p in PUBLIC_ROUTES}
    for key in public:
        assert routes[key].get("AuthorizationType", "NONE") == "NONE", key
    for key, route in routes.items():
        if key not in public:
            assert route["AuthorizationType"] == "JWT", key
            assert ref_of(route["AuthorizerId"]) == auth_lid
    assert {"GET /v1/{proxy+}", "POST /v1/{proxy+}", "DELETE /v1/{proxy+}"} <= set(routes)
    stage = synth.resources("AWS::ApiGatewayV2::Stage").popitem()[1]["Properties"]
    assert stage["StageName"] == "$default" and stage["AutoDeploy"] is True
    assert ref_of(stage["AccessLogSettings"]["DestinationArn"]) in synth.resources("AWS::Logs::LogGroup")


def test_cognito_pool_requires_mfa_and_maps_claims(synth) -> None:
    pool = synth.resources("AWS::Cognito::UserPool").popitem()[1]["Properties"]
    assert pool["MfaConfiguration"] == "ON"
    assert pool["AdminCreateUserConfig"]["AllowAdminCreateUserOnly"] is True
    assert pool["LambdaConfig"]["PreTokenGenerationConfig"]["LambdaVersion"] == "V2_0"
    client = synth.resources("AWS::Cognito::UserPoolClient").popitem()[1]["Properties"]
    assert client["GenerateSecret"] is False
    assert client["AllowedOAuthFlows"] == ["code"]
    # nobody grants themselves an account or a role: the client may write no custom attribute
    assert client["WriteAttributes"] == ["name"]
    assert {"custom:account", "custom:roles"} <= set(client["ReadAttributes"])


def test_pretoken_trigger_claims() -> None:
    import importlib.util

    from infra_cdk.components.api import PRETOKEN_ASSET

    spec = importlib.util.spec_from_file_location("pretoken_index", PRETOKEN_ASSET / "index.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    event = {
        "request": {
            "userAttributes": {"custom:account": "acme-1", "custom:roles": "key-admin, root ,auditor"}
        }
    }
    out = module.handler(event, None)["response"]["claimsAndScopeOverrideDetails"]["accessTokenGeneration"]
    assert out["claimsToAddOrOverride"]["openkcm:account"] == "acme-1"
    assert out["claimsToAddOrOverride"]["openkcm:roles"] == ["auditor", "key-admin"]
    empty = module.handler({"request": {"userAttributes": {}}}, None)
    claims = empty["response"]["claimsAndScopeOverrideDetails"]["accessTokenGeneration"][
        "claimsToAddOrOverride"
    ]
    assert "openkcm:account" not in claims and claims["openkcm:roles"] == []


def test_external_issuer_replaces_cognito(synth) -> None:
    assert not synth.resources("AWS::Cognito::UserPool", synth.external)
    auth = synth.resources("AWS::ApiGatewayV2::Authorizer", synth.external).popitem()[1]["Properties"]
    assert auth["JwtConfiguration"] == {
        "Issuer": "https://login.example.com/realms/openkcm",
        "Audience": ["openkcm-api", "openkcm-ui"],
    }


# -- Rotation and events ---------------------------------------------------------------------------------


def test_rotation_schedule_and_event_bus(synth) -> None:
    t = _template(synth)
    t.has_resource_properties("AWS::Events::EventBus", {"Name": "openkcm-events"})
    rules = synth.resources("AWS::Events::Rule")
    scheduled = [
        r["Properties"]
        for r in rules.values()
        if r["Properties"].get("Description") == "OpenKCM rotation schedule"
    ]
    assert len(scheduled) == 1 and scheduled[0]["ScheduleExpression"] == "rate(1 hour)"
    target = scheduled[0]["Targets"][0]["Arn"]
    rotate = [
        lid
        for lid, f in synth.resources("AWS::Lambda::Function").items()
        if f["Properties"].get("Handler") == "functions/rotate/handler.handler"
    ]
    assert ref_of(target) == rotate[0]
    on_bus = [r["Properties"] for r in rules.values() if "EventBusName" in r["Properties"]]
    assert on_bus and "security_event" in on_bus[0]["EventPattern"]["detail"]["type"]


# -- KMIP ------------------------------------------------------------------------------------------------


def test_nlb_tcp_listener_on_5696_and_fargate_service(synth) -> None:
    t = _template(synth)
    t.has_resource_properties("AWS::ElasticLoadBalancingV2::Listener", {"Port": 5696, "Protocol": "TCP"})
    t.has_resource_properties(
        "AWS::ElasticLoadBalancingV2::TargetGroup",
        {
            "Port": 5696,
            "Protocol": "TCP",
            "TargetType": "ip",
            "HealthCheckProtocol": "HTTP",
            "HealthCheckPort": "5697",
            "HealthCheckPath": "/healthz",
        },
    )
    t.has_resource_properties("AWS::ElasticLoadBalancingV2::LoadBalancer", {"Type": "network"})
    service = synth.resources("AWS::ECS::Service").popitem()[1]["Properties"]
    assert service["LaunchType"] == "FARGATE"
    assert service["DesiredCount"] == 2
    assert service["DeploymentConfiguration"]["DeploymentCircuitBreaker"] == {
        "Enable": True,
        "Rollback": True,
    }
    subnets = service["NetworkConfiguration"]["AwsvpcConfiguration"]["Subnets"]
    assert len(subnets) >= 2
    assert service["NetworkConfiguration"]["AwsvpcConfiguration"]["AssignPublicIp"] == "DISABLED"
    task = synth.resources("AWS::ECS::TaskDefinition").popitem()[1]["Properties"]
    assert task["RuntimePlatform"]["CpuArchitecture"] == "ARM64"
    container = task["ContainerDefinitions"][0]
    assert {"ContainerPort": 5696, "Protocol": "tcp"} in container["PortMappings"]
    assert (
        container["EntryPoint"] == ["/bin/sh", "-c"]
        and "exec python -m kmip_fargate" in container["Command"][0]
    )
    env = {e["Name"]: e["Value"] for e in container["Environment"]}
    assert env["OPENKCM_KMIP_PORT"] == "5696" and env["OPENKCM_KMIP_HEALTH_PORT"] == "5697"
    assert env["OPENKCM_KMIP_CERT"].startswith(env["OPENKCM_DATA_DIR"])
    assert env["OPENKCM_KMIP_PROCESSES"] == str(max(1, int(task["Cpu"]) // 1024))  # one process per vCPU
    assert env["OPENKCM_AUDIT_WAL_FSYNC"] == "false"  # task storage dies with the task (see kmip.py)
    # The TLS material is an ECS secret (JSON fields of the TLS secret), never a plain variable.
    secrets = {s["Name"]: json.dumps(s["ValueFrom"]) for s in container["Secrets"]}
    assert set(secrets) == {"KMIP_TLS_SERVER_CERT_PEM", "KMIP_TLS_SERVER_KEY_PEM", "KMIP_TLS_CA_CERT_PEM"}
    assert ":server_key_pem::" in secrets["KMIP_TLS_SERVER_KEY_PEM"]
    assert not any("PEM" in name for name in env)


def test_kmip_auto_scaling_on_cpu_and_connections(synth) -> None:
    target = synth.resources("AWS::ApplicationAutoScaling::ScalableTarget").popitem()[1]["Properties"]
    assert (target["MinCapacity"], target["MaxCapacity"]) == (2, 10)
    policies = [
        p["Properties"] for p in synth.resources("AWS::ApplicationAutoScaling::ScalingPolicy").values()
    ]
    tracking = [p for p in policies if p["PolicyType"] == "TargetTrackingScaling"]
    assert tracking[0]["TargetTrackingScalingPolicyConfiguration"]["PredefinedMetricSpecification"] == {
        "PredefinedMetricType": "ECSServiceAverageCPUUtilization"
    }
    assert [p for p in policies if p["PolicyType"] == "StepScaling"]
    alarms = json.dumps(synth.resources("AWS::CloudWatch::Alarm"))
    assert "ActiveFlowCount" in alarms


def test_existing_vpc_and_hsm_path(synth) -> None:
    ext = synth.external
    for fn in synth.resources("AWS::Lambda::Function", ext).values():
        if fn["Properties"].get("Handler", "").startswith(("functions/cmk_api", "functions/rotate")):
            assert fn["Properties"]["Environment"]["Variables"]["OPENKCM_PKCS11_MODULES"] == (
                "/var/task/opt/hsm/libvendor.so"
            )
    assert not synth.resources("AWS::EC2::VPC", ext)
    service = synth.resources("AWS::ECS::Service", ext).popitem()[1]["Properties"]
    assert service["NetworkConfiguration"]["AwsvpcConfiguration"]["Subnets"] == [
        "subnet-0a000000000000001",
        "subnet-0a000000000000002",
    ]
    egress = [
        rule
        for group in synth.resources("AWS::EC2::SecurityGroup", ext).values()
        for rule in group["Properties"].get("SecurityGroupEgress", [])
    ]
    hsm = [
        (r["FromPort"], r["ToPort"], r["IpProtocol"]) for r in egress if r.get("CidrIp") == "192.168.40.0/24"
    ]
    assert hsm and set(hsm) == {(1792, 1792, "tcp")}
    # Nothing may leave the VPC except HTTPS and the HSM path.
    assert {r["FromPort"] for r in egress if r.get("CidrIp") == "0.0.0.0/0"} == {443}
    ingress = [
        rule
        for group in synth.resources("AWS::EC2::SecurityGroup", ext).values()
        for rule in group["Properties"].get("SecurityGroupIngress", [])
    ]
    assert [r["CidrIp"] for r in ingress if r.get("FromPort") == 5696 and "CidrIp" in r] == ["203.0.113.0/24"]


# -- Web UI ----------------------------------------------------------------------------------------------


def test_cloudfront_origin_access_control_and_security_headers(synth) -> None:
    t = _template(synth)
    t.resource_count_is("AWS::CloudFront::OriginAccessControl", 1)
    dist = synth.resources("AWS::CloudFront::Distribution").popitem()[1]["Properties"]["DistributionConfig"]
    s3_origin = next(o for o in dist["Origins"] if "S3OriginConfig" in o)
    assert ref_of(s3_origin["OriginAccessControlId"]) in synth.resources(
        "AWS::CloudFront::OriginAccessControl"
    )
    assert s3_origin["S3OriginConfig"].get("OriginAccessIdentity", "") == ""
    assert dist["DefaultCacheBehavior"]["ViewerProtocolPolicy"] == "redirect-to-https"
    assert [b["PathPattern"] for b in dist["CacheBehaviors"]] == ["/v1/*"]
    policy = synth.resources("AWS::CloudFront::ResponseHeadersPolicy").popitem()[1]["Properties"]
    headers = policy["ResponseHeadersPolicyConfig"]["SecurityHeadersConfig"]
    csp = json.dumps(headers["ContentSecurityPolicy"]["ContentSecurityPolicy"])
    assert "frame-ancestors 'self' https://console.example.com" in csp
    assert "object-src 'none'" in csp and "default-src 'self'" in csp
    assert headers["StrictTransportSecurity"]["AccessControlMaxAgeSec"] >= 31536000
    assert headers["StrictTransportSecurity"]["IncludeSubdomains"] is True
    assert "FrameOptions" not in headers  # frame-ancestors decides when console origins are configured
    # The external stack has no console origins: nobody may frame it.
    ext_policy = synth.resources("AWS::CloudFront::ResponseHeadersPolicy", synth.external).popitem()[1]
    assert "frame-ancestors 'none'" in json.dumps(ext_policy)
    # frontend/dist (here: the test's folder) is deployed to the bucket.
    assert synth.resources("Custom::CDKBucketDeployment")


# -- Observability ---------------------------------------------------------------------------------------


def test_alarms_and_dashboard(synth) -> None:
    alarms = [a["Properties"] for a in synth.resources("AWS::CloudWatch::Alarm").values()]
    by_metric: dict[str, int] = {}
    for alarm in alarms:
        by_metric[alarm.get("MetricName", "math")] = by_metric.get(alarm.get("MetricName", "math"), 0) + 1
    assert by_metric["Errors"] == 5 and by_metric["Throttles"] == 5  # 4 service functions + audit schedule
    assert by_metric["ApproximateNumberOfMessagesVisible"] >= 1
    assert by_metric["UnHealthyHostCount"] == 1
    assert by_metric["5xx"] == 1
    topics = synth.resources("AWS::SNS::Topic")
    for alarm in alarms:
        if alarm.get("AlarmDescription", "").startswith("OpenKCM"):
            assert ref_of(alarm["AlarmActions"][0]) in topics
    _template(synth).resource_count_is("AWS::CloudWatch::Dashboard", 1)
    subscriptions = synth.resources("AWS::SNS::Subscription")
    assert any(s["Properties"]["Endpoint"] == "ops@example.com" for s in subscriptions.values())


# -- cdk-nag and synthesis -------------------------------------------------------------------------------


def _nag_findings(synth, level: str) -> list[str]:
    out = []
    for artifact in synth.assembly.stacks:
        for entry in artifact.find_metadata_by_type(f"aws:cdk:{level}"):
            text = str(entry.data)
            if "AwsSolutions-" in text or level == "error":
                out.append(f"{entry.path}: {text.splitlines()[0][:200]}")
    return out


def test_cdk_nag_reports_no_unsuppressed_findings(synth) -> None:
    assert _nag_findings(synth, "error") == []
    assert _nag_findings(synth, "warning") == []


def test_every_suppression_has_a_reason(synth) -> None:
    count = 0
    for template in (synth.template, synth.external):
        for lid, res in template["Resources"].items():
            for suppression in res.get("Metadata", {}).get("cdk_nag", {}).get("rules_to_suppress", []):
                count += 1
                assert suppression["id"].startswith("AwsSolutions-"), lid
                assert len(suppression["reason"]) >= 40, (lid, suppression)
    assert count > 0


def test_synthesis_is_fast_enough(synth) -> None:
    assert synth.seconds < 120, f"synthesis took {synth.seconds:.1f} s"


def test_customer_keystore_roles_need_an_external_id_in_another_account(synth) -> None:
    assume = [(lid, s) for lid, s in _policies(synth.template) if "sts:AssumeRole" in as_list(s["Action"])]
    holders = {lid.split("Role")[0] for lid, _ in assume}
    assert holders == {"ApiCmkApi", "RotationRotate", "KmipTask"}
    for _, statement in assume:
        assert statement["Action"] == "sts:AssumeRole"
        assert statement["Condition"]["Null"] == {"sts:ExternalId": "false"}
        assert statement["Condition"]["StringNotEquals"]["aws:ResourceAccount"] == {"Ref": "AWS::AccountId"}


def test_keystore_access_roles_are_output_and_given_to_every_process(synth) -> None:
    """The roles allowed to assume a customer's role are the stack output KeystoreAccessRoleArns and the
    OPENKCM_KEYSTORE_ACCESS_ROLE_ARNS of every function and the KMIP task (the trust template names them)."""
    assuming = set()
    for lid, statement in _policies(synth.template):
        if statement.get("Sid") == "AssumeCustomerKeystoreRole":
            policy = synth.template["Resources"][lid]["Properties"]
            assuming.update(ref_of(r) for r in policy["Roles"])
    output = synth.template["Outputs"]["KeystoreAccessRoleArns"]["Value"]
    listed = [ref_of(item) for item in output["Fn::Join"][1]]
    assert sorted(listed) == sorted(assuming) and len(listed) == 3
    values = [
        f["Properties"]["Environment"]["Variables"]["OPENKCM_KEYSTORE_ACCESS_ROLE_ARNS"]
        for f in synth.resources("AWS::Lambda::Function").values()
        if f["Properties"].get("Handler", "").startswith("functions/")
    ]
    task = synth.resources("AWS::ECS::TaskDefinition").popitem()[1]["Properties"]
    container = task["ContainerDefinitions"][0]
    values += [
        e["Value"] for e in container["Environment"] if e["Name"] == "OPENKCM_KEYSTORE_ACCESS_ROLE_ARNS"
    ]
    assert len(values) == 6  # five functions + the KMIP task
    for value in values:
        assert value == output


def test_notification_topic_takes_events_only_from_this_account(synth) -> None:
    policies = [p["Properties"]["PolicyDocument"] for p in synth.resources("AWS::SNS::TopicPolicy").values()]
    denies = [
        s
        for doc in policies
        for s in _statements(doc)
        if s["Effect"] == "Deny" and s.get("Principal") == {"Service": "events.amazonaws.com"}
    ]
    assert denies and denies[0]["Condition"] == {
        "StringNotEquals": {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}
    }


def test_provisioned_concurrency_alias_is_what_the_api_invokes(synth) -> None:
    assert not synth.resources("AWS::Lambda::Alias")  # default: none
    aliases = synth.resources("AWS::Lambda::Alias", synth.external)
    assert len(aliases) == 1
    alias_lid, alias = aliases.popitem()
    assert alias["Properties"]["ProvisionedConcurrencyConfig"] == {"ProvisionedConcurrentExecutions": 2}
    uris = [
        i["Properties"]["IntegrationUri"]
        for i in synth.resources("AWS::ApiGatewayV2::Integration", synth.external).values()
    ]
    assert sum(1 for uri in uris if ref_of(uri) == alias_lid) == 3  # /v1/{proxy+}, health, openapi


def test_root_key_versions_are_listed_oldest_first_and_all_conditioned(synth) -> None:
    keys = {
        lid: r["Properties"]
        for lid, r in synth.resources("AWS::KMS::Key", synth.external).items()
        if "internal root key" in r["Properties"]["Description"]
    }
    assert sorted(p["Description"].split("version ")[1][0] for p in keys.values()) == ["1", "2"]
    env = next(
        f["Properties"]["Environment"]["Variables"]
        for f in synth.resources("AWS::Lambda::Function", synth.external).values()
        if f["Properties"].get("Handler") == "functions/rotate/handler.handler"
    )
    listed = _key_list(env["OPENKCM_ROOT_KMS_KEY_IDS"])
    assert listed == sorted(keys, key=lambda lid: keys[lid]["Description"])  # version 1, then 2
    for props in keys.values():
        users = [s for s in props["KeyPolicy"]["Statement"] if "kms:Decrypt" in as_list(s["Action"])]
        assert len(users) >= 4 and all(
            "kms:EncryptionContext:purpose" in s["Condition"]["StringEquals"] for s in users
        )
