"""Add Attribute (spec 4.14). 1.x: Attribute -> the Attribute added (with its index); 2.0: New Attribute.
Only client-settable attributes (Name, Object Group, Contact Information, x- custom ones)."""

from __future__ import annotations

from openkcm.kmip import editing
from openkcm.kmip.attributes import decode_attribute_1x, decode_attribute_2x, encode_attribute
from openkcm.kmip.common import load, target_uid
from openkcm.kmip.context import BatchState, Outcome, RequestContext
from openkcm.kmip.errors import invalid
from openkcm.protocol import ttlv
from openkcm.protocol.tags import Reason, Tag
from openkcm.protocol.ttlv import TTLV


def new_attribute(ctx: RequestContext, payload: TTLV) -> tuple[str, object]:
    if ctx.v2:
        node = payload.get(Tag.NEW_ATTRIBUTE)
        if node is None or node.type != ttlv.STRUCTURE or len(node.children) != 1:
            raise invalid("New Attribute with one attribute is required", Reason.MISSING_DATA)
        return decode_attribute_2x(node.children[0])
    node = payload.get(Tag.ATTRIBUTE)
    if node is None:
        raise invalid("Attribute is required", Reason.MISSING_DATA)
    name, _, value = decode_attribute_1x(node)
    if value is None:
        raise invalid("Attribute Value is required", Reason.MISSING_DATA)
    return name, value


def handle(ctx: RequestContext, payload: TTLV, batch: BatchState) -> Outcome:
    obj = load(ctx, target_uid(payload, batch), batch)
    name, value = new_attribute(ctx, payload)
    editing.settable(name)
    attributes = editing.copy_attributes(obj)
    index = editing.add(attributes, name, value)
    obj = editing.save(ctx, obj, attributes)
    out = [ttlv.text(Tag.UNIQUE_IDENTIFIER, obj.object_id)]
    if not ctx.v2:
        out.append(encode_attribute(ctx.version, name, value, index))
    return Outcome(out, obj.object_id)
