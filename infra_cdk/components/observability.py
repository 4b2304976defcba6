"""Observability: alarms (Lambda errors and throttles, provisioning DLQ depth, KMIP unhealthy hosts,
API 5xx) to an SNS alarm topic, and one CloudWatch dashboard. Log retention is set where each log
group is made."""

from __future__ import annotations

from aws_cdk import Duration, Stack
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as actions
from aws_cdk import aws_iam as iam
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from constructs import Construct

from infra_cdk.components.api import Api
from infra_cdk.components.data import Data
from infra_cdk.components.functions import ServiceFunction
from infra_cdk.components.kmip import Kmip
from infra_cdk.config import DeployConfig

FIVE_MINUTES = Duration.minutes(5)


class Observability(Construct):
    def __init__(
        self,
        scope: Construct,
        cid: str,
        *,
        config: DeployConfig,
        data: Data,
        api: Api,
        functions: dict[str, ServiceFunction],
        kmip: Kmip,
    ) -> None:
        super().__init__(scope, cid)
        self.topic = sns.Topic(
            self, "Alarms", display_name="OpenKCM alarms", master_key=data.table_key, enforce_ssl=True
        )
        data.table_key.add_to_resource_policy(
            iam.PolicyStatement(
                principals=[iam.ServicePrincipal("cloudwatch.amazonaws.com")],
                actions=["kms:Decrypt", "kms:GenerateDataKey"],
                resources=["*"],
                # (aws:SourceArn would name the topic, which already depends on this key: a cycle)
                conditions={"StringEquals": {"aws:SourceAccount": Stack.of(self).account}},
            )
        )
        if config.alarm_email:
            self.topic.add_subscription(subscriptions.EmailSubscription(config.alarm_email))
        action = actions.SnsAction(self.topic)
        self.alarms: list[cloudwatch.Alarm] = []

        def alarm(
            cid: str,
            metric: cloudwatch.IMetric,
            threshold: float,
            description: str,
            comparison=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
        ) -> cloudwatch.Alarm:
            created = cloudwatch.Alarm(
                self,
                cid,
                metric=metric,
                threshold=threshold,
                evaluation_periods=1,
                comparison_operator=comparison,
                treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
                alarm_description=description,
            )
            created.add_alarm_action(action)
            created.add_ok_action(action)
            self.alarms.append(created)
            return created

        lambda_widgets: list[cloudwatch.IWidget] = []
        for name, fn in sorted(functions.items()):
            errors = fn.function.metric_errors(period=FIVE_MINUTES, statistic="Sum")
            throttles = fn.function.metric_throttles(period=FIVE_MINUTES, statistic="Sum")
            alarm(f"{name}-errors", errors, 1, f"OpenKCM {name}: Lambda errors")
            alarm(f"{name}-throttles", throttles, 1, f"OpenKCM {name}: Lambda throttles")
            lambda_widgets.append(
                cloudwatch.GraphWidget(
                    title=f"{name}: invocations, errors, throttles",
                    left=[fn.function.metric_invocations(period=FIVE_MINUTES), errors, throttles],
                    right=[fn.function.metric_duration(period=FIVE_MINUTES, statistic="p99")],
                    width=8,
                )
            )
        dlq_depth = api.dlq.metric_approximate_number_of_messages_visible(
            period=FIVE_MINUTES, statistic="Maximum"
        )
        alarm("provision-dlq-depth", dlq_depth, 1, "OpenKCM: provisioning messages in the dead-letter queue")
        unhealthy = kmip.target_group.metrics.un_healthy_host_count(
            period=Duration.minutes(1), statistic="Maximum"
        )
        alarm("kmip-unhealthy-hosts", unhealthy, 1, "OpenKCM KMIP: unhealthy tasks behind the load balancer")
        healthy = kmip.target_group.metrics.healthy_host_count(
            period=Duration.minutes(1), statistic="Minimum"
        )
        if config.kmip_desired_count:
            alarm(
                "kmip-healthy-hosts-low",
                healthy,
                2,
                "OpenKCM KMIP: fewer than two healthy tasks (one AZ left)",
                comparison=cloudwatch.ComparisonOperator.LESS_THAN_THRESHOLD,
            )
        api_5xx = cloudwatch.Metric(
            namespace="AWS/ApiGateway",
            metric_name="5xx",
            dimensions_map={"ApiId": api.http_api.api_id},
            period=FIVE_MINUTES,
            statistic="Sum",
        )
        alarm("api-5xx", api_5xx, 5, "OpenKCM CMK API: 5xx responses")

        self.dashboard = cloudwatch.Dashboard(
            self,
            "Dashboard",
            dashboard_name=f"{config.table_prefix}-openkcm",
        )
        self.dashboard.add_widgets(
            cloudwatch.AlarmStatusWidget(title="Alarms", alarms=self.alarms, width=24, height=4)
        )
        self.dashboard.add_widgets(*lambda_widgets)
        self.dashboard.add_widgets(
            cloudwatch.GraphWidget(
                title="KMIP connections and hosts",
                left=[
                    kmip.nlb.metrics.active_flow_count(period=Duration.minutes(1)),
                    kmip.connections_per_task,
                ],
                right=[healthy, unhealthy],
                width=12,
            ),
            cloudwatch.GraphWidget(
                title="KMIP CPU / memory",
                left=[kmip.service.metric_cpu_utilization(), kmip.service.metric_memory_utilization()],
                width=12,
            ),
        )
        self.dashboard.add_widgets(
            cloudwatch.GraphWidget(title="API 5xx", left=[api_5xx], width=12),
            cloudwatch.GraphWidget(
                title="Provisioning queue",
                left=[
                    api.queue.metric_approximate_number_of_messages_visible(period=FIVE_MINUTES),
                    dlq_depth,
                ],
                width=12,
            ),
        )
