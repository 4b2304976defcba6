"""The marketplace webhook: signed events are accepted and provisioned; forged, replayed, stale or unsigned
ones get 401 and a security audit record; duplicates provision once."""

from __future__ import annotations

import json

import pytest

from functions.provision import handler
from openkcm.domain.tenants import PLATFORM_TENANT
from openkcm.ops import provisioning
from openkcm.ops.notifications import list_notifications
from openkcm.storage import TenantKeyModel, TenantModel

from .conftest import api_event, marketplace_event, signed


def audit_security_reasons(rt) -> list[str]:
    from openkcm.domain.audit import read_events

    return [
        e["reason"]
        for e in read_events(PLATFORM_TENANT, since="2000-01-01T00:00:00+00:00", kinds={"security"})
    ]


def test_secret_file_is_private(rt, secret):
    path = rt.settings.data_dir / "secrets" / "webhook-secret"
    assert path.stat().st_mode & 0o777 == 0o600 and len(secret) >= 32


def test_signed_event_is_accepted_and_provisioned(rt, secret):
    queued = []
    headers, raw = signed(secret, marketplace_event(), rt.clock.timestamp())
    status, body = provisioning.accept_webhook(rt, headers, raw, queued.append)
    assert status == 202 and body["tenant_id"] == "acme-corp-12345" and len(queued) == 1
    result = provisioning.process_event(rt, queued[0])
    assert result["status"] == "Ready"
    tenant = TenantModel.get("acme-corp-12345", "TENANT")
    assert (
        tenant.status == "Ready" and tenant.current_l2_version == 1 and tenant.account_id == "acme-corp-12345"
    )
    notes = list_notifications(rt, "acme-corp-12345")
    assert [n["kind"] for n in notes] == ["provisioning_ready"]
    assert notes[0]["link"].endswith("/tenant/acme-corp-12345")


@pytest.mark.parametrize("case", ["forged", "tampered", "stale", "future", "missing", "malformed"])
def test_bad_signatures_get_401_and_are_audited(rt, secret, case):
    now = rt.clock.timestamp()
    headers, raw = signed(
        b"not-the-secret" if case == "forged" else secret,
        marketplace_event(),
        now - 301 if case == "stale" else now + 301 if case == "future" else now,
    )
    if case == "tampered":
        raw = raw.replace(b"acme-corp-12345", b"evil-corp-66666")
    if case == "missing":
        headers = {}
    if case == "malformed":
        headers = {"X-OpenKCM-Signature": "t=abc,v1=zz,extra"}
    queued = []
    status, body = provisioning.accept_webhook(rt, headers, raw, queued.append)
    assert status == 401 and body["error"] == "unauthenticated" and not queued
    assert "secret" not in json.dumps(body)  # the reason is audited, not told
    expected = {
        "forged": "forged",
        "tampered": "forged",
        "stale": "stale",
        "future": "stale",
        "missing": "missing",
        "malformed": "malformed",
    }[case]
    assert audit_security_reasons(rt) == [f"signature {expected}"]


def test_replayed_request_is_refused(rt, secret):
    queued = []
    headers, raw = signed(secret, marketplace_event(), rt.clock.timestamp())
    assert provisioning.accept_webhook(rt, headers, raw, queued.append)[0] == 202
    rt.clock.advance(30)  # still inside the window: only the replay guard can refuse it
    assert provisioning.accept_webhook(rt, headers, raw, queued.append)[0] == 401
    assert len(queued) == 1 and audit_security_reasons(rt) == ["signature replayed"]


def test_window_edge_is_inclusive_and_signature_is_constant_time_compared(rt, secret):
    headers, raw = signed(secret, marketplace_event(), rt.clock.timestamp() - 300)
    assert provisioning.accept_webhook(rt, headers, raw, lambda m: None)[0] == 202


def test_valid_signature_but_invalid_event_is_400(rt, secret):
    for body in (
        b"{not json",
        json.dumps({"event": "service_enabled"}).encode(),
        json.dumps(marketplace_event("tenant_created")).encode(),  # no tenant named
        json.dumps(marketplace_event(customer="bad customer!")).encode(),
    ):
        headers, raw = signed(secret, body, rt.clock.timestamp())
        status, reply = provisioning.accept_webhook(rt, headers, raw, lambda m: None)
        assert status == 400 and reply["error"] == "invalid_request"


def test_duplicate_event_id_provisions_once(rt, secret):
    queued = []
    event = marketplace_event(event_id="evt-dup-1")
    for delay in (0, 5):  # the marketplace re-sends: new timestamp and signature, same event id
        rt.clock.advance(delay)
        headers, raw = signed(secret, event, rt.clock.timestamp())
        assert provisioning.accept_webhook(rt, headers, raw, queued.append)[0] == 202
    first = provisioning.process_event(rt, queued[0])
    second = provisioning.process_event(rt, queued[1])
    assert first == second
    assert len(list(TenantKeyModel.query("acme-corp-12345", TenantKeyModel.sk.startswith("L2#")))) == 1
    assert [n["kind"] for n in list_notifications(rt, "acme-corp-12345")] == ["provisioning_ready"]
    assert provisioning.provisioning_status("acme-corp-12345")["attempts"] == 1


def test_tenant_created_event_makes_a_second_tenant_of_the_customer(rt, secret):
    provisioning.process_event(rt, marketplace_event())
    provisioning.process_event(rt, marketplace_event("tenant_created", tenant="acme-analytics"))
    tenants = sorted(t.tenant_id for t in rt.tenants.list_for_account("acme-corp-12345"))
    assert tenants == ["acme-analytics", "acme-corp-12345"]


def test_another_customers_tenant_id_is_never_adopted(rt):
    provisioning.process_event(rt, marketplace_event("tenant_created", tenant="shared-name"))
    with pytest.raises(Exception) as info:
        provisioning.process_event(
            rt, marketplace_event("tenant_created", customer="beta-corp-67890", tenant="shared-name")
        )
    assert getattr(info.value, "http_status", None) == 404
    assert TenantModel.get("shared-name", "TENANT").account_id == "acme-corp-12345"


def test_an_event_naming_an_api_created_tenant_of_another_account_changes_nothing(rt):
    """A tenant made through the CMK API has no provisioning record: another customer's signed event that
    names it must not mark it Provisioning or Failed (the KMIP server refuses tenants that are not Ready),
    nor notify its account."""
    from openkcm.ops.tenants import create_platform_tenant

    victim = create_platform_tenant(rt, "victim-acct", actor="test", source="cli")
    with pytest.raises(Exception) as info:
        provisioning.process_event(
            rt, marketplace_event("tenant_created", customer="mallory-co", tenant=victim.tenant_id)
        )
    assert getattr(info.value, "http_status", None) == 404
    after = TenantModel.get(victim.tenant_id, "TENANT")
    assert (after.account_id, after.status) == ("victim-acct", "Ready")
    assert not [n for n in list_notifications(rt, "victim-acct") if "mallory" in str(n)]


def test_handler_through_the_local_queue(rt, secret):
    queue = provisioning.LocalProvisioningQueue(rt)
    provisioning.set_local_queue(queue)
    try:
        headers, raw = signed(secret, marketplace_event(customer="gamma-9"), rt.clock.timestamp())
        reply = handler.webhook_handler(api_event(headers, raw))
        assert reply["statusCode"] == 202 and json.loads(reply["body"])["tenant_id"] == "gamma-9"
        assert queue.wait_idle(20)
        assert TenantModel.get("gamma-9", "TENANT").status == "Ready"
        forged = handler.webhook_handler(api_event({"X-OpenKCM-Signature": "t=1,v1=00"}, raw))
        assert forged["statusCode"] == 401 and json.loads(forged["body"])["error"] == "unauthenticated"
    finally:
        queue.stop()
        provisioning.set_local_queue(None)


def test_handler_through_sqs_and_the_worker_lambda(rt, secret, monkeypatch):
    import boto3

    sqs = boto3.client("sqs")
    dlq = sqs.create_queue(QueueName=f"{rt.settings.table_prefix}-dlq")["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    url = sqs.create_queue(
        QueueName=f"{rt.settings.table_prefix}-provision",
        Attributes={"RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": "5"})},
    )["QueueUrl"]
    monkeypatch.setattr(rt.settings, "provision_queue_url", url)
    monkeypatch.setattr(handler, "_RUNTIME", rt)
    headers, raw = signed(secret, marketplace_event(customer="delta-4"), rt.clock.timestamp())
    assert handler.webhook_handler(api_event(headers, raw))["statusCode"] == 202
    messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1)["Messages"]
    records = [
        {
            "messageId": m["MessageId"],
            "receiptHandle": m["ReceiptHandle"],
            "body": m["Body"],
            "attributes": {},
            "messageAttributes": {},
            "eventSource": "aws:sqs",
            "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:q",
            "awsRegion": "us-east-1",
        }
        for m in messages
    ]
    records.append({**records[0], "messageId": "poison", "body": "{}"})
    reply = handler.worker_handler({"Records": records})
    assert reply == {"batchItemFailures": [{"itemIdentifier": "poison"}]}
    assert TenantModel.get("delta-4", "TENANT").status == "Ready"


def test_signature_covers_the_timestamp_exactly_as_sent(rt, secret):
    import hashlib
    import hmac

    raw = json.dumps(marketplace_event()).encode()
    t = str(int(rt.clock.timestamp()))
    padded = "0" + t  # same number, other bytes: must be signed as sent
    good = hmac.new(secret, padded.encode() + b"." + raw, hashlib.sha256).hexdigest()
    assert (
        provisioning.accept_webhook(
            rt, {"X-OpenKCM-Signature": f"t={padded},v1={good}"}, raw, lambda m: None
        )[0]
        == 202
    )
    other = hmac.new(secret, t.encode() + b"." + raw, hashlib.sha256).hexdigest()
    assert (
        provisioning.accept_webhook(
            rt, {"X-OpenKCM-Signature": f"t={padded},v1={other}"}, raw, lambda m: None
        )[0]
        == 401
    )


def test_group_readable_secret_file_is_refused_without_leaking_its_path(rt, secret):
    from openkcm.ops.provisioning import load_webhook_secret

    path = rt.settings.data_dir / "secrets" / "webhook-secret"
    path.chmod(0o644)
    with pytest.raises(Exception) as info:
        load_webhook_secret(rt.settings)
    assert str(path) not in str(info.value) and getattr(info.value, "http_status", 0) == 500


def test_ready_notification_goes_to_the_sns_topic_with_the_ui_link(rt, monkeypatch):
    import boto3

    sns, sqs = boto3.client("sns"), boto3.client("sqs")
    topic = sns.create_topic(Name=f"{rt.settings.table_prefix}-notify")["TopicArn"]
    url = sqs.create_queue(QueueName=f"{rt.settings.table_prefix}-mailbox")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=arn)  # stands in for the email subscription
    monkeypatch.setattr(rt.settings, "notification_topic_arn", topic)
    monkeypatch.setattr(rt.settings, "ui_base_url", "https://cmk.openkcm.io")
    provisioning.process_event(rt, marketplace_event())
    message = json.loads(sqs.receive_message(QueueUrl=url, WaitTimeSeconds=2)["Messages"][0]["Body"])
    assert message["Subject"] == "OpenKCM is ready for acme-corp-12345"
    assert "CMK UI: https://cmk.openkcm.io/tenant/acme-corp-12345" in message["Message"]
