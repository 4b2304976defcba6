"""Attribute bookkeeping shared by the operations that create or change objects."""

from __future__ import annotations

import json
from typing import Any

from openkcm.domain.objects import Attributes, ManagedObject
from openkcm.kmip.attributes import SPECS, is_custom, template_attributes
from openkcm.kmip.context import RequestContext
from openkcm.kmip.errors import invalid
from openkcm.protocol.tags import Reason
from openkcm.protocol.ttlv import TTLV

MAX_INSTANCES = 32
# The client-settable attributes of one object, as stored (JSON): far below DynamoDB's 400 KB item, so a
# lifecycle write (Revoke, Destroy) always fits. Without a bound one client of a tenant could add custom
# attributes to any of the tenant's keys until the item was too large to revoke or destroy.
MAX_ATTRIBUTES_BYTES = 64 * 1024


def check_size(attributes: Attributes) -> None:
    if len(json.dumps(attributes, separators=(",", ":"))) > MAX_ATTRIBUTES_BYTES:
        raise invalid(
            f"the object's attributes would exceed {MAX_ATTRIBUTES_BYTES} bytes", Reason.INVALID_ATTRIBUTE_VALUE
        )


def now(ctx: RequestContext) -> int:
    return int(ctx.services.clock.timestamp())


def names_of(attributes: Attributes) -> list[str]:
    return [n["v"] for n in attributes.get("Name", [])]


def new_attributes(ctx: RequestContext, payload: TTLV) -> tuple[Attributes, list[str]]:
    """Client-supplied attributes of a Create/Register/Derive Key, plus the dates the server sets."""
    attributes: Attributes = {}
    for name, value in template_attributes(ctx.version, payload):
        spec = SPECS.get(name)
        if name.startswith("y-") or (not is_custom(name) and (spec is None or not spec.on_create)):  # y-: server's
            raise invalid(f"attribute {name!r} is set by the server", Reason.ATTRIBUTE_READ_ONLY)
        values = attributes.setdefault(name, [])
        if values and spec is not None and not spec.multi:
            raise invalid(f"attribute {name!r} is single-valued", Reason.ATTRIBUTE_SINGLE_VALUED)
        if len(values) >= MAX_INSTANCES:
            raise invalid("too many attribute instances", Reason.INVALID_ATTRIBUTE_VALUE)
        values.append(value)
    check_size(attributes)
    t = now(ctx)
    attributes["Initial Date"] = [t]
    attributes["Original Creation Date"] = [t]
    attributes["Last Change Date"] = [t]
    return attributes, names_of(attributes)


def stamp(ctx: RequestContext, obj: ManagedObject, *dates: str, **extra: Any) -> Attributes:
    """A copy of the object's attributes with ``dates`` and Last Change Date set to now."""
    attributes = {k: list(v) for k, v in obj.attributes.items()}
    t = now(ctx)
    for name in dates:
        attributes[name] = [t]
    for name, value in extra.items():
        attributes[name.replace("_", " ")] = [value]
    attributes["Last Change Date"] = [t]
    return attributes
