"""Get Attributes (spec 4.12). 1.x: Attribute Name* -> Attribute*; 2.0: Attribute Reference* ->
Attributes. No names: every attribute the client's version defines (never a newer one)."""

from __future__ import annotations

from openkcm.kmip.attributes import encode_object_attributes, reference_name
from openkcm.kmip.common import load, target_uid
from openkcm.kmip.context import BatchState, Outcome, RequestContext
from openkcm.protocol import ttlv
from openkcm.protocol.tags import Tag
from openkcm.protocol.ttlv import TTLV


def requested_names(ctx: RequestContext, payload: TTLV) -> list[str] | None:
    if ctx.v2:
        names = [reference_name(n) for n in payload.all(Tag.ATTRIBUTE_REFERENCE)]
    else:
        names = [str(n.value) for n in payload.all(Tag.ATTRIBUTE_NAME) if n.type == ttlv.TEXT_STRING]
    return names or None


def handle(ctx: RequestContext, payload: TTLV, batch: BatchState) -> Outcome:
    obj = load(ctx, target_uid(payload, batch), batch)
    nodes = encode_object_attributes(ctx.version, obj, requested_names(ctx, payload))
    uid = ttlv.text(Tag.UNIQUE_IDENTIFIER, obj.object_id)
    if ctx.v2:
        return Outcome([uid, ttlv.structure(Tag.ATTRIBUTES, nodes)], obj.object_id)
    return Outcome([uid, *nodes], obj.object_id)
