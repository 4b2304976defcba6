"""Encrypt (KMIP 1.2+, spec 4.29) with an Active AES key of the caller's tenant.

Without Cryptographic Parameters the documented defaults apply (AES-CBC-PKCS5, server IV returned): see
openkcm.kmip.ciphers. libmongocrypt's delegated mode sends {CBC, PKCS5, AES, Random IV = true} and needs the
16-byte IV back. Streaming (Init/Final Indicator, Correlation Value) is not supported."""

from __future__ import annotations

from openkcm.kmip import ciphers
from openkcm.kmip.common import bytes_field, crypto_params, load, require_active, require_usage, target_uid
from openkcm.kmip.context import BatchState, Outcome, RequestContext
from openkcm.kmip.errors import KmipError, invalid
from openkcm.protocol import ttlv
from openkcm.protocol.tags import Alg, Reason, Tag, Usage
from openkcm.protocol.ttlv import TTLV


def aes_key(ctx: RequestContext, payload: TTLV, batch: BatchState, usage: int, active_only: bool = True):
    for tag in (Tag.INIT_INDICATOR, Tag.FINAL_INDICATOR, Tag.CORRELATION_VALUE):
        if payload.get(tag) is not None:
            raise KmipError(
                Reason.FEATURE_NOT_SUPPORTED, "streaming cryptographic operations are not supported"
            )
    obj = load(ctx, target_uid(payload, batch), batch)
    if obj.object_type != "SYMMETRIC_KEY" or obj.first("Cryptographic Algorithm") != Alg.AES:
        raise invalid("the key is not an AES key", Reason.INVALID_OBJECT_TYPE)
    if active_only:
        require_active(obj)
    require_usage(obj, usage)
    return obj


def handle(ctx: RequestContext, payload: TTLV, batch: BatchState) -> Outcome:
    obj = aes_key(ctx, payload, batch, Usage.ENCRYPT)
    params = ciphers.resolve(crypto_params(payload), ctx.version)
    data = bytes_field(payload, Tag.DATA, "Data", required=True) or b""
    iv = bytes_field(payload, Tag.IV_COUNTER_NONCE, "IV/Counter/Nonce")
    aad = bytes_field(payload, Tag.AUTHENTICATED_ENCRYPTION_ADDITIONAL_DATA, "Additional Data")
    result = ciphers.encrypt(ctx.services.store.material(obj), params, data, iv, aad)
    out = [ttlv.text(Tag.UNIQUE_IDENTIFIER, obj.object_id), ttlv.byte_string(Tag.DATA, result.data)]
    if result.iv is not None:
        out.append(ttlv.byte_string(Tag.IV_COUNTER_NONCE, result.iv))
    if result.tag is not None:
        out.append(ttlv.byte_string(Tag.AUTHENTICATED_ENCRYPTION_TAG, result.tag))
    return Outcome(out, obj.object_id, obj.l2_version)
