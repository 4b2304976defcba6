"""Deployment parameters, read once from CDK context (``cdk deploy -c key=value`` or ``cdk.json``).

Every knob of a deployment is here with its default, so the README, the stack and the tests agree on
one list. Values arrive as strings from ``-c`` and as JSON values from ``cdk.json``; :func:`_list`,
:func:`_int` and :func:`_bool` accept both.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from openkcm.config import Settings

REPO_ROOT = Path(__file__).resolve().parent.parent
_SETTINGS_DEFAULTS = Settings.model_fields


def _default(name: str) -> Any:
    return _SETTINGS_DEFAULTS[name].default


def _list(value: Any) -> list[str]:
    if value is None or value == "":
        return []
    if isinstance(value, list):
        return [str(v).strip() for v in value if str(v).strip()]
    text = str(value).strip()
    if text.startswith("["):
        return [str(v).strip() for v in json.loads(text) if str(v).strip()]
    return [part.strip() for part in text.split(",") if part.strip()]


def _int(value: Any, name: str, low: int = 0, high: int = 10_000) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ValueError(f"context {name!r} must be an integer, got {value!r}") from None
    if not low <= number <= high:
        raise ValueError(f"context {name!r} must be between {low} and {high}, got {number}")
    return number


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    return str(value).strip().lower() in ("1", "true", "yes", "on")


@dataclass(frozen=True)
class DeployConfig:
    """One deployment (the same for every region it is deployed to)."""

    table_prefix: str = _default("table_prefix")
    regions: list[str] = field(default_factory=lambda: ["us-east-1"])
    trust_domain: str = "openkcm.example.com"
    root_key_versions: int = 1
    event_bus_name: str = _default("event_bus_name")
    # JWT: an external OIDC issuer + audience, or (both empty) a Cognito user pool made by the stack.
    jwt_issuer: str = ""
    jwt_audience: list[str] = field(default_factory=list)
    cognito_plus: bool = False  # Cognito Plus feature plan with full threat protection
    # Lambdas: per function reserved concurrency (0 = unreserved, use the account pool).
    api_reserved_concurrency: int = 0
    webhook_reserved_concurrency: int = 0
    worker_reserved_concurrency: int = 5
    rotate_reserved_concurrency: int = 1
    api_provisioned_concurrency: int = 0
    rotation_schedule: str = _default("rotation_schedule")
    # Audit schedule Lambda (functions/audit_schedule): signed checkpoints and archiving (issue 11).
    audit_schedule: str = "rate(5 minutes)"
    audit_retention_days: int = int(_default("audit_retention_days"))  # in DynamoDB before archive + expiry
    log_retention_days: int = 365
    # Folder with one sub-folder per function (cmk_api, provision, rotate, audit_schedule) built by build_assets.sh;
    # a file ARCH in a sub-folder saying "x86_64" makes that function x86_64 (DECISIONS 17).
    lambda_asset_root: Path = REPO_ROOT / "build" / "lambda"
    # Docker build context of the KMIP image (staged by build_assets.sh; Dockerfile at kmip_fargate/).
    kmip_image_dir: Path = REPO_ROOT / "build" / "kmip-image"
    kmip_dockerfile: str = "kmip_fargate/Dockerfile"
    kmip_cpu: int = 1024
    kmip_memory_mib: int = 2048
    kmip_desired_count: int = 2
    kmip_min_count: int = 2
    kmip_max_count: int = 10
    kmip_cpu_target_percent: int = 60
    kmip_connections_per_task: int = 2000
    kmip_allowed_cidrs: list[str] = field(default_factory=lambda: ["0.0.0.0/0"])
    kmip_internet_facing: bool = True
    # Existing secrets (else the stack creates empty ones that the operator fills, see README).
    kmip_tls_secret_arn: str = ""
    ca_secret_arn: str = ""
    # Network (DECISIONS 16): an existing VPC whose private subnets route to the on-prem HSM over the
    # customer's VPN / Direct Connect, or (empty) a new two-AZ VPC.
    vpc_id: str = ""
    availability_zones: list[str] = field(default_factory=list)
    private_subnet_ids: list[str] = field(default_factory=list)
    public_subnet_ids: list[str] = field(default_factory=list)
    vpc_cidr: str = ""
    hsm_cidrs: list[str] = field(default_factory=list)
    hsm_ports: list[int] = field(default_factory=lambda: [1792, 2223, 2225])
    nat_gateways: int = 2
    pkcs11_modules: list[str] = field(default_factory=list)
    # Web UI
    web_dist_dir: Path = REPO_ROOT / "frontend" / "dist"
    frame_ancestors: list[str] = field(default_factory=list)
    web_domain_names: list[str] = field(default_factory=list)
    web_certificate_arn: str = ""
    web_acl_arn: str = ""
    # Operations
    alarm_email: str = ""
    audit_archive_retention_days: int = 2555

    @property
    def uses_existing_vpc(self) -> bool:
        return bool(self.vpc_id)

    def validate(self) -> None:
        if not re.fullmatch(r"[A-Za-z0-9_.-]{1,200}", self.table_prefix):
            raise ValueError("context 'tablePrefix' must match [A-Za-z0-9_.-]{1,200}")
        if bool(self.jwt_issuer) != bool(self.jwt_audience):
            raise ValueError(
                "give both 'jwtIssuer' and 'jwtAudience' (external issuer), or neither (Cognito)"
            )
        if self.jwt_issuer and not self.jwt_issuer.startswith("https://"):
            raise ValueError("context 'jwtIssuer' must be an https:// URL")
        if self.uses_existing_vpc:
            if len(self.availability_zones) < 2 or len(self.private_subnet_ids) != len(
                self.availability_zones
            ):
                raise ValueError(
                    "an existing VPC needs 'availabilityZones' (at least two) and one 'privateSubnetIds' "
                    "entry per zone"
                )
            if self.kmip_internet_facing and len(self.public_subnet_ids) != len(self.availability_zones):
                raise ValueError("an internet-facing KMIP load balancer needs one 'publicSubnetIds' per zone")
        if self.kmip_desired_count and not (
            2 <= self.kmip_min_count <= self.kmip_desired_count <= self.kmip_max_count
        ):
            # Two tasks at least, so that the service spans two AZs (a desired count of 0 parks it).
            raise ValueError(
                "need 2 <= kmipMinCount <= kmipDesiredCount <= kmipMaxCount (or kmipDesiredCount 0)"
            )
        for module in self.pkcs11_modules:
            if not module.startswith("/") or not module.endswith(".so"):
                raise ValueError(f"pkcs11Modules entries must be absolute paths to .so files, got {module!r}")
        if not re.fullmatch(r"(rate|cron)\(.+\)", self.audit_schedule):
            raise ValueError(
                "context 'auditSchedule' must be an EventBridge rate(...) or cron(...) expression"
            )
        for ancestor in self.frame_ancestors:
            if not re.fullmatch(r"https://[A-Za-z0-9.*-]+(:\d+)?", ancestor):
                raise ValueError(f"frameAncestors entries must be https origins, got {ancestor!r}")


def _path(value: Any, default: Path) -> Path:
    if value in (None, ""):
        return default
    path = Path(str(value))
    return path if path.is_absolute() else REPO_ROOT / path


def from_context(get: Any) -> DeployConfig:
    """Build the config from a ``node.try_get_context``-like callable."""
    d = DeployConfig()

    def ctx(key: str, default: Any) -> Any:
        value = get(key)
        return default if value is None else value

    config = DeployConfig(
        table_prefix=str(ctx("tablePrefix", d.table_prefix)),
        regions=_list(ctx("regions", d.regions)) or d.regions,
        trust_domain=str(ctx("trustDomain", d.trust_domain)),
        root_key_versions=_int(ctx("rootKeyVersions", d.root_key_versions), "rootKeyVersions", 1, 20),
        event_bus_name=str(ctx("eventBusName", d.event_bus_name)),
        jwt_issuer=str(ctx("jwtIssuer", "")).rstrip("/"),
        jwt_audience=_list(ctx("jwtAudience", [])),
        cognito_plus=_bool(ctx("cognitoPlus", False)),
        api_reserved_concurrency=_int(ctx("apiReservedConcurrency", 0), "apiReservedConcurrency"),
        webhook_reserved_concurrency=_int(ctx("webhookReservedConcurrency", 0), "webhookReservedConcurrency"),
        worker_reserved_concurrency=_int(
            ctx("workerReservedConcurrency", d.worker_reserved_concurrency), "workerReservedConcurrency"
        ),
        rotate_reserved_concurrency=_int(
            ctx("rotateReservedConcurrency", d.rotate_reserved_concurrency), "rotateReservedConcurrency"
        ),
        api_provisioned_concurrency=_int(ctx("apiProvisionedConcurrency", 0), "apiProvisionedConcurrency"),
        rotation_schedule=str(ctx("rotationSchedule", d.rotation_schedule)),
        audit_schedule=str(ctx("auditSchedule", d.audit_schedule)),
        audit_retention_days=_int(
            ctx("auditRetentionDays", d.audit_retention_days), "auditRetentionDays", 0, 36500
        ),
        log_retention_days=_int(ctx("logRetentionDays", d.log_retention_days), "logRetentionDays", 1, 3653),
        lambda_asset_root=_path(get("lambdaAssetRoot"), d.lambda_asset_root),
        kmip_image_dir=_path(get("kmipImageDir"), d.kmip_image_dir),
        kmip_dockerfile=str(ctx("kmipDockerfile", d.kmip_dockerfile)),
        kmip_cpu=_int(ctx("kmipCpu", d.kmip_cpu), "kmipCpu", 256, 16384),
        kmip_memory_mib=_int(ctx("kmipMemoryMiB", d.kmip_memory_mib), "kmipMemoryMiB", 512, 122880),
        kmip_desired_count=_int(ctx("kmipDesiredCount", d.kmip_desired_count), "kmipDesiredCount", 0, 1000),
        kmip_min_count=_int(ctx("kmipMinCount", d.kmip_min_count), "kmipMinCount", 0, 1000),
        kmip_max_count=_int(ctx("kmipMaxCount", d.kmip_max_count), "kmipMaxCount", 1, 1000),
        kmip_cpu_target_percent=_int(
            ctx("kmipCpuTargetPercent", d.kmip_cpu_target_percent), "kmipCpuTargetPercent", 10, 95
        ),
        kmip_connections_per_task=_int(
            ctx("kmipConnectionsPerTask", d.kmip_connections_per_task), "kmipConnectionsPerTask", 1, 1_000_000
        ),
        kmip_allowed_cidrs=_list(ctx("kmipAllowedCidrs", d.kmip_allowed_cidrs)),
        kmip_internet_facing=_bool(ctx("kmipInternetFacing", d.kmip_internet_facing)),
        kmip_tls_secret_arn=str(ctx("kmipTlsSecretArn", "")),
        ca_secret_arn=str(ctx("caSecretArn", "")),
        vpc_id=str(ctx("vpcId", "")),
        availability_zones=_list(ctx("availabilityZones", [])),
        private_subnet_ids=_list(ctx("privateSubnetIds", [])),
        public_subnet_ids=_list(ctx("publicSubnetIds", [])),
        vpc_cidr=str(ctx("vpcCidr", "")),
        hsm_cidrs=_list(ctx("hsmCidrs", [])),
        hsm_ports=[_int(p, "hsmPorts", 1, 65535) for p in _list(ctx("hsmPorts", d.hsm_ports))],
        pkcs11_modules=_list(ctx("pkcs11Modules", [])),
        nat_gateways=_int(ctx("natGateways", d.nat_gateways), "natGateways", 0, 3),
        web_dist_dir=_path(get("webDistDir"), d.web_dist_dir),
        frame_ancestors=_list(ctx("frameAncestors", [])),
        web_domain_names=_list(ctx("webDomainNames", [])),
        web_certificate_arn=str(ctx("webCertificateArn", "")),
        web_acl_arn=str(ctx("webAclArn", "")),
        alarm_email=str(ctx("alarmEmail", "")),
        audit_archive_retention_days=_int(
            ctx("auditArchiveRetentionDays", d.audit_archive_retention_days),
            "auditArchiveRetentionDays",
            1,
            36500,
        ),
    )
    config.validate()
    return config
