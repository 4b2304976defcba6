"""Query (spec 4.25): operations and object types supported, vendor and server information."""

from __future__ import annotations

from openkcm.kmip.context import BatchState, Outcome, RequestContext
from openkcm.protocol import ttlv
from openkcm.protocol.tags import ObjectType, QueryFunction, Tag
from openkcm.protocol.ttlv import TTLV

VENDOR = "OpenKCM"
OBJECT_TYPES = (ObjectType.SYMMETRIC_KEY, ObjectType.SECRET_DATA, ObjectType.OPAQUE_DATA)


def handle(ctx: RequestContext, payload: TTLV, batch: BatchState) -> Outcome:
    from openkcm.kmip.dispatch import HANDLERS, SINCE

    functions = {n.value for n in payload.all(Tag.QUERY_FUNCTION) if n.type == ttlv.ENUMERATION}
    out: list[TTLV] = []
    if QueryFunction.QUERY_OPERATIONS in functions:
        out += [
            ttlv.enumeration(Tag.OPERATION, op) for op in HANDLERS if SINCE.get(op, (1, 0)) <= ctx.version
        ]
    if QueryFunction.QUERY_OBJECTS in functions:
        out += [ttlv.enumeration(Tag.OBJECT_TYPE, t) for t in OBJECT_TYPES]
    if QueryFunction.QUERY_SERVER_INFORMATION in functions:
        out.append(ttlv.text(Tag.VENDOR_IDENTIFICATION, VENDOR))
        out.append(ttlv.structure(Tag.SERVER_INFORMATION, []))
    return Outcome(out)
