"""mongod Enterprise encryption at rest, replayed with a raw KMIP client over mutual TLS in protocol 1.2
and in 1.0 (kmipUseLegacyProtocol): Create (AES-256, usage mask 12, 1.x attribute names) -> Get ->
Activate; at restart Get then Get Attributes("State") = Active; Revoke makes the polled State leave
Active; its audit-log encryption sends Encrypt/Decrypt with no Cryptographic Parameters at all."""

from __future__ import annotations

import pytest

from openkcm.protocol import ttlv
from openkcm.protocol.tags import Alg, KeyFormat, ObjectType, Op, RevocationCode, State, Status, Tag
from tests.kmip.conftest import KmipConnection
from tests.kmip.wire import request, response, uid


def _attr(name: str, value: ttlv.TTLV) -> ttlv.TTLV:
    return ttlv.structure(Tag.ATTRIBUTE, [ttlv.text(Tag.ATTRIBUTE_NAME, name), value])


def _create_payload() -> list[ttlv.TTLV]:
    return [
        ttlv.enumeration(Tag.OBJECT_TYPE, ObjectType.SYMMETRIC_KEY),
        ttlv.structure(
            Tag.TEMPLATE_ATTRIBUTE,
            [
                _attr("Cryptographic Algorithm", ttlv.enumeration(Tag.ATTRIBUTE_VALUE, Alg.AES)),
                _attr("Cryptographic Length", ttlv.integer(Tag.ATTRIBUTE_VALUE, 256)),
                _attr("Cryptographic Usage Mask", ttlv.integer(Tag.ATTRIBUTE_VALUE, 12)),
            ],
        ),
    ]


def _ok(conn: KmipConnection, version, op, payload):
    got_version, results = response(conn.call(request(version, (op, payload))))
    assert got_version == version
    assert results[0].status == Status.SUCCESS, results[0].message
    return results[0].payload


def _state(conn, version, key_id: str) -> int:
    payload = _ok(conn, version, Op.GET_ATTRIBUTES, [uid(key_id), ttlv.text(Tag.ATTRIBUTE_NAME, "State")])
    attributes = payload.all(Tag.ATTRIBUTE)
    assert [a.child_value(Tag.ATTRIBUTE_NAME) for a in attributes] == ["State"]
    return attributes[0].child_value(Tag.ATTRIBUTE_VALUE)


@pytest.mark.parametrize("version", [(1, 2), (1, 0)], ids=["1.2", "1.0-legacy"])
def test_mongod_encryption_at_rest_sequence(kmip_server, tenant_factory, bundle, version):
    tenant = tenant_factory(tenant_id=f"mongod-{version[0]}{version[1]}")
    paths = bundle(tenant.tenant_id, "mongod")
    with KmipConnection(kmip_server.port, paths) as conn:
        created = _ok(conn, version, Op.CREATE, _create_payload())
        key_id = created.child_value(Tag.UNIQUE_IDENTIFIER)
        got = _ok(conn, version, Op.GET, [uid(key_id)])
        # mongod's parser: Object Type, Unique Identifier, then the Symmetric Key, in spec order
        assert [c.tag for c in got.children] == [Tag.OBJECT_TYPE, Tag.UNIQUE_IDENTIFIER, Tag.SYMMETRIC_KEY]
        block = got.get(Tag.SYMMETRIC_KEY).get(Tag.KEY_BLOCK)
        assert [c.tag for c in block.children] == [
            Tag.KEY_FORMAT_TYPE,
            Tag.KEY_VALUE,
            Tag.CRYPTOGRAPHIC_ALGORITHM,
            Tag.CRYPTOGRAPHIC_LENGTH,
        ]
        assert block.child_value(Tag.KEY_FORMAT_TYPE) == KeyFormat.RAW
        assert len(block.get(Tag.KEY_VALUE).child_value(Tag.KEY_MATERIAL)) == 32
        assert block.child_value(Tag.CRYPTOGRAPHIC_ALGORITHM) == Alg.AES
        assert block.child_value(Tag.CRYPTOGRAPHIC_LENGTH) == 256
        _ok(conn, version, Op.ACTIVATE, [uid(key_id)])

    # restart: a new connection, Get then Get Attributes("State")
    with KmipConnection(kmip_server.port, paths, tls13=False) as conn:
        _ok(conn, version, Op.GET, [uid(key_id)])
        assert _state(conn, version, key_id) == State.ACTIVE

        # audit-log encryption: no Cryptographic Parameters at all -> documented defaults (AES-CBC-PKCS5)
        encrypted = _ok(conn, version, Op.ENCRYPT, [uid(key_id), ttlv.byte_string(Tag.DATA, b"audit line 1")])
        iv = encrypted.child_value(Tag.IV_COUNTER_NONCE)
        data = encrypted.child_value(Tag.DATA)
        assert len(iv) == 16 and len(data) == 16
        decrypted = _ok(
            conn,
            version,
            Op.DECRYPT,
            [uid(key_id), ttlv.byte_string(Tag.DATA, data), ttlv.byte_string(Tag.IV_COUNTER_NONCE, iv)],
        )
        assert decrypted.child_value(Tag.DATA) == b"audit line 1"

        # an operator revokes the key in OpenKCM: mongod's State poll sees it leave Active
        _ok(
            conn,
            version,
            Op.REVOKE,
            [
                uid(key_id),
                ttlv.structure(
                    Tag.REVOCATION_REASON,
                    [ttlv.enumeration(Tag.REVOCATION_REASON_CODE, RevocationCode.CESSATION_OF_OPERATION)],
                ),
            ],
        )
        assert _state(conn, version, key_id) == State.DEACTIVATED
        _, results = response(
            conn.call(request(version, (Op.ENCRYPT, [uid(key_id), ttlv.byte_string(Tag.DATA, b"x")])))
        )
        assert results[0].status == Status.OPERATION_FAILED


def test_replies_never_carry_attributes_newer_than_the_client(kmip_server, tenant_factory, bundle):
    tenant = tenant_factory(tenant_id="versions")
    paths = bundle(tenant.tenant_id)
    with KmipConnection(kmip_server.port, paths) as conn:
        key_id = _ok(conn, (1, 2), Op.CREATE, _create_payload()).child_value(Tag.UNIQUE_IDENTIFIER)
        names_12 = [
            a.child_value(Tag.ATTRIBUTE_NAME)
            for a in _ok(conn, (1, 2), Op.GET_ATTRIBUTES, [uid(key_id)]).all(Tag.ATTRIBUTE)
        ]
        names_10 = [
            a.child_value(Tag.ATTRIBUTE_NAME)
            for a in _ok(conn, (1, 0), Op.GET_ATTRIBUTES, [uid(key_id)]).all(Tag.ATTRIBUTE)
        ]
        listed_10 = [
            n.value for n in _ok(conn, (1, 0), Op.GET_ATTRIBUTE_LIST, [uid(key_id)]).all(Tag.ATTRIBUTE_NAME)
        ]
        assert "Original Creation Date" in names_12
        assert "Original Creation Date" not in names_10 and "Original Creation Date" not in listed_10
        assert {"State", "Cryptographic Algorithm", "Initial Date"} <= set(names_10)
        attrs_20 = _ok(conn, (2, 0), Op.GET_ATTRIBUTES, [uid(key_id)]).get(Tag.ATTRIBUTES)
        assert attrs_20.get(Tag.STATE).value == State.PRE_ACTIVE  # 2.0: attributes under their own tags
