"""Retention (archive before expiry, verification spanning the archive), the AWS variants (KMS
ECC_NIST_P256 checkpoint key, S3 Object Lock bucket) and security events on the EventBridge bus."""

from __future__ import annotations

import gzip
import json
import time
from datetime import timedelta
from pathlib import Path

import boto3
import pytest

from openkcm.domain.audit import AuditEvent
from openkcm.ops import audit
from openkcm.ops.runtime import build_runtime
from tests.audit.helpers import event, items, table


def _expire_archived(tenant_id: str) -> int:
    """What DynamoDB's TTL sweeper does (moto does not): delete items whose expire_at passed."""
    gone = 0
    for item in items(tenant_id):
        if "expire_at" in item and int(item["expire_at"]) <= time.time() + 1:
            table().delete_item(Key={"tenant_id": tenant_id, "sk": item["sk"]})
            gone += 1
    return gone


def _write(runtime, tenant_id: str, n: int, start: int = 0) -> None:
    for i in range(start, start + n):
        runtime.audit.record(event(tenant_id, i))


def tamper_archived_link(runtime, tenant_id: str) -> dict:
    """Make the first record of the first segment's second link a Destroy (the local folder is not Object
    Lock); returns that link as it now stands in the segment."""
    path = Path(runtime.settings.data_dir) / "audit" / "archive" / tenant_id / "segment-000001.jsonl.gz"
    lines = gzip.decompress(path.read_bytes()).decode().splitlines()
    link = json.loads(lines[3])
    link["events"][0]["operation"] = "Destroy"
    lines[3] = json.dumps(link)
    path.chmod(0o600)
    path.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))
    return link


def test_local_archive_then_expiry_and_verification_spans_it(runtime, tenant_factory):
    tenant_id = tenant_factory().tenant_id
    _write(runtime, tenant_id, 6)
    # Nothing is archived before a checkpoint covers it, and nothing expires before it is archived.
    assert all("expire_at" not in item for item in items(tenant_id))
    result = audit.archive(runtime, tenant_id, before=runtime.clock.now() + timedelta(seconds=1))
    assert result["archived_links"] == 7 and result["segment"] == 1
    assert all("expire_at" in item for item in items(tenant_id))
    assert _expire_archived(tenant_id) == 7
    _write(runtime, tenant_id, 4, start=6)
    audit.checkpoint_tenant(runtime, tenant_id)
    verified = audit.verify_tenant(runtime, tenant_id)
    assert verified["message"] == "11 records, chain intact through checkpoint 2", verified
    assert verified["archive"] == {"segments": 1, "links": 7, "records": 7}
    assert (
        audit.archive(runtime, tenant_id, before=runtime.clock.now() + timedelta(seconds=1))["segment"] == 2
    )
    _expire_archived(tenant_id)
    assert audit.verify_tenant(runtime, tenant_id)["intact"]

    # A tampered archive segment (the local folder is not Object Lock) is named.
    tamper_archived_link(runtime, tenant_id)
    problems = audit.verify_tenant(runtime, tenant_id)["problems"]
    kinds = {p["kind"] for p in problems}
    assert "archive" in kinds and "altered" in kinds


def test_kms_checkpoint_key_and_s3_archive(settings, tenant_factory, runtime):
    kms = boto3.client("kms", region_name="us-east-1")
    key_id = kms.create_key(KeyUsage="SIGN_VERIFY", KeySpec="ECC_NIST_P256")["KeyMetadata"]["Arn"]
    s3 = boto3.client("s3", region_name="us-east-1")
    bucket = f"{settings.table_prefix}-audit-archive"
    s3.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
    aws_settings = settings.model_copy(
        update={"audit_signer": "aws-kms", "audit_signing_key_id": key_id, "audit_archive_bucket": bucket}
    )
    rt = build_runtime(aws_settings)
    try:
        tenant_id = tenant_factory().tenant_id
        _write(rt, tenant_id, 5)
        assert audit.checkpoint_tenant(rt, tenant_id)["key_id"] == key_id
        assert audit.verify_tenant(rt, tenant_id)["message"] == "6 records, chain intact through checkpoint 1"
        archived = audit.archive(rt, tenant_id, before=rt.clock.now() + timedelta(seconds=1))
        assert archived["location"].startswith(f"s3://{bucket}/audit/{tenant_id}/")
        _expire_archived(tenant_id)
        assert audit.verify_tenant(rt, tenant_id)["intact"]
        # The local key cannot vouch for a KMS-signed checkpoint: a forged one in the other direction.
        assert not audit.verify_tenant(runtime, tenant_id)["intact"]
        (cp,) = items(tenant_id, "C#")
        body = json.loads(cp["body_json"])
        body["events"] = 999
        table().put_item(Item={**cp, "body_json": json.dumps(body)})
        assert audit.verify_tenant(rt, tenant_id)["problems"][0]["kind"] == "forged_checkpoint"
    finally:
        rt.close()


def test_an_archive_segment_is_written_once(settings, aws_endpoint):
    """A second write of a segment's key is refused by S3 itself (If-None-Match), not by a check before
    the put: on the versioned, locked bucket it would have become the version verifiers read."""
    from openkcm.domain.audit.archive import S3ArchiveStore
    from openkcm.errors import AlreadyExists

    s3 = boto3.client("s3", region_name="us-east-1")
    bucket = f"{settings.table_prefix}-write-once"
    s3.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
    store = S3ArchiveStore(s3, bucket)
    store.put("t-1/segment-000001.jsonl.gz", b"the original")
    # The second writer never saw the first (as in a race between a look and a put): S3 must refuse it.
    s3.head_object = lambda **kwargs: (_ for _ in ()).throw(
        s3.exceptions.ClientError({"Error": {"Code": "404"}}, "HeadObject")
    )
    with pytest.raises(AlreadyExists):
        store.put("t-1/segment-000001.jsonl.gz", b"forged segment")
    assert store.get("t-1/segment-000001.jsonl.gz") == b"the original"
    versions = s3.list_object_versions(Bucket=bucket, Prefix="audit/t-1/")["Versions"]
    assert len(versions) == 1


def test_security_events_reach_the_event_bus(runtime, tenant_factory):
    from openkcm.ops import events

    events.ensure_bus(runtime)
    bus = runtime.settings.event_bus_name
    sqs = boto3.client("sqs", region_name="us-east-1")
    queue_url = sqs.create_queue(QueueName=f"{runtime.settings.table_prefix}-siem")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    bridge = boto3.client("events", region_name="us-east-1")
    bridge.put_rule(
        Name="siem", EventBusName=bus, EventPattern=json.dumps({"detail-type": ["security_event"]})
    )
    bridge.put_targets(Rule="siem", EventBusName=bus, Targets=[{"Id": "q", "Arn": queue_arn}])

    tenant_id = tenant_factory().tenant_id
    runtime.audit.record(
        AuditEvent(
            tenant_id=tenant_id,
            source="kmip",
            operation="Get",
            kind="security",
            result="denied",
            reason="cross-tenant access",
            actor="CN=intruder",
            actor_role="svc-x",
            object_id="obj-of-another-tenant",
            client_address="127.0.0.1",
        )
    )
    messages = sqs.receive_message(QueueUrl=queue_url, WaitTimeSeconds=2, MaxNumberOfMessages=10).get(
        "Messages", []
    )
    assert messages, "no security event on the bus"
    envelope = json.loads(messages[0]["Body"])
    assert envelope["detail-type"] == "security_event"
    assert envelope["detail"]["tenant_id"] == tenant_id
    assert envelope["detail"]["reason"] == "cross-tenant access"


def test_schedule_handler_checkpoints_and_archives_past_retention(runtime, tenant_factory):
    from functions.audit_schedule.handler import handler

    tenant_id = tenant_factory().tenant_id
    _write(runtime, tenant_id, 3)
    result = handler({"detail-type": "Scheduled Event"}, runtime=runtime)
    assert tenant_id in result["checkpointed"] and not result["failed"]
    assert result["archived"] == []  # nothing is older than the 90-day retention yet
    runtime.settings.audit_retention_days = 0
    result = handler({}, runtime=runtime)
    assert [a["tenant_id"] for a in result["archived"]] == [tenant_id]
    assert audit.verify_tenant(runtime, tenant_id)["archive"]["records"] == 4


def test_local_stack_audit_service_checkpoints_on_its_schedule(runtime, tenant_factory):
    from types import SimpleNamespace

    from openkcm.local.audit_service import AuditScheduleService
    from openkcm.local.services import registered_services

    assert "audit" in {service.name for service in registered_services()}
    tenant_id = tenant_factory().tenant_id
    runtime.settings.audit_checkpoint_seconds = 1
    service = AuditScheduleService()
    details = service.start(SimpleNamespace(runtime=runtime))
    try:
        assert details["archive"].endswith("audit/archive") and service.healthy()
        deadline = time.monotonic() + 20
        while not items(tenant_id, "C#") and time.monotonic() < deadline:
            time.sleep(0.2)
        assert items(tenant_id, "C#"), service.last
    finally:
        service.stop()
    assert not service.healthy()
    assert (
        audit.verify_tenant(runtime, tenant_id)["message"] == "1 records, chain intact through checkpoint 1"
    )
