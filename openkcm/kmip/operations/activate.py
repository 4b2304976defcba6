"""Activate (spec 4.19): Pre-Active -> Active, Activation Date set. Any other state: Wrong Key Lifecycle
State (Permission Denied for 1.x clients, whose enumeration lacks it)."""

from __future__ import annotations

from openkcm.domain.objects import ACTIVE, PRE_ACTIVE
from openkcm.kmip.common import load, require_state, target_uid
from openkcm.kmip.context import BatchState, Outcome, RequestContext
from openkcm.kmip.lifecycle import stamp
from openkcm.protocol import ttlv
from openkcm.protocol.tags import Tag
from openkcm.protocol.ttlv import TTLV


def handle(ctx: RequestContext, payload: TTLV, batch: BatchState) -> Outcome:
    obj = load(ctx, target_uid(payload, batch), batch)
    require_state(obj, PRE_ACTIVE)
    obj = ctx.services.store.update(obj, state=ACTIVE, attributes=stamp(ctx, obj, "Activation Date"))
    return Outcome([ttlv.text(Tag.UNIQUE_IDENTIFIER, obj.object_id)], obj.object_id, obj.l2_version)
