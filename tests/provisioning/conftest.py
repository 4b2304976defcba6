"""Fixtures of the provisioning/rotation tests: a runtime on the session's moto server with a manual
clock (rotation periods and retention move without sleeping), the event bus, and helpers to sign
webhooks and to seal objects the way the KMIP server stores them."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from openkcm.clock import ManualClock


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(datetime.now(UTC).replace(microsecond=0))


@pytest.fixture
def rt(settings, clock) -> Iterator[Any]:
    from openkcm.ops import events
    from openkcm.ops.runtime import build_runtime

    runtime = build_runtime(settings, clock=clock, create=True)
    events.ensure_bus(runtime)
    yield runtime
    runtime.close()


@pytest.fixture
def secret(rt) -> bytes:
    from openkcm.ops.provisioning import webhook_secret

    return webhook_secret(rt)


def marketplace_event(
    event: str = "service_enabled", customer: str = "acme-corp-12345", **extra: Any
) -> dict:
    body = {
        "event_id": extra.pop("event_id", f"evt-{uuid.uuid4().hex}"),
        "event": event,
        "customer": customer,
        "service": "openkcm",
        "region": "eu-west-1",
        "timestamp": "2026-01-15T10:30:00Z",
    }
    body.update(extra)
    return body


def signed(secret: bytes, body: dict | bytes, t: float) -> tuple[dict[str, str], bytes]:
    from openkcm.ops.provisioning import sign

    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return {"X-OpenKCM-Signature": sign(secret, int(t), raw)}, raw


def api_event(headers: dict[str, str], raw: bytes, path: str = "/v1/marketplace/events") -> dict:
    """An API Gateway HTTP API (payload 2.0) event, as the local HTTP adapter builds it."""
    return {
        "version": "2.0",
        "routeKey": "POST /v1/marketplace/events",
        "rawPath": path,
        "headers": {k.lower(): v for k, v in headers.items()},
        "requestContext": {"http": {"method": "POST", "path": path, "sourceIp": "127.0.0.1"}},
        "body": raw.decode(),
        "isBase64Encoded": False,
    }


def seal_objects(runtime: Any, tenant_id: str, count: int) -> dict[str, bytes]:
    """Store ``count`` objects sealed under the tenant's current L2 version; returns id -> material."""
    from openkcm.storage import ManagedObjectModel

    materials = {}
    now = runtime.clock.now()
    for _ in range(count):
        object_id = f"{tenant_id}.{uuid.uuid4().hex}"
        material = os.urandom(32)
        version, blob = runtime.keyring.seal_object(tenant_id, object_id, material)
        ManagedObjectModel(
            tenant_id,
            object_id,
            object_type="SYMMETRIC_KEY",
            state="ACTIVE",
            wrapped=blob,
            l2_version=version,
            created_at=now,
            updated_at=now,
        ).save()
        materials[object_id] = material
    return materials
