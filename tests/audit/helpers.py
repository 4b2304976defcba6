"""Helpers for the audit tests: raw access to the audit table with boto3 (what an operator with write
access could do), and a quick way to write a batch of events."""

from __future__ import annotations

import json
from typing import Any

import boto3

from openkcm.domain.audit import AuditEvent
from openkcm.domain.audit.chain import pack_digests, pack_events, unpack_events
from openkcm.storage.models import AuditBatchModel


def table() -> Any:
    return boto3.resource("dynamodb", region_name="us-east-1").Table(AuditBatchModel.Meta.table_name)


def items(tenant_id: str, prefix: str = "W#") -> list[dict[str, Any]]:
    from boto3.dynamodb.conditions import Key

    found, kwargs = (
        [],
        {"KeyConditionExpression": Key("tenant_id").eq(tenant_id) & Key("sk").begins_with(prefix)},
    )
    while True:
        page = table().query(**kwargs)
        found.extend(page["Items"])
        if "LastEvaluatedKey" not in page:
            return found
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def events_of(item: dict[str, Any]) -> list[dict[str, Any]]:
    return unpack_events(bytes(item["events_z"]))


def with_events(item: dict[str, Any], events: list[dict[str, Any]], **changes: Any) -> dict[str, Any]:
    """The raw item with its packed events replaced (and ``digests`` as hex strings, if given)."""
    digests = changes.pop("digests", None)
    edited = {**item, **changes, "events_z": pack_events(json.dumps(events).encode())}
    if digests is not None:
        edited["digests_bin"] = pack_digests(digests)
    return edited


def put(item: dict[str, Any]) -> None:
    table().put_item(Item=item)


def event(tenant_id: str, n: int, **kw: Any) -> AuditEvent:
    fields: dict[str, Any] = {
        "source": "kmip",
        "operation": "Get",
        "actor": "CN=svc",
        "actor_role": "mongo-1",
        "object_id": f"obj-{n}",
        "l1_ref": "root:v1",
        "l2_version": 1,
        "request_id": f"req-{n}",
        "client_address": "127.0.0.1",
    }
    fields.update(kw)
    return AuditEvent(tenant_id=tenant_id, **fields)
