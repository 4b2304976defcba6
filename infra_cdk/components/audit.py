"""Audit schedule (issue 11): ``functions/audit_schedule`` on an EventBridge rate. Each run flushes, signs
a checkpoint for every tenant whose writer chains moved (kms:Sign on the audit signing key, after
unwrapping each writer's link-MAC key with the root key) and archives links older than the retention
period to the Object Lock bucket before it lets DynamoDB expire them (``openkcm.ops.audit.run_schedule``).

It talks only to AWS APIs (DynamoDB, KMS, S3), so it runs outside the VPC."""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from constructs import Construct

from infra_cdk.components.api import AUDIT_ARCHIVE
from infra_cdk.components.data import Data
from infra_cdk.components.env import setting
from infra_cdk.components.functions import ServiceFunction
from infra_cdk.config import DeployConfig


class AuditSchedule(Construct):
    def __init__(
        self,
        scope: Construct,
        cid: str,
        *,
        config: DeployConfig,
        data: Data,
        base_env: dict[str, str],
    ) -> None:
        super().__init__(scope, cid)
        self.function = ServiceFunction(
            self,
            "AuditSchedule",
            config=config,
            asset="audit_schedule",
            handler="functions/audit_schedule/handler.handler",
            description="OpenKCM audit schedule: signed checkpoints, archive to S3 before expiry",
            environment={
                **base_env,
                setting("audit_archive_bucket"): data.audit_archive.bucket_name,
                setting("audit_retention_days"): str(config.audit_retention_days),
            },
            # One run at a time: checkpoints are conditional writes, so an overlap is safe but wasted work.
            reserved_concurrency=1,
            # Under the default 5-minute rate; the handler stops starting tenants 10 s before the end.
            timeout=Duration.minutes(4),
            memory_mib=512,
        )
        self.schedule = events.Rule(
            self,
            "Schedule",
            description="OpenKCM audit checkpoints and archiving",
            schedule=events.Schedule.expression(config.audit_schedule),
            targets=[targets.LambdaFunction(self.function.function, retry_attempts=1)],
        )
        role = self.function.role
        # Tenants: only the scan that lists tenant ids. Audit: read the chains, put C#/H#HEADS/A# items
        # (and its own K#/W# items as a writer), update expire_at on archived links.
        data.grant_tables(role, {"tenants": ["Scan"], "audit": AUDIT_ARCHIVE})
        # Writer keys: unwrap the tenant's writers' link-MAC keys to check links before signing; wrap its
        # own once (it is an audit writer too). No L2 or credentials context: it never opens a tenant key.
        data.allow_root_key(role, ["kms:Encrypt", "kms:Decrypt"], ("writer",))
        data.allow_signing(role)
        data.grant_archive(role, write=True)
        # No events:PutEvents / sns:Publish: run_schedule records no audit or domain events (a failed tenant
        # is logged and counted in its result; the errors alarm covers a failed run).
