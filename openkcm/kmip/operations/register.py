"""Register (spec 4.3): a client-supplied Symmetric Key, Secret Data or Opaque Object, Pre-Active.

libmongocrypt registers 96 bytes of Secret Data (type Seed, format Opaque) with one template attribute,
Cryptographic Usage Mask = 0: accepted (a mask of 0 restricts nothing)."""

from __future__ import annotations

from openkcm.domain.objects import PRE_ACTIVE
from openkcm.kmip.common import AES_BITS, decode_object
from openkcm.kmip.context import BatchState, Outcome, RequestContext
from openkcm.kmip.errors import invalid
from openkcm.kmip.lifecycle import new_attributes
from openkcm.protocol import ttlv
from openkcm.protocol.tags import Alg, Reason, Tag
from openkcm.protocol.ttlv import TTLV


def handle(ctx: RequestContext, payload: TTLV, batch: BatchState) -> Outcome:
    node = payload.get(Tag.OBJECT_TYPE)
    if node is None or node.type != ttlv.ENUMERATION:
        raise invalid("Object Type is required", Reason.MISSING_DATA)
    decoded = decode_object(node.value, payload)  # type: ignore[arg-type]
    attributes, names = new_attributes(ctx, payload)
    if decoded.algorithm is not None:
        attributes.setdefault("Cryptographic Algorithm", [decoded.algorithm])
    if decoded.object_type == "SYMMETRIC_KEY":
        attributes.setdefault("Cryptographic Algorithm", [Alg.AES])
        bits = len(decoded.material) * 8
        # The algorithm as stored (a template attribute wins over the Key Block's): an AES key must be
        # one AES can use, or Encrypt and ReKey fail on it later.
        if attributes["Cryptographic Algorithm"][0] == Alg.AES and (
            bits not in AES_BITS or decoded.length not in (None, bits)
        ):
            raise invalid(
                "AES keys are 128, 192 or 256 bits, and their Cryptographic Length is the material's",
                Reason.INVALID_ATTRIBUTE_VALUE,
            )
        attributes["Cryptographic Length"] = [decoded.length or bits]
    elif decoded.length is not None:
        attributes.setdefault("Cryptographic Length", [decoded.length])
    attributes.update(decoded.hidden)
    obj = ctx.services.store.create(
        ctx.tenant_id,
        object_type=decoded.object_type,
        material=decoded.material,
        attributes=attributes,
        names=names,
        state=PRE_ACTIVE,
        created_by=ctx.service_id,
    )
    batch.placeholder = obj.object_id
    return Outcome([ttlv.text(Tag.UNIQUE_IDENTIFIER, obj.object_id)], obj.object_id, obj.l2_version)
