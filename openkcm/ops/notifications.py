"""Notifications to an account's users: provisioning Ready or Failed, with the CMK UI link.

Every notification is kept as an outbox item in the tenant's partition (``NotificationModel``), which the
web UI and ``openkcm local`` list with :func:`list_notifications`. When ``notification_topic_arn`` is set
(AWS), it is also published to that SNS topic, which can carry an email subscription. Publishing to SNS is
best effort: the outbox item is the record.
"""

from __future__ import annotations

import json
import logging
import uuid
from typing import Any

from openkcm.ops.runtime import Runtime
from openkcm.storage.models import NotificationModel

log = logging.getLogger(__name__)

READY = "provisioning_ready"
FAILED = "provisioning_failed"
SHREDDED = "tenant_shredded"


def ui_link(runtime: Runtime, tenant_id: str) -> str:
    return f"{runtime.settings.ui_base_url.rstrip('/')}/tenant/{tenant_id}"


def notify(
    runtime: Runtime, *, tenant_id: str, customer: str, kind: str, subject: str, message: str
) -> dict[str, Any]:
    now = runtime.clock.now()
    note = NotificationModel(
        tenant_id,
        f"NOTE#{now.isoformat(timespec='microseconds')}#{uuid.uuid4().hex[:8]}",
        customer=customer,
        kind=kind,
        subject=subject,
        message=message,
        link=ui_link(runtime, tenant_id),
        created_at=now,
    )
    note.save()
    body = _to_dict(note)
    topic = runtime.settings.notification_topic_arn
    if topic:
        try:
            import boto3

            boto3.client("sns", region_name=runtime.settings.region).publish(
                TopicArn=topic,
                Subject=subject[:100],
                Message=f"{message}\n\nCMK UI: {note.link}",
                MessageAttributes={
                    "kind": {"DataType": "String", "StringValue": kind},
                    "customer": {"DataType": "String", "StringValue": customer},
                },
            )
            body["sns"] = "sent"
        except Exception as exc:  # noqa: BLE001 - the outbox item is the record; SNS is best effort
            log.warning("SNS publish failed for %s: %s", kind, type(exc).__name__)
            body["sns"] = "failed"
    return body


def _to_dict(note: NotificationModel) -> dict[str, Any]:
    return {
        "tenant_id": note.tenant_id,
        "customer": note.customer,
        "kind": note.kind,
        "subject": note.subject,
        "message": note.message,
        "link": note.link,
        "time": note.created_at.isoformat(),
    }


def list_tenant_notifications(tenant_id: str) -> list[dict[str, Any]]:
    return [_to_dict(n) for n in NotificationModel.query(tenant_id, NotificationModel.sk.startswith("NOTE#"))]


def list_notifications(runtime: Runtime, account_id: str) -> list[dict[str, Any]]:
    """Every notification of an account's tenants, newest first."""
    notes: list[dict[str, Any]] = []
    for tenant in runtime.tenants.list_for_account(account_id):
        notes.extend(list_tenant_notifications(tenant.tenant_id))
    notes.sort(key=lambda n: n["time"], reverse=True)
    return notes


def dumps(notes: list[dict[str, Any]]) -> str:
    return json.dumps(notes, indent=2)
