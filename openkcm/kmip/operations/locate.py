"""Locate (spec 4.9): the caller's objects matching every attribute given (Name, Object Type, State,
algorithm/length/usage mask, Object Group, custom x- attributes; two instances of a date = a range),
newest first, after Offset Items (1.3+), at most Maximum Items. Located Items (the total) from 1.3 on.
Only the caller's partition is searched: another tenant's names and attributes match nothing. With a Name
among the attributes only the objects of that name are read (the name index, ``openkcm.domain.objects``)."""

from __future__ import annotations

from typing import Any

from openkcm.domain.objects import ManagedObject
from openkcm.kmip.attributes import SPECS, decode_attribute_1x, decode_attribute_2x, object_attributes
from openkcm.kmip.common import int_field
from openkcm.kmip.context import BatchState, Outcome, RequestContext
from openkcm.kmip.errors import invalid
from openkcm.protocol import ttlv
from openkcm.protocol.tags import Tag
from openkcm.protocol.ttlv import TTLV

DATES = {name for name, spec in SPECS.items() if spec.type == ttlv.DATE_TIME}


def criteria(ctx: RequestContext, payload: TTLV) -> dict[str, list[Any]]:
    wanted: dict[str, list[Any]] = {}
    if ctx.v2:
        node = payload.get(Tag.ATTRIBUTES)
        pairs = [decode_attribute_2x(c) for c in node.children] if node is not None else []
    else:
        pairs = []
        for node in payload.all(Tag.ATTRIBUTE):
            name, _, value = decode_attribute_1x(node)
            if value is None:
                raise invalid("Attribute Value is required")
            pairs.append((name, value))
    for name, value in pairs:
        wanted.setdefault(name, []).append(value)
    return wanted


def matches(obj: ManagedObject, wanted: dict[str, list[Any]]) -> bool:
    have = dict(object_attributes(obj))
    for name, values in wanted.items():
        present = have.get(name) or []
        if name in DATES and len(values) == 2:
            low, high = sorted(values)
            if not any(low <= v <= high for v in present):
                return False
            continue
        for value in values:
            if name == "Cryptographic Usage Mask":
                if not any(v & value == value for v in present):
                    return False
            elif name == "Name":
                if not any(v["v"] == value["v"] for v in present):
                    return False
            elif value not in present:
                return False
    return True


def handle(ctx: RequestContext, payload: TTLV, batch: BatchState) -> Outcome:
    maximum = int_field(payload, Tag.MAXIMUM_ITEMS, "Maximum Items")
    offset = int_field(payload, Tag.OFFSET_ITEMS, "Offset Items") or 0
    if (maximum is not None and maximum < 0) or offset < 0:
        raise invalid("Maximum Items and Offset Items must not be negative")
    wanted = criteria(ctx, payload)
    store = ctx.services.store
    names = wanted.get("Name")
    if names and isinstance(names[0].get("v"), str) and store.ensure_name_index(ctx.tenant_id):
        candidates = store.named(ctx.tenant_id, names[0]["v"])  # the index: only this name's objects
    else:
        if batch.listing is None:
            batch.listing = store.all(ctx.tenant_id)
        candidates = batch.listing
    found = [o for o in candidates if matches(o, wanted)]
    found.reverse()  # newest first
    page = found[offset:] if maximum is None else found[offset : offset + maximum]
    out: list[TTLV] = []
    if ctx.at_least(1, 3):
        out.append(ttlv.integer(Tag.LOCATED_ITEMS, len(found)))
    out += [ttlv.text(Tag.UNIQUE_IDENTIFIER, o.object_id) for o in page]
    if page:
        batch.placeholder = page[0].object_id
    return Outcome(out, page[0].object_id if len(page) == 1 else "")
