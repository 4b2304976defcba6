"""MAC (KMIP 1.2+, spec 4.33): HMAC-SHA256 of Data with an Active HMAC-SHA256 key of the tenant."""

from __future__ import annotations

import hashlib
import hmac

from openkcm.domain.objects import ManagedObject
from openkcm.kmip.common import bytes_field, crypto_params, load, require_usage, target_uid
from openkcm.kmip.context import BatchState, Outcome, RequestContext
from openkcm.kmip.errors import KmipError, invalid
from openkcm.protocol import ttlv
from openkcm.protocol.tags import Alg, Reason, Tag, Usage
from openkcm.protocol.ttlv import TTLV

MAX_DATA = 1 << 20


def hmac_key(ctx: RequestContext, payload: TTLV, batch: BatchState, usage: int) -> ManagedObject:
    for tag in (Tag.INIT_INDICATOR, Tag.FINAL_INDICATOR, Tag.CORRELATION_VALUE):
        if payload.get(tag) is not None:
            raise KmipError(
                Reason.FEATURE_NOT_SUPPORTED, "streaming cryptographic operations are not supported"
            )
    obj = load(ctx, target_uid(payload, batch), batch)
    params = crypto_params(payload)
    if params is not None and params.algorithm not in (None, Alg.HMAC_SHA256):
        raise invalid("only HMAC-SHA256 is supported", Reason.INVALID_FIELD)
    if obj.object_type != "SYMMETRIC_KEY" or obj.first("Cryptographic Algorithm") != Alg.HMAC_SHA256:
        raise invalid("the key is not an HMAC-SHA256 key", Reason.INVALID_OBJECT_TYPE)
    require_usage(obj, usage)
    return obj


def digest(ctx: RequestContext, obj: ManagedObject, data: bytes) -> bytes:
    if len(data) > MAX_DATA:
        raise invalid("Data too large")
    return hmac.new(ctx.services.store.material(obj), data, hashlib.sha256).digest()


def handle(ctx: RequestContext, payload: TTLV, batch: BatchState) -> Outcome:
    from openkcm.kmip.common import require_active

    obj = hmac_key(ctx, payload, batch, Usage.MAC_GENERATE)
    require_active(obj)
    data = bytes_field(payload, Tag.DATA, "Data", required=True) or b""
    return Outcome(
        [
            ttlv.text(Tag.UNIQUE_IDENTIFIER, obj.object_id),
            ttlv.byte_string(Tag.MAC_DATA, digest(ctx, obj, data)),
        ],
        obj.object_id,
        obj.l2_version,
    )
