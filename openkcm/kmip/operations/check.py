"""Check (spec 4.10): succeeds when the object is Active and its usage mask allows every bit asked for
in Cryptographic Usage Mask. Usage limits and leases are not tracked (Usage Limits Count/Lease Time are
accepted and ignored)."""

from __future__ import annotations

from openkcm.kmip.common import int_field, load, require_active, target_uid
from openkcm.kmip.context import BatchState, Outcome, RequestContext
from openkcm.kmip.errors import KmipError
from openkcm.protocol import ttlv
from openkcm.protocol.tags import Reason, Tag
from openkcm.protocol.ttlv import TTLV


def handle(ctx: RequestContext, payload: TTLV, batch: BatchState) -> Outcome:
    obj = load(ctx, target_uid(payload, batch), batch)
    require_active(obj)
    wanted = int_field(payload, Tag.CRYPTOGRAPHIC_USAGE_MASK, "Cryptographic Usage Mask")
    mask = obj.first("Cryptographic Usage Mask", 0) or 0
    if wanted and mask and mask & wanted != wanted:
        raise KmipError(
            Reason.INCOMPATIBLE_CRYPTOGRAPHIC_USAGE_MASK,
            "the usage mask does not allow this",
            [
                ttlv.text(Tag.UNIQUE_IDENTIFIER, obj.object_id),
                ttlv.integer(Tag.CRYPTOGRAPHIC_USAGE_MASK, wanted),
            ],
        )
    return Outcome([ttlv.text(Tag.UNIQUE_IDENTIFIER, obj.object_id)], obj.object_id)
