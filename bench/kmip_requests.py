"""Pre-encoded KMIP 1.2 requests for the load generator (the same bytes go to both servers), and the few
reads of responses that setting up needs. Built with the TTLV codec's constructors; wire-compatible with
PyKMIP's server (checked at setup: every request must answer Success before a run counts)."""

from __future__ import annotations

from openkcm.protocol import ttlv
from openkcm.protocol.tags import Alg, Mode, NameType, ObjectType, Op, Padding, Status, Tag, Usage
from openkcm.protocol.ttlv import TTLV

VERSION = (1, 2)
# Result Status = Success as it appears on the wire: the generator checks every response for it.
SUCCESS_BYTES = ttlv.encode(ttlv.enumeration(Tag.RESULT_STATUS, Status.SUCCESS))


def message(operation: int, payload: list[TTLV], version: tuple[int, int] = VERSION) -> bytes:
    header = ttlv.structure(
        Tag.REQUEST_HEADER,
        [
            ttlv.structure(
                Tag.PROTOCOL_VERSION,
                [
                    ttlv.integer(Tag.PROTOCOL_VERSION_MAJOR, version[0]),
                    ttlv.integer(Tag.PROTOCOL_VERSION_MINOR, version[1]),
                ],
            ),
            ttlv.integer(Tag.BATCH_COUNT, 1),
        ],
    )
    item = ttlv.structure(
        Tag.BATCH_ITEM,
        [ttlv.enumeration(Tag.OPERATION, operation), ttlv.structure(Tag.REQUEST_PAYLOAD, payload)],
    )
    return ttlv.encode(ttlv.structure(Tag.REQUEST_MESSAGE, [header, item]))


def _attribute(name: str, value: TTLV) -> TTLV:
    return ttlv.structure(Tag.ATTRIBUTE, [ttlv.text(Tag.ATTRIBUTE_NAME, name), value])


def _name(name: str) -> TTLV:
    return _attribute(
        "Name",
        ttlv.structure(
            Tag.ATTRIBUTE_VALUE,
            [
                ttlv.text(Tag.NAME_VALUE, name),
                ttlv.enumeration(Tag.NAME_TYPE, NameType.UNINTERPRETED_TEXT_STRING),
            ],
        ),
    )


def _uid(uid: str) -> TTLV:
    return ttlv.text(Tag.UNIQUE_IDENTIFIER, uid)


def create(name: str | None = None) -> bytes:
    """Create an AES-256 key (Encrypt|Decrypt), named ``name`` when given."""
    attributes = [
        _attribute("Cryptographic Algorithm", ttlv.enumeration(Tag.ATTRIBUTE_VALUE, Alg.AES)),
        _attribute("Cryptographic Length", ttlv.integer(Tag.ATTRIBUTE_VALUE, 256)),
        _attribute(
            "Cryptographic Usage Mask", ttlv.integer(Tag.ATTRIBUTE_VALUE, Usage.ENCRYPT | Usage.DECRYPT)
        ),
    ]
    if name is not None:
        attributes.append(_name(name))
    return message(
        Op.CREATE,
        [
            ttlv.enumeration(Tag.OBJECT_TYPE, ObjectType.SYMMETRIC_KEY),
            ttlv.structure(Tag.TEMPLATE_ATTRIBUTE, attributes),
        ],
    )


def activate(uid: str) -> bytes:
    return message(Op.ACTIVATE, [_uid(uid)])


def get(uid: str) -> bytes:
    return message(Op.GET, [_uid(uid)])


def _cbc() -> TTLV:
    # What libmongocrypt's delegated mode sends; PyKMIP's server refuses Encrypt without parameters.
    return ttlv.structure(
        Tag.CRYPTOGRAPHIC_PARAMETERS,
        [
            ttlv.enumeration(Tag.BLOCK_CIPHER_MODE, Mode.CBC),
            ttlv.enumeration(Tag.PADDING_METHOD, Padding.PKCS5),
            ttlv.enumeration(Tag.CRYPTOGRAPHIC_ALGORITHM, Alg.AES),
            ttlv.boolean(Tag.RANDOM_IV, True),
        ],
    )


def encrypt(uid: str, data: bytes) -> bytes:
    return message(Op.ENCRYPT, [_uid(uid), _cbc(), ttlv.byte_string(Tag.DATA, data)])


def decrypt(uid: str, data: bytes, iv: bytes) -> bytes:
    return message(
        Op.DECRYPT,
        [_uid(uid), _cbc(), ttlv.byte_string(Tag.DATA, data), ttlv.byte_string(Tag.IV_COUNTER_NONCE, iv)],
    )


def locate(name: str) -> bytes:
    return message(Op.LOCATE, [_name(name)])


# ---- reading responses (setup only) --------------------------------------------------------------
class KmipFailure(RuntimeError):
    pass


def payload_of(response: bytes) -> TTLV:
    root = ttlv.decode(response)
    item = root.get(Tag.BATCH_ITEM)
    if item is None:
        raise KmipFailure("no batch item in the response")
    if item.child_value(Tag.RESULT_STATUS) != Status.SUCCESS:
        raise KmipFailure(
            f"reason {item.child_value(Tag.RESULT_REASON)}: {item.child_value(Tag.RESULT_MESSAGE)}"
        )
    return item.get(Tag.RESPONSE_PAYLOAD) or ttlv.structure(Tag.RESPONSE_PAYLOAD, [])
