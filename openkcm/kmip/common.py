"""Helpers shared by the operation modules: identifiers, object lookup with the cross-tenant rule,
lifecycle checks, Cryptographic Parameters, and the Managed Object encoding of Get/Register."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from openkcm.domain.audit import AuditEvent
from openkcm.domain.objects import ACTIVE, ManagedObject, tenant_of_object_id
from openkcm.errors import NotFound
from openkcm.kmip.context import BatchState, RequestContext
from openkcm.kmip.errors import KmipError, invalid, not_found, wrong_state
from openkcm.protocol import ttlv
from openkcm.protocol.tags import KeyFormat, ObjectType, Reason, Tag
from openkcm.protocol.ttlv import TTLV

AES_BITS = frozenset({128, 192, 256})

MAX_UID = 256


def payload_or_empty(payload: TTLV | None) -> TTLV:
    return payload if payload is not None else ttlv.structure(Tag.REQUEST_PAYLOAD, [])


def text_field(payload: TTLV, tag: int, what: str, required: bool = False) -> str | None:
    node = payload.get(tag)
    if node is None:
        if required:
            raise invalid(f"{what} is required", Reason.MISSING_DATA)
        return None
    if node.type != ttlv.TEXT_STRING:
        raise invalid(f"{what} must be a Text String")
    return node.value  # type: ignore[return-value]


def int_field(payload: TTLV, tag: int, what: str, types: tuple[int, ...] = (ttlv.INTEGER,)) -> int | None:
    node = payload.get(tag)
    if node is None:
        return None
    if node.type not in types:
        raise invalid(f"{what} has the wrong type")
    return node.value  # type: ignore[return-value]


def bytes_field(payload: TTLV, tag: int, what: str, required: bool = False) -> bytes | None:
    node = payload.get(tag)
    if node is None:
        if required:
            raise invalid(f"{what} is required", Reason.MISSING_DATA)
        return None
    if node.type != ttlv.BYTE_STRING:
        raise invalid(f"{what} must be a Byte String")
    return node.value  # type: ignore[return-value]


def target_uid(payload: TTLV, batch: BatchState) -> str:
    """The Unique Identifier of the request, or the batch's ID placeholder when it is omitted."""
    uid = text_field(payload, Tag.UNIQUE_IDENTIFIER, "Unique Identifier")
    if uid is None:
        if batch.placeholder is None:
            raise invalid(
                "Unique Identifier is required (no ID placeholder in this batch)", Reason.MISSING_DATA
            )
        return batch.placeholder
    if not uid or len(uid) > MAX_UID:
        raise not_found()
    return uid


def load(ctx: RequestContext, uid: str, batch: BatchState) -> ManagedObject:
    """The caller's object. Another tenant's object is answered exactly like a random identifier; the
    attempt is written to the other tenant's audit trail as a security event."""
    store = ctx.services.store
    try:
        return store.get(ctx.tenant_id, uid)
    except NotFound:
        pass
    owner = tenant_of_object_id(uid)
    if owner and owner != ctx.tenant_id:
        batch.cross_tenant.append(uid)
        try:
            exists = store.exists_elsewhere(owner, uid)
        except Exception:  # noqa: BLE001 - only the audit depends on it, never the caller's answer
            exists = False
        if exists:
            ctx.services.audit.record(
                AuditEvent(
                    tenant_id=owner,
                    source="kmip",
                    operation="CrossTenantAccess",
                    result="denied",
                    kind="security",
                    actor=ctx.subject,
                    actor_role=ctx.service_id,
                    object_id=uid,
                    reason="cross-tenant refusal",
                    request_id=ctx.request_id,
                    client_address=ctx.client_address,
                    details={"caller_tenant": ctx.tenant_id},
                ),
                sync=False,
            )
    raise not_found()


def require_state(obj: ManagedObject, *allowed: str) -> None:
    if obj.state not in allowed:
        raise wrong_state()


def require_active(obj: ManagedObject) -> None:
    require_state(obj, ACTIVE)


def require_usage(obj: ManagedObject, bits: int) -> None:
    """A usage mask of 0 (as libmongocrypt registers) means "not restricted by the client"."""
    mask = obj.first("Cryptographic Usage Mask", 0) or 0
    if mask and not mask & bits:
        raise KmipError(
            Reason.INCOMPATIBLE_CRYPTOGRAPHIC_USAGE_MASK, "the key's usage mask does not allow this"
        )


# ---- Cryptographic Parameters ------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class CryptoParams:
    mode: int | None = None
    padding: int | None = None
    algorithm: int | None = None
    hashing: int | None = None
    random_iv: bool | None = None
    tag_length: int | None = None
    iv_length: int | None = None


def crypto_params(payload: TTLV) -> CryptoParams | None:
    node = payload.get(Tag.CRYPTOGRAPHIC_PARAMETERS)
    if node is None:
        return None
    if node.type != ttlv.STRUCTURE:
        raise invalid("Cryptographic Parameters must be a Structure")
    enum, integer, boolean = (ttlv.ENUMERATION,), (ttlv.INTEGER,), (ttlv.BOOLEAN,)
    return CryptoParams(
        mode=int_field(node, Tag.BLOCK_CIPHER_MODE, "Block Cipher Mode", enum),
        padding=int_field(node, Tag.PADDING_METHOD, "Padding Method", enum),
        algorithm=int_field(node, Tag.CRYPTOGRAPHIC_ALGORITHM, "Cryptographic Algorithm", enum),
        hashing=int_field(node, Tag.HASHING_ALGORITHM, "Hashing Algorithm", enum),
        random_iv=int_field(node, Tag.RANDOM_IV, "Random IV", boolean),  # type: ignore[arg-type]
        tag_length=int_field(node, Tag.TAG_LENGTH, "Tag Length", integer),
        iv_length=int_field(node, Tag.IV_LENGTH, "IV Length", integer),
    )


# ---- Managed Object encoding -------------------------------------------------------------------
def _key_block(
    format_type: int, key_value: TTLV, obj: ManagedObject | None, with_alg: bool, wrapping: TTLV | None = None
) -> TTLV:
    children = [ttlv.enumeration(Tag.KEY_FORMAT_TYPE, format_type), key_value]
    if with_alg and obj is not None:
        alg, length = obj.first("Cryptographic Algorithm"), obj.first("Cryptographic Length")
        if alg is not None:
            children.append(ttlv.enumeration(Tag.CRYPTOGRAPHIC_ALGORITHM, alg))
        if length is not None:
            children.append(ttlv.integer(Tag.CRYPTOGRAPHIC_LENGTH, length))
    if wrapping is not None:
        children.append(wrapping)
    return ttlv.structure(Tag.KEY_BLOCK, children)


def encode_object(
    obj: ManagedObject, material: bytes, *, wrapped: bool = False, wrapping: TTLV | None = None
) -> TTLV:
    """The Managed Object structure of a Get response. Symmetric keys come as Raw with algorithm and
    length in the Key Block (what mongod parses); Secret Data as registered (Opaque for libmongocrypt)."""
    # With Encoding Option "No Encoding" (the only one supported) a wrapped key keeps its Key Value
    # structure and the Key Material byte string holds the wrapped bytes (spec 2.1.5).
    key_value = ttlv.structure(Tag.KEY_VALUE, [ttlv.byte_string(Tag.KEY_MATERIAL, material)])
    if obj.object_type == "SYMMETRIC_KEY":
        fmt = obj.first("_kft", KeyFormat.RAW)
        return ttlv.structure(Tag.SYMMETRIC_KEY, [_key_block(fmt, key_value, obj, True, wrapping)])
    if obj.object_type == "SECRET_DATA":
        fmt = obj.first("_kft", KeyFormat.OPAQUE)
        return ttlv.structure(
            Tag.SECRET_DATA,
            [
                ttlv.enumeration(Tag.SECRET_DATA_TYPE, obj.first("_sdt", 2)),
                _key_block(fmt, key_value, obj, False, wrapping),
            ],
        )
    if obj.object_type == "OPAQUE_DATA":
        if wrapped:
            raise invalid("opaque objects cannot be wrapped", Reason.FEATURE_NOT_SUPPORTED)
        return ttlv.structure(
            Tag.OPAQUE_OBJECT,
            [
                ttlv.enumeration(Tag.OPAQUE_DATA_TYPE, obj.first("_odt", 0x80000000)),
                ttlv.byte_string(Tag.OPAQUE_DATA_VALUE, material),
            ],
        )
    raise invalid("unsupported object type", Reason.FEATURE_NOT_SUPPORTED)


@dataclass(frozen=True, slots=True)
class DecodedObject:
    object_type: str
    material: bytes
    hidden: dict[str, Any]
    algorithm: int | None = None
    length: int | None = None


def decode_object(object_type: int, payload: TTLV) -> DecodedObject:
    """The Managed Object of a Register request (Symmetric Key, Secret Data, Opaque Object)."""
    tag = {
        ObjectType.SYMMETRIC_KEY: Tag.SYMMETRIC_KEY,
        ObjectType.SECRET_DATA: Tag.SECRET_DATA,
        ObjectType.OPAQUE_DATA: Tag.OPAQUE_OBJECT,
    }.get(object_type)
    if tag is None:
        raise invalid(
            "only Symmetric Key, Secret Data and Opaque Object can be registered",
            Reason.FEATURE_NOT_SUPPORTED,
        )
    node = payload.get(tag)
    if node is None or node.type != ttlv.STRUCTURE:
        raise invalid("the object to register is missing", Reason.MISSING_DATA)
    if tag == Tag.OPAQUE_OBJECT:
        data = bytes_field(node, Tag.OPAQUE_DATA_VALUE, "Opaque Data Value", required=True)
        kind = int_field(node, Tag.OPAQUE_DATA_TYPE, "Opaque Data Type", (ttlv.ENUMERATION,)) or 0x80000000
        return DecodedObject("OPAQUE_DATA", data or b"", {"_odt": [kind]})
    block = node.get(Tag.KEY_BLOCK)
    if block is None or block.type != ttlv.STRUCTURE:
        raise invalid("Key Block is required", Reason.MISSING_DATA)
    if block.get(Tag.KEY_WRAPPING_DATA) is not None:
        raise invalid("registering wrapped keys is not supported", Reason.FEATURE_NOT_SUPPORTED)
    fmt = int_field(block, Tag.KEY_FORMAT_TYPE, "Key Format Type", (ttlv.ENUMERATION,))
    value = block.get(Tag.KEY_VALUE)
    if fmt is None or value is None or value.type != ttlv.STRUCTURE:
        raise invalid("Key Format Type and Key Value are required", Reason.MISSING_DATA)
    material_node = value.get(Tag.KEY_MATERIAL)
    if material_node is None:
        raise invalid("Key Material is required", Reason.MISSING_DATA)
    if material_node.type == ttlv.BYTE_STRING:
        material = material_node.value
    elif material_node.type == ttlv.STRUCTURE and fmt == KeyFormat.TRANSPARENT_SYMMETRIC_KEY:
        material = bytes_field(material_node, Tag.KEY, "Key", required=True)
        fmt = KeyFormat.RAW
    else:
        raise invalid("unsupported Key Material", Reason.KEY_FORMAT_TYPE_NOT_SUPPORTED)
    if not material or len(material) > 8192:  # type: ignore[arg-type]
        raise invalid("Key Material must be 1-8192 bytes")
    alg = int_field(block, Tag.CRYPTOGRAPHIC_ALGORITHM, "Cryptographic Algorithm", (ttlv.ENUMERATION,))
    length = int_field(block, Tag.CRYPTOGRAPHIC_LENGTH, "Cryptographic Length")
    if tag == Tag.SYMMETRIC_KEY:
        if fmt not in (KeyFormat.RAW, KeyFormat.OPAQUE):
            raise invalid("symmetric keys are registered as Raw", Reason.KEY_FORMAT_TYPE_NOT_SUPPORTED)
        # The length is what ReKey generates: never more than the material holds (3DES states 168 of its
        # 192 bits). AES sizes are checked by Register, once the algorithm it stores is known.
        if length is not None and not 0 < length <= len(material) * 8:  # type: ignore[arg-type]
            raise invalid(f"Cryptographic Length must be 1-{len(material) * 8} bits for this key material")  # type: ignore[arg-type]
        return DecodedObject("SYMMETRIC_KEY", material, {"_kft": [KeyFormat.RAW]}, alg, length)  # type: ignore[arg-type]
    sdt = int_field(node, Tag.SECRET_DATA_TYPE, "Secret Data Type", (ttlv.ENUMERATION,)) or 1
    return DecodedObject("SECRET_DATA", material, {"_kft": [fmt], "_sdt": [sdt]}, alg, length)  # type: ignore[arg-type]
