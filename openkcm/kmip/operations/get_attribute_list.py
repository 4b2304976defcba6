"""Get Attribute List (spec 4.13): the names (1.x) or references (2.0) of the object's attributes that
the client's version defines."""

from __future__ import annotations

from openkcm.kmip.attributes import SPECS, object_attributes, visible
from openkcm.kmip.common import load, target_uid
from openkcm.kmip.context import BatchState, Outcome, RequestContext
from openkcm.protocol import ttlv
from openkcm.protocol.tags import Tag
from openkcm.protocol.ttlv import TTLV


def handle(ctx: RequestContext, payload: TTLV, batch: BatchState) -> Outcome:
    obj = load(ctx, target_uid(payload, batch), batch)
    out = [ttlv.text(Tag.UNIQUE_IDENTIFIER, obj.object_id)]
    for name, _ in object_attributes(obj):
        if not visible(ctx.version, name):
            continue
        if ctx.v2:
            out.append(ttlv.enumeration(Tag.ATTRIBUTE_REFERENCE, SPECS[name].tag))
        else:
            out.append(ttlv.text(Tag.ATTRIBUTE_NAME, name))
    return Outcome(out, obj.object_id)
