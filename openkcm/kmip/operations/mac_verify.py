"""MAC Verify (KMIP 1.2+, spec 4.34): Validity Indicator Valid/Invalid, compared in constant time.
Allowed while the key is Active, Deactivated or Compromised (verification is processing)."""

from __future__ import annotations

import hmac

from openkcm.domain.objects import ACTIVE, COMPROMISED, DEACTIVATED
from openkcm.kmip.common import bytes_field, require_state
from openkcm.kmip.context import BatchState, Outcome, RequestContext
from openkcm.kmip.operations.mac import digest, hmac_key
from openkcm.protocol import ttlv
from openkcm.protocol.tags import Tag, Usage, Validity
from openkcm.protocol.ttlv import TTLV


def handle(ctx: RequestContext, payload: TTLV, batch: BatchState) -> Outcome:
    obj = hmac_key(ctx, payload, batch, Usage.MAC_VERIFY)
    require_state(obj, ACTIVE, DEACTIVATED, COMPROMISED)
    data = bytes_field(payload, Tag.DATA, "Data", required=True) or b""
    mac = bytes_field(payload, Tag.MAC_DATA, "MAC Data", required=True) or b""
    valid = hmac.compare_digest(digest(ctx, obj, data), mac)
    return Outcome(
        [
            ttlv.text(Tag.UNIQUE_IDENTIFIER, obj.object_id),
            ttlv.enumeration(Tag.VALIDITY_INDICATOR, Validity.VALID if valid else Validity.INVALID),
        ],
        obj.object_id,
        obj.l2_version,
    )
