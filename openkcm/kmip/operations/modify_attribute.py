"""Modify Attribute (spec 4.15). 1.x: the instance at Attribute Index (default 0) gets the new value;
2.0: Current Attribute (optional) is replaced by New Attribute."""

from __future__ import annotations

from openkcm.kmip import editing
from openkcm.kmip.attributes import decode_attribute_1x, decode_attribute_2x, encode_attribute
from openkcm.kmip.common import load, target_uid
from openkcm.kmip.context import BatchState, Outcome, RequestContext
from openkcm.kmip.errors import invalid
from openkcm.kmip.operations.add_attribute import new_attribute
from openkcm.protocol import ttlv
from openkcm.protocol.tags import Reason, Tag
from openkcm.protocol.ttlv import TTLV


def handle(ctx: RequestContext, payload: TTLV, batch: BatchState) -> Outcome:
    obj = load(ctx, target_uid(payload, batch), batch)
    current = None
    index = None
    if ctx.v2:
        name, value = new_attribute(ctx, payload)
        node = payload.get(Tag.CURRENT_ATTRIBUTE)
        if node is not None:
            if node.type != ttlv.STRUCTURE or len(node.children) != 1:
                raise invalid("Current Attribute holds one attribute")
            current_name, current = decode_attribute_2x(node.children[0])
            if current_name != name:
                raise invalid("Current and New Attribute differ in name", Reason.INVALID_ATTRIBUTE)
    else:
        node = payload.get(Tag.ATTRIBUTE)
        if node is None:
            raise invalid("Attribute is required", Reason.MISSING_DATA)
        name, index, value = decode_attribute_1x(node)
        if value is None:
            raise invalid("Attribute Value is required", Reason.MISSING_DATA)
    editing.settable(name)
    attributes = editing.copy_attributes(obj)
    position = editing.instance_index(attributes, name, index, current)
    attributes[name][position] = value
    obj = editing.save(ctx, obj, attributes)
    out = [ttlv.text(Tag.UNIQUE_IDENTIFIER, obj.object_id)]
    if not ctx.v2:
        out.append(encode_attribute(ctx.version, name, value, position))
    return Outcome(out, obj.object_id)
