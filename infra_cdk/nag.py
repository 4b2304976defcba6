"""cdk-nag AwsSolutions suppressions: each names the rule, the resource it applies to and the reason.

Only findings with a reason that holds for this design are suppressed here; everything else is fixed in
the constructs. Wildcard findings (IAM5) are suppressed per exact ``appliesTo`` entry, so a new
wildcard anywhere still fails synthesis.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aws_cdk import Stack
from cdk_nag import NagPackSuppression, NagSuppressions
from constructs import IConstruct

from openkcm.config import Settings

if TYPE_CHECKING:
    from infra_cdk.stack import OpenKcmStack

PYTHON_PINNED = (
    "Python 3.12 on purpose: the package supports <3.13 (pyproject) and build_assets.sh installs cp312 "
    "wheels for exactly this runtime; moving up is a deliberate dependency upgrade, not a synth default."
)
XRAY = (
    "xray:PutTraceSegments and xray:PutTelemetryRecords support no resource-level permissions; this is the "
    "statement Tracing.ACTIVE adds (Powertools tracer)."
)
VPC_ENI = (
    "The EC2 network-interface actions a VPC Lambda needs (the content of AWSLambdaVPCAccessExecutionRole, "
    "written out to avoid a managed policy) support no resource-level permissions."
)

CUSTOMER_ROLE = (
    "BYOK/HYOK keys live in customers' accounts under role names they choose (trust template of "
    "openkcm.ops.keystores); the statement only allows sts:AssumeRole, only into other accounts "
    "(aws:ResourceAccount) and only with an external id (confused-deputy guard)."
)


def _s(rule: str, reason: str, applies_to: list[str] | None = None) -> NagPackSuppression:
    return NagPackSuppression(id=f"AwsSolutions-{rule}", reason=reason, applies_to=applies_to)


def _on(construct: IConstruct, *suppressions: NagPackSuppression, children: bool = True) -> None:
    NagSuppressions.add_resource_suppressions(construct, list(suppressions), apply_to_children=children)


def suppress(stack: OpenKcmStack) -> None:
    config = stack.config
    api, kmip, web, rotation = stack.api, stack.kmip, stack.web, stack.rotation

    # -- Lambda --------------------------------------------------------------------------------------
    for fn in [*api.functions.values(), rotation.rotate, stack.audit.function]:
        _on(fn.function, _s("L1", PYTHON_PINNED), children=False)
        _on(fn.role, _s("IAM5", XRAY, ["Resource::*"]))
    for fn in (api.cmk_api, rotation.rotate):
        _on(fn.role, _s("IAM5", VPC_ENI, ["Resource::*"]))
    for role in (api.cmk_api.role, rotation.rotate.role, kmip.task_role):
        _on(role, _s("IAM5", CUSTOMER_ROLE, ["Resource::arn:<AWS::Partition>:iam::*:role/*"]))
    if getattr(api, "pretoken", None) is not None:
        _on(api.pretoken, _s("L1", PYTHON_PINNED), children=False)
    archive = stack.resolve(stack.data.audit_archive.bucket_arn)["Fn::GetAtt"][0]
    prefix = Settings.model_fields["audit_archive_prefix"].default
    for role in (rotation.rotate.role, api.cmk_api.role, stack.audit.function.role):
        _on(
            role,
            _s(
                "IAM5",
                "Audit archive segments are objects under the archive prefix, one generated key per segment; "
                "the grant is Get (and for the archiving job Put) on that prefix of one bucket, never delete.",
                [f"Resource::<{archive}.Arn>/{prefix}*"],
            ),
        )

    # -- API -----------------------------------------------------------------------------------------
    from openkcm.api.app import PUBLIC_ROUTES

    for method, path in sorted(PUBLIC_ROUTES):
        route = api.http_api.node.try_find_child(f"{method}{path.replace('/', '--')}")
        if route is not None:
            _on(
                route,
                _s(
                    "APIG4",
                    f"{method} {path} is public by the API's own declaration (openkcm.api.app.PUBLIC_ROUTES): "
                    "a liveness answer or the OpenAPI document, no tenant data.",
                ),
            )
    webhook_route = api.http_api.node.try_find_child("POST--v1--marketplace--events")
    if webhook_route is not None:
        _on(
            webhook_route,
            _s(
                "APIG4",
                "The marketplace webhook carries no JWT: every request is authenticated by its "
                "X-OpenKCM-Signature HMAC-SHA256 (secret in Secrets Manager, constant-time compare, 5-minute "
                "window, replay guard), checked by the function before anything is done (DECISIONS 13).",
            ),
        )
    _on(
        api.webhook_secret,
        _s(
            "SMG4",
            "The webhook HMAC secret is shared with the marketplace; rotating it is a coordinated change on "
            "both sides (README: Rotate the webhook secret), so a Secrets Manager rotation Lambda cannot do it alone.",
        ),
    )
    _on(
        api.ca_secret,
        _s(
            "SMG4",
            "The deployment CA key is long-lived by design (one CA per deployment, DECISIONS 9); it is "
            "rotated by the documented re-issue procedure, which a rotation Lambda cannot perform.",
        ),
    )
    if api.user_pool is not None and not config.cognito_plus:
        _on(
            api.user_pool,
            _s(
                "COG8",
                "MFA (TOTP) is required for every user and self sign-up is off; the Plus feature plan's threat "
                "protection is a cost decision of the operator: deploy with -c cognitoPlus=true to enable it.",
            ),
        )

    # -- KMIP ----------------------------------------------------------------------------------------
    _on(
        kmip.task_definition,
        _s(
            "ECS2",
            "The container environment holds only non-secret configuration (table prefix, ARNs, ports, file "
            "paths); the TLS key and certificates come from Secrets Manager as ECS secrets.",
        ),
        children=False,
    )
    _on(
        kmip.nlb,
        _s(
            "ELB2",
            "The listener is plain TCP (TLS is terminated by the KMIP server so that mutual TLS reaches it); "
            "NLB access logs are only written for TLS listeners. VPC flow logs and the server's own audit "
            "trail record the connections.",
        ),
        children=False,
    )
    _on(
        kmip.execution_role,
        _s("IAM5", "ecr:GetAuthorizationToken supports no resource-level permissions.", ["Resource::*"]),
    )
    _on(
        kmip.tls_secret,
        _s(
            "SMG4",
            "The KMIP server certificate is issued by the deployment CA and replaced by the documented "
            "re-issue procedure (openkcm pki), which a Secrets Manager rotation Lambda cannot perform.",
        ),
    )
    if any(cidr in ("0.0.0.0/0", "::/0") for cidr in config.kmip_allowed_cidrs):
        _on(
            kmip.nlb_sg,
            _s(
                "EC23",
                "KMIP clients (customers' MongoDB servers) connect from anywhere on port 5696 only, and every "
                "connection must present a client certificate of the deployment CA (mutual TLS); narrow it "
                "with -c kmipAllowedCidrs=...",
            ),
            children=False,
        )

    # -- Web UI --------------------------------------------------------------------------------------
    if not config.web_certificate_arn:
        _on(
            web.distribution,
            _s(
                "CFR4",
                "Without a custom domain the distribution uses the *.cloudfront.net default certificate, whose "
                "security policy CloudFront fixes; deploy with -c webDomainNames=... -c webCertificateArn=... "
                "to enforce TLSv1.2_2021.",
            ),
            children=False,
        )
    _on(
        web.distribution,
        _s(
            "CFR1",
            "The CMK console serves customers worldwide; access is by OIDC sign-in with MFA, not by country.",
        ),
        children=False,
    )
    if not config.web_acl_arn:
        _on(
            web.distribution,
            _s(
                "CFR2",
                "WAF is optional: the UI is static files and every /v1 call needs a verified JWT or webhook HMAC; "
                "attach a CLOUDFRONT-scope web ACL with -c webAclArn=... (created in us-east-1).",
            ),
            children=False,
        )
    if web.deployment is not None:
        # The BucketDeployment singleton Lambda is created by the CDK at the stack root.
        for child in Stack.of(stack).node.children:
            if child.node.id.startswith("Custom::CDKBucketDeployment"):
                _on(
                    child,
                    _s("L1", "CDK-provided BucketDeployment handler; its runtime is chosen by aws-cdk-lib."),
                    _s(
                        "IAM4",
                        "CDK-provided BucketDeployment handler role (AWSLambdaBasicExecutionRole for its logs).",
                        [
                            "Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole"
                        ],
                    ),
                    _s(
                        "IAM5",
                        "CDK-provided BucketDeployment handler: reads the CDK asset bucket, replaces the objects of "
                        "the web bucket, invalidates the distribution (no resource-level permission for that).",
                    ),
                )
