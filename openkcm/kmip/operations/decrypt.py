"""Decrypt (KMIP 1.2+, spec 4.30). Allowed while the key is Active, Deactivated or Compromised (process
only, SP 800-57); same defaults as Encrypt. Any padding/tag failure is one opaque Cryptographic Failure."""

from __future__ import annotations

from openkcm.domain.objects import ACTIVE, COMPROMISED, DEACTIVATED
from openkcm.kmip import ciphers
from openkcm.kmip.common import bytes_field, crypto_params, require_state
from openkcm.kmip.context import BatchState, Outcome, RequestContext
from openkcm.kmip.operations.encrypt import aes_key
from openkcm.protocol import ttlv
from openkcm.protocol.tags import Tag, Usage
from openkcm.protocol.ttlv import TTLV


def handle(ctx: RequestContext, payload: TTLV, batch: BatchState) -> Outcome:
    obj = aes_key(ctx, payload, batch, Usage.DECRYPT, active_only=False)
    require_state(obj, ACTIVE, DEACTIVATED, COMPROMISED)
    params = ciphers.resolve(crypto_params(payload), ctx.version)
    data = bytes_field(payload, Tag.DATA, "Data", required=True) or b""
    iv = bytes_field(payload, Tag.IV_COUNTER_NONCE, "IV/Counter/Nonce")
    aad = bytes_field(payload, Tag.AUTHENTICATED_ENCRYPTION_ADDITIONAL_DATA, "Additional Data")
    tag = bytes_field(payload, Tag.AUTHENTICATED_ENCRYPTION_TAG, "Authenticated Encryption Tag")
    plain = ciphers.decrypt(ctx.services.store.material(obj), params, data, iv, aad, tag)
    return Outcome(
        [ttlv.text(Tag.UNIQUE_IDENTIFIER, obj.object_id), ttlv.byte_string(Tag.DATA, plain)],
        obj.object_id,
        obj.l2_version,
    )
