"""Destroy (spec 4.21): the material is removed for good; the object and its attributes remain with
state Destroyed (Destroyed Compromised when it was Compromised), Destroy Date set. An Active object must
be revoked first (Wrong Key Lifecycle State)."""

from __future__ import annotations

from openkcm.domain.objects import COMPROMISED, DEACTIVATED, DESTROYED, DESTROYED_COMPROMISED, PRE_ACTIVE
from openkcm.kmip.common import load, require_state, target_uid
from openkcm.kmip.context import BatchState, Outcome, RequestContext
from openkcm.kmip.lifecycle import stamp
from openkcm.protocol import ttlv
from openkcm.protocol.tags import Tag
from openkcm.protocol.ttlv import TTLV


def handle(ctx: RequestContext, payload: TTLV, batch: BatchState) -> Outcome:
    obj = load(ctx, target_uid(payload, batch), batch)
    require_state(obj, PRE_ACTIVE, DEACTIVATED, COMPROMISED)
    new_state = DESTROYED_COMPROMISED if obj.state == COMPROMISED else DESTROYED
    obj = ctx.services.store.update(
        obj, state=new_state, attributes=stamp(ctx, obj, "Destroy Date"), remove_material=True
    )
    return Outcome([ttlv.text(Tag.UNIQUE_IDENTIFIER, obj.object_id)], obj.object_id)
