"""Set Attribute (KMIP 2.0, spec 6.1.50): sets a single-valued attribute (replacing its value) or, for
a multi-valued one, replaces all its instances by the one given."""

from __future__ import annotations

from openkcm.kmip import editing
from openkcm.kmip.common import load, target_uid
from openkcm.kmip.context import BatchState, Outcome, RequestContext
from openkcm.kmip.errors import KmipError
from openkcm.kmip.operations.add_attribute import new_attribute
from openkcm.protocol import ttlv
from openkcm.protocol.tags import Reason, Tag
from openkcm.protocol.ttlv import TTLV


def handle(ctx: RequestContext, payload: TTLV, batch: BatchState) -> Outcome:
    if not ctx.v2:
        raise KmipError(Reason.OPERATION_NOT_SUPPORTED, "Set Attribute is a KMIP 2.0 operation")
    obj = load(ctx, target_uid(payload, batch), batch)
    name, value = new_attribute(ctx, payload)
    editing.settable(name)
    attributes = editing.copy_attributes(obj)
    attributes[name] = [value]
    obj = editing.save(ctx, obj, attributes)
    return Outcome([ttlv.text(Tag.UNIQUE_IDENTIFIER, obj.object_id)], obj.object_id)
