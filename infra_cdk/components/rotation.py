"""Rotation: the EventBridge bus for domain events (DECISIONS 14) and the rotation Lambda on a
schedule. The schedule also probes each linked L1 (seed 002 REQ-016) and runs due crypto-shredding,
so the function runs in the VPC (an on-prem HSM is reachable only from there, DECISIONS 16)."""

from __future__ import annotations

from aws_cdk import Duration, Stack
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_sns as sns
from constructs import Construct

from infra_cdk.components.api import AUDIT_APPEND, COUNT, READ, WRITE, Api
from infra_cdk.components.data import Data
from infra_cdk.components.env import setting
from infra_cdk.components.functions import ServiceFunction
from infra_cdk.components.network import Network
from infra_cdk.config import DeployConfig

# Domain events that an operator wants to hear about at once (matched on the event body's "type").
NOTIFY_TYPES = ["security_event", "key_revoked", "tenant_disabled", "l1_changed"]


def make_bus(scope: Construct, config: DeployConfig) -> events.EventBus:
    return events.EventBus(scope, "DomainEvents", event_bus_name=config.event_bus_name)


def route_notifications(
    scope: Construct, bus: events.IEventBus, topic: sns.ITopic, data: Data
) -> events.Rule:
    """Security-relevant domain events go to the notification topic too."""
    stack = Stack.of(scope)
    rule = events.Rule(
        scope,
        "NotifySecurityEvents",
        event_bus=bus,
        description="OpenKCM security-relevant domain events to SNS",
        event_pattern=events.EventPattern(detail={"type": NOTIFY_TYPES}),
        targets=[targets.SnsTopic(topic)],
    )
    # The topic is encrypted with the table key: EventBridge must be able to use it (through SNS, for
    # the topics encrypted with it; the statement AWS documents for EventBridge -> encrypted SNS). Left
    # without source conditions: whether SNS's KMS call on EventBridge's behalf carries aws:SourceArn is not
    # documented, and a wrong guess silently drops every notification. Publishing is what is gated: only
    # this account's rules may publish to the topic (the Deny below).
    data.table_key.add_to_resource_policy(
        iam.PolicyStatement(
            principals=[iam.ServicePrincipal("events.amazonaws.com")],
            actions=["kms:Decrypt", "kms:GenerateDataKey"],
            resources=["*"],
        )
    )
    # The target adds "events.amazonaws.com may publish"; only rules of this account may (confused deputy).
    topic.add_to_resource_policy(
        iam.PolicyStatement(
            effect=iam.Effect.DENY,
            principals=[iam.ServicePrincipal("events.amazonaws.com")],
            actions=["sns:Publish"],
            resources=[topic.topic_arn],
            conditions={"StringNotEquals": {"aws:SourceAccount": stack.account}},
        )
    )
    return rule


class Rotation(Construct):
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
        sg = network.egress_group("RotateSg", "OpenKCM rotation Lambda: AWS APIs and on-prem HSM only")
        self.rotate = ServiceFunction(
            self,
            "Rotate",
            config=config,
            asset="rotate",
            handler="functions/rotate/handler.handler",
            description="OpenKCM scheduled rotation, re-wrap, L1 health probe and crypto-shredding",
            environment={
                **base_env,
                setting("rotation_schedule"): config.rotation_schedule,
            },
            reserved_concurrency=config.rotate_reserved_concurrency,
            timeout=Duration.minutes(15),
            vpc=network.vpc,
            subnets=network.private_subnets,
            security_group=sg,
        )
        self.schedule = events.Rule(
            self,
            "Schedule",
            description="OpenKCM rotation schedule",
            schedule=events.Schedule.expression(config.rotation_schedule),
            targets=[targets.LambdaFunction(self.rotate.function, retry_attempts=2)],
        )
        data.grant_tables(
            self.rotate.role,
            {
                "accounts": READ,
                "tenants": READ + WRITE + ["Scan"],
                "objects": READ + ["UpdateItem", "Scan"],
                "keystores": READ + ["UpdateItem", "Scan"],
                "audit": AUDIT_APPEND,
                "usage": COUNT,
            },
        )
        data.allow_root_key(self.rotate.role, ["kms:Encrypt", "kms:Decrypt"], ("l2", "credentials"))
        data.allow_root_key(self.rotate.role, ["kms:Encrypt"], ("writer",))  # its audit writer key
        data.allow_signing(self.rotate.role)
        data.allow_customer_keystores(self.rotate.role)
        api.grant_events_and_notify(self.rotate.role, bus, data)
