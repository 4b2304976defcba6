"""Domain events (DECISIONS 14): ``key_rotation``, ``key_revoked``, ``l1_changed``, ``tenant_disabled``,
``security_event``, each ``{type, tenant_id, effective_time, ...}``.

Two ways out, both best effort, because neither is what makes a change take effect:

- the EventBridge bus named by ``settings.event_bus_name`` (``events.put_events``), for consumers in
  other processes and accounts;
- an in-process bus that local KMIP workers subscribe to, so a worker living in the same process drops
  its cached keys at once (:func:`subscribe_keyring`).

The mechanism that every process is guaranteed to see is the per-tenant epoch in DynamoDB
(DECISIONS 7), which ``keyring.rotate`` and ``tenants.set_status`` already bump before an event is sent.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from openkcm.domain.hierarchy import TenantKeyring
from openkcm.ops.runtime import Runtime

log = logging.getLogger(__name__)

KEY_ROTATION = "key_rotation"
KEY_REVOKED = "key_revoked"
L1_CHANGED = "l1_changed"
TENANT_DISABLED = "tenant_disabled"
SECURITY_EVENT = "security_event"
TYPES = frozenset({KEY_ROTATION, KEY_REVOKED, L1_CHANGED, TENANT_DISABLED, SECURITY_EVENT})
# Events after which a KMIP worker must drop every cached key of the tenant.
CACHE_DROPPING = frozenset({KEY_ROTATION, KEY_REVOKED, L1_CHANGED, TENANT_DISABLED})
SOURCE = "openkcm"


@dataclass(frozen=True)
class DomainEvent:
    type: str
    tenant_id: str
    effective_time: datetime
    details: Mapping[str, str | int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.type not in TYPES:
            raise ValueError(f"unknown domain event type {self.type!r}")

    def to_dict(self) -> dict[str, Any]:
        # "event" repeats "type" in the shape of seed 004's key_rotation message.
        body: dict[str, Any] = {
            "type": self.type,
            "event": self.type,
            "tenant_id": self.tenant_id,
            "effective_time": self.effective_time.isoformat().replace("+00:00", "Z"),
        }
        body.update(self.details)
        return body


Subscriber = Callable[[DomainEvent], None]


class InProcessBus:
    """Synchronous fan-out to subscribers in this process. A failing subscriber never stops the others."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._subscribers: list[Subscriber] = []

    def subscribe(self, subscriber: Subscriber) -> Callable[[], None]:
        with self._lock:
            self._subscribers.append(subscriber)

        def unsubscribe() -> None:
            with self._lock:
                if subscriber in self._subscribers:
                    self._subscribers.remove(subscriber)

        return unsubscribe

    def publish(self, event: DomainEvent) -> int:
        with self._lock:
            subscribers = list(self._subscribers)
        delivered = 0
        for subscriber in subscribers:
            try:
                subscriber(event)
                delivered += 1
            except Exception:  # a broken subscriber must not break the publisher
                log.exception("in-process subscriber failed for %s", event.type)
        return delivered


LOCAL_BUS = InProcessBus()


def subscribe_keyring(keyring: TenantKeyring, bus: InProcessBus = LOCAL_BUS) -> Callable[[], None]:
    """Make ``keyring`` drop a tenant's cached keys as soon as a cache-dropping event is published."""

    def on_event(event: DomainEvent) -> None:
        if event.type in CACHE_DROPPING:
            keyring.invalidate(event.tenant_id)

    return bus.subscribe(on_event)


class EventPublisher:
    """Sends domain events to EventBridge and to the in-process bus."""

    def __init__(self, runtime: Runtime, *, client: Any = None, bus: InProcessBus = LOCAL_BUS) -> None:
        self._runtime = runtime
        self._client = client
        self._bus = bus
        self.failures = 0

    def _events_client(self) -> Any:
        if self._client is None:
            import boto3

            self._client = boto3.client("events", region_name=self._runtime.settings.region)
        return self._client

    def publish(self, event: DomainEvent) -> bool:
        """Returns whether EventBridge accepted the event; the in-process bus always gets it."""
        self._bus.publish(event)
        entry = {
            "Source": SOURCE,
            "DetailType": event.type,
            "Detail": json.dumps(event.to_dict(), separators=(",", ":")),
            "EventBusName": self._runtime.settings.event_bus_name,
            "Time": event.effective_time,
        }
        try:
            reply = self._events_client().put_events(Entries=[entry])
        except Exception as exc:  # noqa: BLE001 - the epoch bump did the work; never fail the change
            self.failures += 1
            log.warning("EventBridge put_events failed for %s: %s", event.type, type(exc).__name__)
            return False
        if reply.get("FailedEntryCount"):
            self.failures += 1
            log.warning("EventBridge refused %s: %s", event.type, reply.get("Entries"))
            return False
        return True


def publisher(runtime: Runtime) -> EventPublisher:
    """The runtime's publisher (one per process, created on first use)."""
    found = runtime.extras.get("events")
    if found is None:
        found = runtime.extras["events"] = EventPublisher(runtime)
    return found


def publish(runtime: Runtime, type_: str, tenant_id: str, **details: str | int) -> bool:
    return publisher(runtime).publish(DomainEvent(type_, tenant_id, runtime.clock.now(), details))


def ensure_bus(runtime: Runtime) -> None:
    """Create the event bus if missing (local stack and tests; the CDK app creates it in AWS)."""
    client = publisher(runtime)._events_client()
    name = runtime.settings.event_bus_name
    if name == "default":
        return
    try:
        client.describe_event_bus(Name=name)
    except client.exceptions.ResourceNotFoundException:
        client.create_event_bus(Name=name)
