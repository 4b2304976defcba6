"""Wire conformance per operation x protocol version: every response of the core is decoded by a second,
independent implementation (PyKMIP's message classes, ``kmip.core`` only) in the version it claims, and
carries only tags that version defines where PyKMIP knows the difference."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from kmip.core import enums, utils
from kmip.core.messages import messages as pykmip_messages

from openkcm.protocol import ttlv
from openkcm.protocol.tags import OPERATION_NAMES, Alg, ObjectType, Op, RevocationCode, Status, Tag
from tests.kmip.wire import request, uid

VERSIONS = {
    (1, 0): enums.KMIPVersion.KMIP_1_0,
    (1, 1): enums.KMIPVersion.KMIP_1_1,
    (1, 2): enums.KMIPVersion.KMIP_1_2,
    (1, 3): enums.KMIPVersion.KMIP_1_3,
    (1, 4): enums.KMIPVersion.KMIP_1_4,
    (2, 0): enums.KMIPVersion.KMIP_2_0,
}


PYKMIP_CANNOT_PARSE = {Op.MAC_VERIFY, Op.ADD_ATTRIBUTE}  # PyKMIP 0.11 has no response payload class
# PyKMIP models Modify/Delete/Set Attribute in their 2.0 form only
PYKMIP_2_0_ONLY = {Op.MODIFY_ATTRIBUTE, Op.DELETE_ATTRIBUTE, Op.SET_ATTRIBUTE}


def attr(version, name, tag, value_type, value):
    if version[0] >= 2:
        return ttlv.TTLV(tag, value_type, value)
    return ttlv.structure(
        Tag.ATTRIBUTE,
        [ttlv.text(Tag.ATTRIBUTE_NAME, name), ttlv.TTLV(Tag.ATTRIBUTE_VALUE, value_type, value)],
    )


def template(version, *attrs):
    return ttlv.structure(Tag.ATTRIBUTES if version[0] >= 2 else Tag.TEMPLATE_ATTRIBUTE, list(attrs))


def create(version, alg=Alg.AES, length=256, mask=None):
    items = [
        attr(version, "Cryptographic Algorithm", Tag.CRYPTOGRAPHIC_ALGORITHM, ttlv.ENUMERATION, alg),
        attr(version, "Cryptographic Length", Tag.CRYPTOGRAPHIC_LENGTH, ttlv.INTEGER, length),
    ]
    if mask is not None:
        items.append(
            attr(version, "Cryptographic Usage Mask", Tag.CRYPTOGRAPHIC_USAGE_MASK, ttlv.INTEGER, mask)
        )
    return [ttlv.enumeration(Tag.OBJECT_TYPE, ObjectType.SYMMETRIC_KEY), template(version, *items)]


def decode_with_pykmip(data: bytes, version) -> pykmip_messages.ResponseMessage:
    message = pykmip_messages.ResponseMessage()
    message.read(utils.BytearrayStream(data), kmip_version=VERSIONS[version])
    return message


GOLDEN = Path(__file__).parent / "golden" / "responses.json"
_SEEN: dict[str, list] = {}


def shape(item: ttlv.TTLV) -> list:
    """Structure of a response: tags and types everywhere, values where they are deterministic
    (enumerations, integers, booleans), lengths of byte strings; text and date-times vary by nature."""
    if item.type == ttlv.STRUCTURE:
        return [f"{item.tag:06x}", [shape(c) for c in item.value]]
    if (
        item.type in (ttlv.ENUMERATION, ttlv.INTEGER, ttlv.BOOLEAN, ttlv.LONG_INTEGER)
        and item.tag != Tag.BATCH_COUNT
    ):
        return [f"{item.tag:06x}", item.type, int(item.value)]
    if item.type == ttlv.BYTE_STRING:
        return [f"{item.tag:06x}", item.type, len(item.value)]
    return [f"{item.tag:06x}", item.type]


def _record(version, op, root: ttlv.TTLV) -> None:
    name = f"{OPERATION_NAMES[op]}@{version[0]}.{version[1]}"
    n = sum(1 for k in _SEEN if k.startswith(name + "#"))
    _SEEN[f"{name}#{n}"] = shape(root.get(Tag.BATCH_ITEM))


def _check(kmip_core, tenant, version, op, payload, expect=Status.SUCCESS):
    data = kmip_core.handle(
        request(version, (op, payload)),
        __import__("tests.kmip.test_protocol", fromlist=["who"]).who(tenant),
        "127.0.0.1:1",
    )
    root = ttlv.decode(data)
    _record(version, op, root)
    item = root.get(Tag.BATCH_ITEM)
    assert item.child_value(Tag.RESULT_STATUS) == expect, (op, version, item.child_value(Tag.RESULT_MESSAGE))
    if op in PYKMIP_CANNOT_PARSE or (op in PYKMIP_2_0_ONLY and version < (2, 0)):
        return item.get(Tag.RESPONSE_PAYLOAD)
    parsed = decode_with_pykmip(data, version)
    assert parsed.batch_items[0].result_status.value == enums.ResultStatus(expect)
    pv = parsed.response_header.protocol_version
    assert (pv.major, pv.minor) == version
    return item.get(Tag.RESPONSE_PAYLOAD)


@pytest.mark.parametrize("version", list(VERSIONS), ids=lambda v: f"{v[0]}.{v[1]}")
def test_each_operation_in_each_version(kmip_core, tenant_factory, version):
    tenant = f"wire-{version[0]}{version[1]}"
    tenant_factory(tenant_id=tenant)
    key = _check(kmip_core, tenant, version, Op.CREATE, create(version, mask=12 | 16 | 512)).child_value(
        Tag.UNIQUE_IDENTIFIER
    )
    _check(kmip_core, tenant, version, Op.ACTIVATE, [uid(key)])
    _check(kmip_core, tenant, version, Op.GET, [uid(key)])
    if version >= (2, 0):  # PyKMIP's 2.0 attribute factory lacks Original Creation Date: name what we read
        refs = [
            ttlv.enumeration(Tag.ATTRIBUTE_REFERENCE, t)
            for t in (Tag.STATE, Tag.CRYPTOGRAPHIC_ALGORITHM, Tag.NAME)
        ]
        _check(kmip_core, tenant, version, Op.GET_ATTRIBUTES, [uid(key), *refs])
    else:
        _check(kmip_core, tenant, version, Op.GET_ATTRIBUTES, [uid(key)])
    _check(kmip_core, tenant, version, Op.GET_ATTRIBUTE_LIST, [uid(key)])
    _check(kmip_core, tenant, version, Op.LOCATE, [])
    _check(kmip_core, tenant, version, Op.CHECK, [uid(key)])
    contact = attr(version, "Contact Information", Tag.CONTACT_INFORMATION, ttlv.TEXT_STRING, "ops@example")
    other = attr(version, "Contact Information", Tag.CONTACT_INFORMATION, ttlv.TEXT_STRING, "sec@example")
    if version >= (2, 0):
        _check(
            kmip_core,
            tenant,
            version,
            Op.ADD_ATTRIBUTE,
            [uid(key), ttlv.structure(Tag.NEW_ATTRIBUTE, [contact])],
        )
        _check(
            kmip_core,
            tenant,
            version,
            Op.MODIFY_ATTRIBUTE,
            [uid(key), ttlv.structure(Tag.NEW_ATTRIBUTE, [other])],
        )
        _check(
            kmip_core,
            tenant,
            version,
            Op.SET_ATTRIBUTE,
            [uid(key), ttlv.structure(Tag.NEW_ATTRIBUTE, [contact])],
        )
        _check(
            kmip_core,
            tenant,
            version,
            Op.DELETE_ATTRIBUTE,
            [uid(key), ttlv.enumeration(Tag.ATTRIBUTE_REFERENCE, Tag.CONTACT_INFORMATION)],
        )
    else:
        _check(kmip_core, tenant, version, Op.ADD_ATTRIBUTE, [uid(key), contact])
        _check(
            kmip_core, tenant, version, Op.ADD_ATTRIBUTE, [uid(key), contact], expect=Status.OPERATION_FAILED
        )
        _check(kmip_core, tenant, version, Op.MODIFY_ATTRIBUTE, [uid(key), other])
        _check(
            kmip_core,
            tenant,
            version,
            Op.DELETE_ATTRIBUTE,
            [uid(key), ttlv.text(Tag.ATTRIBUTE_NAME, "Contact Information")],
        )
        _check(kmip_core, tenant, version, Op.SET_ATTRIBUTE, [uid(key)], expect=Status.OPERATION_FAILED)
    _check(
        kmip_core,
        tenant,
        version,
        Op.DELETE_ATTRIBUTE,
        [uid(key), ttlv.text(Tag.ATTRIBUTE_NAME, "Cryptographic Length")]
        if version < (2, 0)
        else [uid(key), ttlv.enumeration(Tag.ATTRIBUTE_REFERENCE, Tag.CRYPTOGRAPHIC_LENGTH)],
        expect=Status.OPERATION_FAILED,
    )
    if version >= (1, 1):
        _check(kmip_core, tenant, version, Op.DISCOVER_VERSIONS, [])
    _check(
        kmip_core,
        tenant,
        version,
        Op.QUERY,
        [ttlv.enumeration(Tag.QUERY_FUNCTION, 1), ttlv.enumeration(Tag.QUERY_FUNCTION, 2)],
    )
    if version >= (1, 2):
        enc = _check(kmip_core, tenant, version, Op.ENCRYPT, [uid(key), ttlv.byte_string(Tag.DATA, b"abc")])
        _check(
            kmip_core,
            tenant,
            version,
            Op.DECRYPT,
            [
                uid(key),
                ttlv.byte_string(Tag.DATA, enc.child_value(Tag.DATA)),
                ttlv.byte_string(Tag.IV_COUNTER_NONCE, enc.child_value(Tag.IV_COUNTER_NONCE)),
            ],
        )
        mac_key = _check(kmip_core, tenant, version, Op.CREATE, create(version, Alg.HMAC_SHA256)).child_value(
            Tag.UNIQUE_IDENTIFIER
        )
        _check(kmip_core, tenant, version, Op.ACTIVATE, [uid(mac_key)])
        mac = _check(kmip_core, tenant, version, Op.MAC, [uid(mac_key), ttlv.byte_string(Tag.DATA, b"m")])
        _check(
            kmip_core,
            tenant,
            version,
            Op.MAC_VERIFY,
            [
                uid(mac_key),
                ttlv.byte_string(Tag.DATA, b"m"),
                ttlv.byte_string(Tag.MAC_DATA, mac.child_value(Tag.MAC_DATA)),
            ],
        )
    _check(
        kmip_core,
        tenant,
        version,
        Op.DERIVE_KEY,
        [
            ttlv.enumeration(Tag.OBJECT_TYPE, ObjectType.SYMMETRIC_KEY),
            uid(key),
            ttlv.enumeration(Tag.DERIVATION_METHOD, 3),
            ttlv.structure(Tag.DERIVATION_PARAMETERS, [ttlv.byte_string(Tag.DERIVATION_DATA, b"record-1")]),
            template(
                version, attr(version, "Cryptographic Length", Tag.CRYPTOGRAPHIC_LENGTH, ttlv.INTEGER, 256)
            ),
        ],
    )
    new = _check(kmip_core, tenant, version, Op.REKEY, [uid(key)]).child_value(Tag.UNIQUE_IDENTIFIER)
    _check(
        kmip_core,
        tenant,
        version,
        Op.REVOKE,
        [
            uid(new),
            ttlv.structure(
                Tag.REVOCATION_REASON,
                [ttlv.enumeration(Tag.REVOCATION_REASON_CODE, RevocationCode.KEY_COMPROMISE)],
            ),
        ],
    )
    _check(kmip_core, tenant, version, Op.DESTROY, [uid(new)])
    # error path: a destroyed key has no material
    _check(kmip_core, tenant, version, Op.GET, [uid(new)], expect=Status.OPERATION_FAILED)
    _check(kmip_core, tenant, version, Op.GET, [uid(f"{tenant}.{'0' * 32}")], expect=Status.OPERATION_FAILED)


def test_responses_match_the_golden_shapes():
    """Golden TTLV per operation x version (runs after the test above, which records the shapes).
    Regenerate deliberately with OPENKCM_UPDATE_GOLDEN=1."""
    assert len(_SEEN) > 100, "run together with test_each_operation_in_each_version"
    if os.environ.get("OPENKCM_UPDATE_GOLDEN"):
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(json.dumps(_SEEN, indent=1, sort_keys=True) + "\n")
    golden = json.loads(GOLDEN.read_text())
    assert sorted(golden) == sorted(_SEEN)
    for key, expected in golden.items():
        assert _SEEN[key] == expected, key
