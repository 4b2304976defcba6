"""Delete Attribute (spec 4.16). 1.x: Attribute Name + Attribute Index (default 0) -> the deleted
Attribute; 2.0: Current Attribute or Attribute Reference (all instances)."""

from __future__ import annotations

from openkcm.kmip import editing
from openkcm.kmip.attributes import decode_attribute_2x, encode_attribute, reference_name
from openkcm.kmip.common import int_field, load, target_uid, text_field
from openkcm.kmip.context import BatchState, Outcome, RequestContext
from openkcm.kmip.errors import KmipError, invalid
from openkcm.protocol import ttlv
from openkcm.protocol.tags import Reason, Tag
from openkcm.protocol.ttlv import TTLV


def handle(ctx: RequestContext, payload: TTLV, batch: BatchState) -> Outcome:
    obj = load(ctx, target_uid(payload, batch), batch)
    attributes = editing.copy_attributes(obj)
    out = [ttlv.text(Tag.UNIQUE_IDENTIFIER, obj.object_id)]
    if ctx.v2:
        current, reference = payload.get(Tag.CURRENT_ATTRIBUTE), payload.get(Tag.ATTRIBUTE_REFERENCE)
        if current is not None and current.type == ttlv.STRUCTURE and len(current.children) == 1:
            name, value = decode_attribute_2x(current.children[0])
            editing.settable(name)
            if not attributes.get(name):
                raise KmipError(Reason.ATTRIBUTE_NOT_FOUND, "no such attribute")
            attributes[name].pop(editing.instance_index(attributes, name, None, value))
        elif reference is not None:
            name = reference_name(reference)
            editing.settable(name)
            if not attributes.get(name):
                raise KmipError(Reason.ATTRIBUTE_NOT_FOUND, "no such attribute")
            attributes[name] = []
        else:
            raise invalid("Current Attribute or Attribute Reference is required", Reason.MISSING_DATA)
    else:
        name = text_field(payload, Tag.ATTRIBUTE_NAME, "Attribute Name", required=True) or ""
        editing.settable(name)
        position = editing.instance_index(
            attributes, name, int_field(payload, Tag.ATTRIBUTE_INDEX, "Attribute Index")
        )
        value = attributes[name].pop(position)
        out.append(encode_attribute(ctx.version, name, value, position))
    if not attributes.get(name):
        attributes.pop(name, None)
    obj = editing.save(ctx, obj, attributes)
    return Outcome(out, obj.object_id)
