"""KMIP: the Fargate service built from ``kmip_fargate/Dockerfile`` behind a Network Load Balancer.

The listener is plain TCP on 5696: TLS is terminated by the server itself, because mutual TLS (the
client certificate that names tenant and service, DECISIONS 9) must reach it. Tasks spread over at
least two AZs, scale on CPU and on connection count, and read their server certificate, key and the
CA certificate from Secrets Manager (injected by ECS, written to files by the entry point)."""

from __future__ import annotations

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_applicationautoscaling as appscaling
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_ecr_assets as ecr_assets
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_elasticloadbalancingv2 as elbv2
from aws_cdk import aws_events as events
from aws_cdk import aws_iam as iam
from aws_cdk import aws_logs as logs
from aws_cdk import aws_secretsmanager as secrets
from constructs import Construct

from infra_cdk.components.api import AUDIT_APPEND, COUNT, READ, WRITE, Api
from infra_cdk.components.data import Data
from infra_cdk.components.env import infra, setting
from infra_cdk.components.functions import retention
from infra_cdk.components.network import Network
from infra_cdk.config import DeployConfig

KMIP_PORT = 5696
# The server's plain-HTTP health endpoint (ServerConfig.health_port): "GET" -> 200 {"healthy": true} or 503.
# Checking it instead of 5696 keeps health probes from showing up as failed TLS handshakes.
HEALTH_PORT = 5697
DATA_DIR = "/var/lib/openkcm"  # the Dockerfile's OPENKCM_DATA_DIR, home of its non-root user
# Writable paths of the read-only task: each is a VOLUME of kmip_fargate/Dockerfile (same path).
WRITABLE_VOLUMES = {"data": DATA_DIR, "tmp": "/tmp"}
TLS_FIELDS = {
    "KMIP_TLS_SERVER_CERT_PEM": "server_cert_pem",
    "KMIP_TLS_SERVER_KEY_PEM": "server_key_pem",
    "KMIP_TLS_CA_CERT_PEM": "ca_cert_pem",
}
TLS_ENTRYPOINT = (
    'set -eu; umask 077; mkdir -p "$(dirname "$OPENKCM_KMIP_CERT")"; '
    'printf \'%s\\n\' "$KMIP_TLS_SERVER_CERT_PEM" > "$OPENKCM_KMIP_CERT"; '
    'printf \'%s\\n\' "$KMIP_TLS_SERVER_KEY_PEM" > "$OPENKCM_KMIP_KEY"; '
    'printf \'%s\\n\' "$KMIP_TLS_CA_CERT_PEM" > "$OPENKCM_KMIP_CA"; '
    "unset KMIP_TLS_SERVER_CERT_PEM KMIP_TLS_SERVER_KEY_PEM KMIP_TLS_CA_CERT_PEM; "
    "exec python -m kmip_fargate"
)


class Kmip(Construct):
    def __init__(
        self,
        scope: Construct,
        cid: str,
        *,
        config: DeployConfig,
        data: Data,
        network: Network,
        api: Api,
        bus: events.IEventBus,
        base_env: dict[str, str],
    ) -> None:
        super().__init__(scope, cid)
        if config.kmip_tls_secret_arn:
            self.tls_secret = secrets.Secret.from_secret_complete_arn(
                self, "TlsSecret", config.kmip_tls_secret_arn
            )
        else:
            self.tls_secret = secrets.Secret(
                self,
                "TlsSecret",
                description=(
                    'OpenKCM KMIP server TLS: {"server_cert_pem", "server_key_pem", "ca_cert_pem"} '
                    "(fill after deploy, see infra_cdk/README.md)"
                ),
                encryption_key=data.table_key,
                removal_policy=RemovalPolicy.RETAIN,
            )

        self.cluster = ecs.Cluster(
            self, "Cluster", vpc=network.vpc, container_insights_v2=ecs.ContainerInsights.ENABLED
        )
        self.log_group = logs.LogGroup(
            self, "Logs", retention=retention(config.log_retention_days), removal_policy=RemovalPolicy.RETAIN
        )
        self.task_role = iam.Role(
            self,
            "TaskRole",
            assumed_by=iam.ServicePrincipal("ecs-tasks.amazonaws.com"),
            description="OpenKCM KMIP task: least privilege, granted per table and key",
        )
        self.execution_role = iam.Role(
            self,
            "ExecutionRole",
            assumed_by=iam.ServicePrincipal("ecs-tasks.amazonaws.com"),
            description="OpenKCM KMIP task execution: pull the image, write logs",
        )
        self.task_definition = ecs.FargateTaskDefinition(
            self,
            "Task",
            cpu=config.kmip_cpu,
            memory_limit_mib=config.kmip_memory_mib,
            task_role=self.task_role,
            execution_role=self.execution_role,
            runtime_platform=ecs.RuntimePlatform(
                cpu_architecture=ecs.CpuArchitecture.ARM64,
                operating_system_family=ecs.OperatingSystemFamily.LINUX,
            ),
        )
        image = ecs.ContainerImage.from_asset(
            str(config.kmip_image_dir),
            file=config.kmip_dockerfile,
            platform=ecr_assets.Platform.LINUX_ARM64,
        )
        # TLS material: ECS injects the secret's JSON fields as variables (read by the execution role,
        # never in the task definition); the entry point writes them 0600 to the data directory, where
        # kmip_fargate.main reads OPENKCM_KMIP_CERT/KEY/CA, and starts the server.
        tls_dir = f"{DATA_DIR}/tls"
        self.container = self.task_definition.add_container(
            "kmip",
            image=image,
            essential=True,
            entry_point=["/bin/sh", "-c"],
            command=[TLS_ENTRYPOINT],
            environment={
                **base_env,
                setting("data_dir"): DATA_DIR,
                infra("OPENKCM_KMIP_PORT"): str(KMIP_PORT),
                infra("OPENKCM_KMIP_HEALTH_PORT"): str(HEALTH_PORT),
                infra("OPENKCM_KMIP_CERT"): f"{tls_dir}/server.pem",
                infra("OPENKCM_KMIP_KEY"): f"{tls_dir}/server.key",
                infra("OPENKCM_KMIP_CA"): f"{tls_dir}/ca.pem",
                # One asyncio process per vCPU: a single process tops out at one core (bench/README.md).
                infra("OPENKCM_KMIP_PROCESSES"): str(max(1, config.kmip_cpu // 1024)),
                # The audit WAL lives on task storage, which does not outlive the task: an fsync per
                # answer (1.5-60 ms on disk) would buy nothing there. Records reach the OS before the
                # answer (they survive a crashed worker, which the task's next worker replays) and the
                # DynamoDB trail within audit_flush_seconds (bench/README.md, "Performance").
                setting("audit_wal_fsync"): "false",
            },
            secrets={
                variable: ecs.Secret.from_secrets_manager(self.tls_secret, field)
                for variable, field in TLS_FIELDS.items()
            },
            logging=ecs.LogDrivers.aws_logs(stream_prefix="kmip", log_group=self.log_group),
            port_mappings=[
                ecs.PortMapping(container_port=KMIP_PORT, protocol=ecs.Protocol.TCP),
                ecs.PortMapping(container_port=HEALTH_PORT, protocol=ecs.Protocol.TCP),
            ],
            # Read-only root filesystem: the audit write-ahead log and the TLS files live in the data
            # directory, a task bind-mount volume (below) at the Dockerfile's VOLUME path, so ECS copies the
            # image's directory (owned by its non-root user) into it; /tmp likewise.
            readonly_root_filesystem=True,
            stop_timeout=Duration.seconds(30),
        )

        for name, path in WRITABLE_VOLUMES.items():
            self.task_definition.add_volume(name=name)  # bind mount on the task's ephemeral storage
            self.container.add_mount_points(
                ecs.MountPoint(source_volume=name, container_path=path, read_only=False)
            )

        task_sg = ec2.SecurityGroup(
            self, "TaskSg", vpc=network.vpc, description="OpenKCM KMIP tasks", allow_all_outbound=False
        )
        task_sg.add_egress_rule(
            ec2.Peer.any_ipv4(), ec2.Port.tcp(443), "AWS APIs and cloud keystores (HTTPS)"
        )
        for cidr in config.hsm_cidrs:
            for port in config.hsm_ports:
                task_sg.add_egress_rule(
                    ec2.Peer.ipv4(cidr), ec2.Port.tcp(port), "on-prem HSM over VPN/Direct Connect"
                )
        self.nlb_sg = ec2.SecurityGroup(
            self, "NlbSg", vpc=network.vpc, description="OpenKCM KMIP load balancer", allow_all_outbound=False
        )
        for cidr in config.kmip_allowed_cidrs:
            self.nlb_sg.add_ingress_rule(
                ec2.Peer.ipv4(cidr), ec2.Port.tcp(KMIP_PORT), "KMIP clients (mutual TLS)"
            )
        for port, what in ((KMIP_PORT, "KMIP"), (HEALTH_PORT, "health checks")):
            self.nlb_sg.add_egress_rule(task_sg, ec2.Port.tcp(port), f"to KMIP tasks ({what})")
            task_sg.add_ingress_rule(self.nlb_sg, ec2.Port.tcp(port), f"from the KMIP load balancer ({what})")

        self.service = ecs.FargateService(
            self,
            "Service",
            cluster=self.cluster,
            task_definition=self.task_definition,
            desired_count=config.kmip_desired_count,
            min_healthy_percent=100,
            max_healthy_percent=200,
            vpc_subnets=network.private_subnets,
            security_groups=[task_sg],
            assign_public_ip=False,
            circuit_breaker=ecs.DeploymentCircuitBreaker(rollback=True),
            health_check_grace_period=Duration.seconds(60),
            enable_execute_command=False,
        )

        self.nlb = elbv2.NetworkLoadBalancer(
            self,
            "Nlb",
            vpc=network.vpc,
            internet_facing=config.kmip_internet_facing,
            vpc_subnets=ec2.SubnetSelection(
                subnet_type=ec2.SubnetType.PUBLIC
                if config.kmip_internet_facing
                else ec2.SubnetType.PRIVATE_WITH_EGRESS
            )
            if not config.uses_existing_vpc
            else ec2.SubnetSelection(
                subnets=network.vpc.public_subnets
                if config.kmip_internet_facing
                else network.vpc.private_subnets
            ),
            cross_zone_enabled=True,
            security_groups=[self.nlb_sg],
        )
        self.listener = self.nlb.add_listener("Kmip", port=KMIP_PORT, protocol=elbv2.Protocol.TCP)
        self.target_group = self.listener.add_targets(
            "Tasks",
            port=KMIP_PORT,
            protocol=elbv2.Protocol.TCP,
            targets=[self.service.load_balancer_target(container_name="kmip", container_port=KMIP_PORT)],
            deregistration_delay=Duration.seconds(30),
            health_check=elbv2.HealthCheck(
                protocol=elbv2.Protocol.HTTP,
                port=str(HEALTH_PORT),
                path="/healthz",
                healthy_http_codes="200",
                interval=Duration.seconds(10),
                healthy_threshold_count=2,
                unhealthy_threshold_count=2,
            ),
            preserve_client_ip=True,
        )

        # -- scaling: CPU target tracking, and steps on connections per task -----------------------------
        scaling = self.service.auto_scale_task_count(
            min_capacity=config.kmip_min_count if config.kmip_desired_count else 0,
            max_capacity=config.kmip_max_count,
        )
        scaling.scale_on_cpu_utilization(
            "Cpu",
            target_utilization_percent=config.kmip_cpu_target_percent,
            scale_in_cooldown=Duration.minutes(5),
            scale_out_cooldown=Duration.minutes(1),
        )
        flows = self.nlb.metrics.active_flow_count(period=Duration.minutes(1), statistic="Average")
        tasks = cloudwatch.Metric(
            namespace="ECS/ContainerInsights",
            metric_name="RunningTaskCount",
            dimensions_map={
                "ClusterName": self.cluster.cluster_name,
                "ServiceName": self.service.service_name,
            },
            period=Duration.minutes(1),
            statistic="Average",
        )
        self.connections_per_task = cloudwatch.MathExpression(
            expression="flows / IF(tasks > 0, tasks, 1)",
            using_metrics={"flows": flows, "tasks": tasks},
            label="KMIP connections per task",
            period=Duration.minutes(1),
        )
        per_task = config.kmip_connections_per_task
        scaling.scale_on_metric(
            "Connections",
            metric=self.connections_per_task,
            scaling_steps=[
                appscaling.ScalingInterval(upper=per_task // 4, change=-1),
                appscaling.ScalingInterval(lower=per_task, change=+1),
                appscaling.ScalingInterval(lower=per_task * 2, change=+3),
            ],
            adjustment_type=appscaling.AdjustmentType.CHANGE_IN_CAPACITY,
            cooldown=Duration.minutes(2),
        )

        # -- permissions ----------------------------------------------------------------------------------
        data.grant_tables(
            self.task_role,
            {
                "accounts": READ,
                "tenants": READ,
                "objects": READ + WRITE,
                "keystores": READ,
                "audit": AUDIT_APPEND,
                "usage": COUNT,
            },
        )
        # Serving keys only unwraps L2 versions; creating and rotating them is the API's and rotation's.
        data.allow_root_key(self.task_role, ["kms:Decrypt"], ("l2", "credentials"))
        # Audit writer keys: each worker process wraps its link-MAC key once (Encrypt); in WAL mode the
        # periodic checkpointer (audit_checkpoint_seconds) unwraps the tenant's writer keys (Decrypt).
        data.allow_root_key(self.task_role, ["kms:Encrypt", "kms:Decrypt"], ("writer",))
        data.allow_signing(self.task_role)
        data.allow_customer_keystores(self.task_role)
        self.log_group.grant_write(self.execution_role)
        api.grant_events_and_notify(self.task_role, bus, data)
