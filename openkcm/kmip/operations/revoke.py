"""Revoke (spec 4.20). Revocation Reason Key Compromise/CA Compromise: -> Compromised (from any state
but Destroyed), Compromise Date set. Any other reason: Active -> Deactivated, Deactivation Date set; other
states get Wrong Key Lifecycle State. mongod polls State and stops using a key that is no longer Active."""

from __future__ import annotations

from openkcm.domain.objects import ACTIVE, COMPROMISED, DEACTIVATED, PRE_ACTIVE
from openkcm.kmip.attributes import SPECS, decode_value
from openkcm.kmip.common import int_field, load, require_state, target_uid
from openkcm.kmip.context import BatchState, Outcome, RequestContext
from openkcm.kmip.errors import invalid
from openkcm.kmip.lifecycle import stamp
from openkcm.protocol import ttlv
from openkcm.protocol.tags import Reason, RevocationCode, Tag
from openkcm.protocol.ttlv import TTLV


def handle(ctx: RequestContext, payload: TTLV, batch: BatchState) -> Outcome:
    obj = load(ctx, target_uid(payload, batch), batch)
    node = payload.get(Tag.REVOCATION_REASON)
    if node is None:
        raise invalid("Revocation Reason is required", Reason.MISSING_DATA)
    reason = decode_value(SPECS["Revocation Reason"], node)
    store = ctx.services.store
    if reason["c"] in (RevocationCode.KEY_COMPROMISE, RevocationCode.CA_COMPROMISE):
        require_state(obj, PRE_ACTIVE, ACTIVE, DEACTIVATED, COMPROMISED)
        attributes = stamp(ctx, obj, *(() if obj.state == COMPROMISED else ("Compromise Date",)))
        occurred = int_field(
            payload, Tag.COMPROMISE_OCCURRENCE_DATE, "Compromise Occurrence Date", (ttlv.DATE_TIME,)
        )
        if occurred is not None:
            attributes["Compromise Occurrence Date"] = [occurred]
        new_state = COMPROMISED
    else:
        require_state(obj, ACTIVE)
        attributes = stamp(ctx, obj, "Deactivation Date")
        new_state = DEACTIVATED
    attributes["Revocation Reason"] = [reason]
    obj = store.update(obj, state=new_state, attributes=attributes)
    return Outcome([ttlv.text(Tag.UNIQUE_IDENTIFIER, obj.object_id)], obj.object_id, obj.l2_version)
