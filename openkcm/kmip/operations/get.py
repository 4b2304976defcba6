"""Get (spec 4.11): the object's material. Symmetric keys as Raw with algorithm and length in the Key
Block; Secret Data in the format it was registered in (Opaque for libmongocrypt: its 96 bytes come back as
the Key Material byte string). Destroyed objects have no material (Wrong Key Lifecycle State).

Key Wrapping Specification: the object may be returned wrapped (Wrapping Method Encrypt, AES Key Wrap,
RFC 3394 / RFC 5649 with padding) under another Active AES key OF THE SAME TENANT; a key of anyone else is
"not found" (DECISIONS 10)."""

from __future__ import annotations

from cryptography.hazmat.primitives import keywrap

from openkcm.domain.objects import ACTIVE, DESTROYED, DESTROYED_COMPROMISED
from openkcm.kmip.common import encode_object, int_field, load, target_uid, text_field
from openkcm.kmip.context import BatchState, Outcome, RequestContext
from openkcm.kmip.errors import KmipError, invalid, wrong_state
from openkcm.protocol import ttlv
from openkcm.protocol.tags import Alg, KeyFormat, Mode, ObjectType, Reason, Tag, Usage, WrappingMethod
from openkcm.protocol.ttlv import TTLV


def _wrap(ctx: RequestContext, spec: TTLV, material: bytes, batch: BatchState) -> tuple[bytes, TTLV]:
    method = int_field(spec, Tag.WRAPPING_METHOD, "Wrapping Method", (ttlv.ENUMERATION,))
    if method != WrappingMethod.ENCRYPT:
        raise KmipError(Reason.KEY_WRAP_TYPE_NOT_SUPPORTED, "only Wrapping Method Encrypt is supported")
    if spec.get(Tag.MAC_SIGNATURE_KEY_INFORMATION) is not None:
        raise KmipError(Reason.KEY_WRAP_TYPE_NOT_SUPPORTED, "MAC/sign wrapping is not supported")
    info = spec.get(Tag.ENCRYPTION_KEY_INFORMATION)
    if info is None or info.type != ttlv.STRUCTURE:
        raise invalid("Encryption Key Information is required", Reason.MISSING_DATA)
    wrapping_id = text_field(info, Tag.UNIQUE_IDENTIFIER, "Unique Identifier", required=True)
    params = info.get(Tag.CRYPTOGRAPHIC_PARAMETERS)
    mode = (
        int_field(params, Tag.BLOCK_CIPHER_MODE, "Block Cipher Mode", (ttlv.ENUMERATION,)) if params else None
    )
    if mode not in (None, Mode.NIST_KEY_WRAP, Mode.AES_KEY_WRAP_PADDING):
        raise KmipError(Reason.KEY_WRAP_TYPE_NOT_SUPPORTED, "wrapping uses AES Key Wrap (RFC 3394/5649)")
    encoding = int_field(spec, Tag.ENCODING_OPTION, "Encoding Option", (ttlv.ENUMERATION,))
    if encoding not in (None, 1):
        raise KmipError(Reason.ENCODING_OPTION_ERROR, "only No Encoding is supported")
    wrapper = load(ctx, wrapping_id or "", batch)  # another tenant's key: not found, audited
    if wrapper.object_type != "SYMMETRIC_KEY" or wrapper.first("Cryptographic Algorithm") != Alg.AES:
        raise invalid("the wrapping key must be an AES key", Reason.INVALID_OBJECT_TYPE)
    if wrapper.state != ACTIVE:
        raise wrong_state("the wrapping key is not Active")
    mask = wrapper.first("Cryptographic Usage Mask", 0) or 0
    if mask and not mask & Usage.WRAP_KEY:
        raise KmipError(Reason.INCOMPATIBLE_CRYPTOGRAPHIC_USAGE_MASK, "the wrapping key may not wrap keys")
    kek = ctx.services.store.material(wrapper)
    if mode == Mode.NIST_KEY_WRAP and len(material) % 8 == 0 and len(material) >= 16:
        blob = keywrap.aes_key_wrap(kek, material)
    else:
        blob = keywrap.aes_key_wrap_with_padding(kek, material)
        mode = Mode.AES_KEY_WRAP_PADDING
    wrapping_data = ttlv.structure(
        Tag.KEY_WRAPPING_DATA,
        [
            ttlv.enumeration(Tag.WRAPPING_METHOD, WrappingMethod.ENCRYPT),
            ttlv.structure(
                Tag.ENCRYPTION_KEY_INFORMATION,
                [
                    ttlv.text(Tag.UNIQUE_IDENTIFIER, wrapper.object_id),
                    ttlv.structure(
                        Tag.CRYPTOGRAPHIC_PARAMETERS, [ttlv.enumeration(Tag.BLOCK_CIPHER_MODE, mode)]
                    ),
                ],
            ),
        ],
    )
    return blob, wrapping_data


def handle(ctx: RequestContext, payload: TTLV, batch: BatchState) -> Outcome:
    obj = load(ctx, target_uid(payload, batch), batch)
    if obj.state in (DESTROYED, DESTROYED_COMPROMISED):
        raise wrong_state("the object was destroyed")
    fmt = int_field(payload, Tag.KEY_FORMAT_TYPE, "Key Format Type", (ttlv.ENUMERATION,))
    if fmt is not None and obj.object_type != "OPAQUE_DATA":
        stored = obj.first("_kft", KeyFormat.RAW if obj.object_type == "SYMMETRIC_KEY" else KeyFormat.OPAQUE)
        if fmt != stored:
            raise KmipError(
                Reason.KEY_FORMAT_TYPE_NOT_SUPPORTED, "the key is available in its registered format only"
            )
    if payload.get(Tag.KEY_COMPRESSION_TYPE) is not None:
        raise KmipError(Reason.KEY_COMPRESSION_TYPE_NOT_SUPPORTED, "key compression is not supported")
    material = ctx.services.store.material(obj)
    spec = payload.get(Tag.KEY_WRAPPING_SPECIFICATION)
    if spec is not None:
        if spec.type != ttlv.STRUCTURE:
            raise invalid("Key Wrapping Specification must be a Structure")
        blob, wrapping = _wrap(ctx, spec, material, batch)
        managed = encode_object(obj, blob, wrapped=True, wrapping=wrapping)
    else:
        managed = encode_object(obj, material)
    return Outcome(
        [
            ttlv.enumeration(Tag.OBJECT_TYPE, getattr(ObjectType, obj.object_type)),
            ttlv.text(Tag.UNIQUE_IDENTIFIER, obj.object_id),
            managed,
        ],
        obj.object_id,
        obj.l2_version,
    )
