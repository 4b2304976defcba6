"""Derive Key (spec 4.6): a Symmetric Key derived from an Active base key of the SAME tenant.

Methods: HMAC (KMIP 1.x and 2.0: HMAC-SHA256(base, Derivation Data), up to 256 bits) and HKDF (2.0 only:
HKDF-SHA256 with Derivation Data as info and the optional Salt: ``openkcm.domain.hierarchy.derive_l4``).
The derived key is the L4 of the hierarchy: its material is NEVER stored — the object records only the
recipe (base id, method, data, salt, length) and Get/Encrypt recompute it from the base each time. Destroying
the base makes every key derived from it unusable."""

from __future__ import annotations

from openkcm.domain.objects import ACTIVE
from openkcm.kmip.common import AES_BITS, bytes_field, crypto_params, int_field, load, require_usage
from openkcm.kmip.context import BatchState, Outcome, RequestContext
from openkcm.kmip.errors import KmipError, invalid, wrong_state
from openkcm.kmip.lifecycle import new_attributes
from openkcm.protocol import ttlv
from openkcm.protocol.tags import Alg, Derivation, Hashing, LinkType, ObjectType, Reason, Tag, Usage
from openkcm.protocol.ttlv import TTLV


def handle(ctx: RequestContext, payload: TTLV, batch: BatchState) -> Outcome:
    if int_field(payload, Tag.OBJECT_TYPE, "Object Type", (ttlv.ENUMERATION,)) != ObjectType.SYMMETRIC_KEY:
        raise invalid("Derive Key makes Symmetric Keys", Reason.INVALID_OBJECT_TYPE)
    ids = [n.value for n in payload.all(Tag.UNIQUE_IDENTIFIER) if n.type == ttlv.TEXT_STRING]
    if not ids and batch.placeholder:
        ids = [batch.placeholder]
    if len(ids) != 1:
        raise invalid("exactly one base object is supported", Reason.INVALID_FIELD)
    base = load(ctx, str(ids[0]), batch)
    if base.object_type not in ("SYMMETRIC_KEY", "SECRET_DATA") or base.derived_from is not None:
        raise invalid("the base object must be a stored key or secret", Reason.INVALID_OBJECT_TYPE)
    if base.state != ACTIVE:
        raise wrong_state("the base key is not Active")
    require_usage(base, Usage.DERIVE_KEY)
    method = int_field(payload, Tag.DERIVATION_METHOD, "Derivation Method", (ttlv.ENUMERATION,))
    if method == Derivation.HMAC:
        kind = "hmac"
    elif method == Derivation.HKDF and ctx.v2:
        kind = "hkdf"
    else:
        raise KmipError(Reason.INVALID_FIELD, "supported: HMAC (1.x, 2.0) and HKDF (2.0) derivation")
    params = payload.get(Tag.DERIVATION_PARAMETERS)
    if params is None or params.type != ttlv.STRUCTURE:
        raise invalid("Derivation Parameters are required", Reason.MISSING_DATA)
    hashing = crypto_params(params)
    if hashing is not None and hashing.hashing not in (None, Hashing.SHA_256):
        raise invalid("only SHA-256 derivation is supported")
    data = bytes_field(params, Tag.DERIVATION_DATA, "Derivation Data", required=True) or b""
    salt = bytes_field(params, Tag.SALT, "Salt") or b""
    if len(data) > 1024 or len(salt) > 1024:
        raise invalid("Derivation Data and Salt are at most 1024 bytes")
    attributes, names = new_attributes(ctx, payload)
    length_bits = attributes.get("Cryptographic Length", [256])[0]
    limit = 256 if kind == "hmac" else 512
    if length_bits % 8 or not 128 <= length_bits <= limit:
        raise invalid(f"derived keys are 128-{limit} bits", Reason.INVALID_ATTRIBUTE_VALUE)
    attributes.setdefault("Cryptographic Algorithm", [Alg.AES])
    if attributes["Cryptographic Algorithm"][0] == Alg.AES and length_bits not in AES_BITS:
        raise invalid("AES keys are 128, 192 or 256 bits", Reason.INVALID_ATTRIBUTE_VALUE)
    attributes["Cryptographic Length"] = [length_bits]
    attributes["Link"] = [{"t": LinkType.DERIVATION_BASE_OBJECT_LINK, "id": base.object_id}]
    attributes["_derived"] = [
        {
            "base": base.object_id,
            "method": kind,
            "data": data.hex(),
            "salt": salt.hex(),
            "length": length_bits // 8,
        }
    ]
    obj = ctx.services.store.create(
        ctx.tenant_id,
        object_type="SYMMETRIC_KEY",
        material=None,
        attributes=attributes,
        names=names,
        created_by=ctx.service_id,
    )
    batch.placeholder = obj.object_id
    return Outcome([ttlv.text(Tag.UNIQUE_IDENTIFIER, obj.object_id)], obj.object_id)
