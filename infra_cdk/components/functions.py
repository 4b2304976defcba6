"""One way to make a service Lambda: its own role (no managed policies), its own log group with
retention, Python 3.12 on arm64 unless its asset folder says otherwise (DECISIONS 17), X-Ray tracing,
reserved concurrency from the deployment parameters."""

from __future__ import annotations

from pathlib import Path

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from constructs import Construct

from infra_cdk.config import DeployConfig

RUNTIME = lambda_.Runtime.PYTHON_3_12


def architecture_of(asset: Path) -> lambda_.Architecture:
    """build_assets.sh writes ``ARCH`` = x86_64 when a dependency has no aarch64 wheel."""
    marker = asset / "ARCH"
    if marker.is_file() and marker.read_text().strip() == "x86_64":
        return lambda_.Architecture.X86_64
    return lambda_.Architecture.ARM_64


def asset_dir(config: DeployConfig, name: str) -> Path:
    path = config.lambda_asset_root / name
    if not path.is_dir():
        raise FileNotFoundError(
            f"Lambda asset folder {path} does not exist: run infra_cdk/build_assets.sh first "
            "(or pass -c lambdaAssetRoot=<folder with cmk_api/, provision/, rotate/, audit_schedule/>)"
        )
    return path


class ServiceFunction(Construct):
    def __init__(
        self,
        scope: Construct,
        cid: str,
        *,
        config: DeployConfig,
        asset: str,
        handler: str,
        description: str,
        environment: dict[str, str],
        reserved_concurrency: int = 0,
        timeout: Duration | None = None,
        memory_mib: int = 1024,
        vpc: ec2.IVpc | None = None,
        subnets: ec2.SubnetSelection | None = None,
        security_group: ec2.ISecurityGroup | None = None,
    ) -> None:
        super().__init__(scope, cid)
        folder = asset_dir(config, asset)
        self.log_group = logs.LogGroup(
            self,
            "Logs",
            retention=retention(config.log_retention_days),
            removal_policy=RemovalPolicy.RETAIN,
        )
        self.role = iam.Role(
            self,
            "Role",
            assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
            description=f"OpenKCM {cid}: least privilege, granted per table and key",
        )
        self.role.add_to_principal_policy(
            iam.PolicyStatement(
                sid="OwnLogGroup",
                actions=["logs:CreateLogStream", "logs:PutLogEvents"],
                resources=[self.log_group.log_group_arn],
            )
        )
        if vpc is not None:
            # What AWSLambdaVPCAccessExecutionRole grants, written out so no managed policy is attached.
            self.role.add_to_principal_policy(
                iam.PolicyStatement(
                    sid="VpcNetworkInterfaces",
                    actions=[
                        "ec2:CreateNetworkInterface",
                        "ec2:DescribeNetworkInterfaces",
                        "ec2:DescribeSubnets",
                        "ec2:DeleteNetworkInterface",
                        "ec2:AssignPrivateIpAddresses",
                        "ec2:UnassignPrivateIpAddresses",
                    ],
                    resources=["*"],
                )
            )
        self.function = lambda_.Function(
            self,
            "Function",
            description=description,
            runtime=RUNTIME,
            architecture=architecture_of(folder),
            code=lambda_.Code.from_asset(str(folder)),
            handler=handler,
            role=self.role,
            environment={"POWERTOOLS_SERVICE_NAME": f"openkcm-{asset}", **environment},
            timeout=timeout or Duration.seconds(29),  # under API Gateway's 30 s
            memory_size=memory_mib,
            reserved_concurrent_executions=reserved_concurrency or None,
            tracing=lambda_.Tracing.ACTIVE,
            log_group=self.log_group,
            vpc=vpc,
            vpc_subnets=subnets,
            security_groups=[security_group] if security_group else None,
        )


_RETENTION_DAYS = {
    1: "ONE_DAY",
    3: "THREE_DAYS",
    5: "FIVE_DAYS",
    7: "ONE_WEEK",
    14: "TWO_WEEKS",
    30: "ONE_MONTH",
    60: "TWO_MONTHS",
    90: "THREE_MONTHS",
    120: "FOUR_MONTHS",
    150: "FIVE_MONTHS",
    180: "SIX_MONTHS",
    365: "ONE_YEAR",
    400: "THIRTEEN_MONTHS",
    545: "EIGHTEEN_MONTHS",
    731: "TWO_YEARS",
    1096: "THREE_YEARS",
    1827: "FIVE_YEARS",
    2192: "SIX_YEARS",
    2557: "SEVEN_YEARS",
    2922: "EIGHT_YEARS",
    3288: "NINE_YEARS",
    3653: "TEN_YEARS",
}


def retention(days: int) -> logs.RetentionDays:
    """The smallest CloudWatch Logs retention that keeps logs at least ``days`` days."""
    for allowed in sorted(_RETENTION_DAYS):
        if allowed >= days:
            return getattr(logs.RetentionDays, _RETENTION_DAYS[allowed])
    return logs.RetentionDays.TEN_YEARS
