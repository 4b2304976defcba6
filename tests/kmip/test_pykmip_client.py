"""PyKMIP's own client (ProxyKmipClient / KMIPProxy) against our server over mutual TLS: a second,
independent implementation of the protocol for every operation."""

from __future__ import annotations

import contextlib

import pytest
from kmip.core import enums
from kmip.pie import objects
from kmip.pie.client import ProxyKmipClient
from kmip.pie.exceptions import KmipOperationFailure

from openkcm.errors import AlreadyExists

V12, V14, V20 = enums.KMIPVersion.KMIP_1_2, enums.KMIPVersion.KMIP_1_4, enums.KMIPVersion.KMIP_2_0


@pytest.fixture
def client_for(kmip_server, bundle, tenant_factory):
    opened = []

    def make(tenant_id: str = "pyk-tenant", version=V12, service: str = "svc"):
        with contextlib.suppress(AlreadyExists):  # a second client of the same tenant
            tenant_factory(tenant_id=tenant_id)
        paths = bundle(tenant_id, service)
        client = ProxyKmipClient(
            hostname="127.0.0.1",
            port=kmip_server.port,
            cert=str(paths["cert"]),
            key=str(paths["key"]),
            ca=str(paths["ca"]),
            config_file="/dev/null",
            kmip_version=version,
        )
        client.open()
        opened.append(client)
        return client

    yield make
    for client in opened:
        client.close()


def _aes(client, name: str = "k", mask=None) -> str:
    return client.create(
        enums.CryptographicAlgorithm.AES,
        256,
        name=name,
        cryptographic_usage_mask=mask
        or [enums.CryptographicUsageMask.ENCRYPT, enums.CryptographicUsageMask.DECRYPT],
    )


@pytest.mark.parametrize("version", [V12, V14, V20], ids=["1.2", "1.4", "2.0"])
def test_create_activate_get_encrypt_decrypt_revoke_destroy(client_for, version):
    client = client_for(version=version)
    uid = _aes(client, "lifecycle")
    with pytest.raises(KmipOperationFailure):
        client.encrypt(b"x" * 16, uid=uid)  # Pre-Active: wrong state
    client.activate(uid)
    key = client.get(uid)
    assert isinstance(key, objects.SymmetricKey) and len(key.value) == 32
    assert key.cryptographic_algorithm == enums.CryptographicAlgorithm.AES and key.cryptographic_length == 256
    params = {
        "block_cipher_mode": enums.BlockCipherMode.CBC,
        "padding_method": enums.PaddingMethod.PKCS5,
        "cryptographic_algorithm": enums.CryptographicAlgorithm.AES,
        "random_iv": True,
    }
    data, iv = client.encrypt(b"attack at dawn", uid=uid, cryptographic_parameters=params)
    assert len(iv) == 16
    assert (
        client.decrypt(data, uid=uid, cryptographic_parameters=params, iv_counter_nonce=iv)
        == b"attack at dawn"
    )
    with pytest.raises(KmipOperationFailure) as info:
        client.destroy(uid)  # Active objects are not destroyed
    expected = (
        enums.ResultReason.WRONG_KEY_LIFECYCLE_STATE
        if version == V20
        else enums.ResultReason.PERMISSION_DENIED
    )
    assert info.value.reason == expected
    client.revoke(enums.RevocationReasonCode.CESSATION_OF_OPERATION, uid)
    _, attrs = client.get_attributes(uid, ["State"])
    assert attrs[0].attribute_value.value == enums.State.DEACTIVATED
    client.destroy(uid)
    with pytest.raises(KmipOperationFailure):
        client.get(uid)


def test_gcm_with_aad(client_for):
    client = client_for(version=V14)
    uid = _aes(client, "gcm")
    client.activate(uid)
    proxy = client.proxy
    from kmip.core.attributes import CryptographicParameters

    params = CryptographicParameters(
        block_cipher_mode=enums.BlockCipherMode.GCM,
        cryptographic_algorithm=enums.CryptographicAlgorithm.AES,
        tag_length=16,
    )
    result = proxy.encrypt(b"secret", unique_identifier=uid, cryptographic_parameters=params)
    assert result["result_status"] == enums.ResultStatus.SUCCESS
    assert len(result["iv_counter_nonce"]) == 12 and result["data"] != b"secret"


def test_register_secret_data_opaque_and_symmetric_key(client_for):
    client = client_for()
    secret = objects.SecretData(b"\x01" * 96, enums.SecretDataType.SEED, masks=[], name="seed")
    sid = client.register(secret)
    assert client.get(sid).value == b"\x01" * 96
    opaque = objects.OpaqueObject(b"opaque-bytes", enums.OpaqueDataType.NONE, name="blob")
    oid = client.register(opaque)
    assert client.get(oid).value == b"opaque-bytes"
    key = objects.SymmetricKey(enums.CryptographicAlgorithm.AES, 128, b"\x02" * 16, name="imported")
    kid = client.register(key)
    fetched = client.get(kid)
    assert fetched.value == b"\x02" * 16 and fetched.cryptographic_length == 128


def test_locate_by_name_state_and_paging(client_for):
    from kmip.core.factories.attributes import AttributeFactory

    client = client_for(version=V14)
    factory = AttributeFactory()
    ids = [_aes(client, "paged") for _ in range(5)]
    other = _aes(client, "other")
    found = client.locate(attributes=[factory.create_attribute(enums.AttributeType.NAME, "paged")])
    assert sorted(found) == sorted(ids) and other not in found
    first = client.locate(
        maximum_items=2, attributes=[factory.create_attribute(enums.AttributeType.NAME, "paged")]
    )
    second = client.locate(
        maximum_items=2,
        offset_items=2,
        attributes=[factory.create_attribute(enums.AttributeType.NAME, "paged")],
    )
    assert len(first) == 2 and len(second) == 2 and not set(first) & set(second)
    client.activate(ids[0])
    active = client.locate(
        attributes=[factory.create_attribute(enums.AttributeType.STATE, enums.State.ACTIVE)]
    )
    assert active == [ids[0]]


def test_get_attribute_list_and_attributes(client_for):
    client = client_for()
    uid = _aes(client, "attrs")
    names = client.get_attribute_list(uid)
    assert {"Name", "State", "Cryptographic Algorithm", "Cryptographic Length", "Object Type"} <= set(names)
    _, attrs = client.get_attributes(uid, ["Cryptographic Length", "Name"])
    values = {a.attribute_name.value: a.attribute_value for a in attrs}
    assert values["Cryptographic Length"].value == 256


def test_attribute_edits_in_2_0(client_for):
    client = client_for(version=V20)
    uid = _aes(client, "edit")
    client.set_attribute(
        unique_identifier=uid, attribute_name="Contact Information", attribute_value="ops@acme"
    )
    _, attrs = client.get_attributes(uid, ["Contact Information"])
    assert attrs[0].attribute_value.value == "ops@acme"
    client.modify_attribute(unique_identifier=uid, new_attribute=_contact("sec@acme"))
    _, attrs = client.get_attributes(uid, ["Contact Information"])
    assert attrs[0].attribute_value.value == "sec@acme"
    client.delete_attribute(unique_identifier=uid, attribute_reference=_reference("Contact Information"))
    _, attrs = client.get_attributes(uid, ["Contact Information"])
    assert attrs == []
    from kmip.core.exceptions import OperationFailure

    with pytest.raises(OperationFailure, match="cannot be changed"):
        client.set_attribute(
            unique_identifier=uid, attribute_name="Cryptographic Length", attribute_value=128
        )


def _contact(value: str):
    from kmip.core import objects as core_objects
    from kmip.core import primitives

    return core_objects.NewAttribute(
        attribute=primitives.TextString(value, tag=enums.Tags.CONTACT_INFORMATION)
    )


def _reference(name: str):
    from kmip.core import objects as core_objects

    return core_objects.AttributeReference(vendor_identification="", attribute_name=name)


def test_check_rekey_mac_and_derive(client_for):
    client = client_for(version=V14)
    uid = _aes(client, "rekeyed")
    client.activate(uid)
    assert client.check(uid, cryptographic_usage_mask=[enums.CryptographicUsageMask.ENCRYPT]) == uid
    with pytest.raises(KmipOperationFailure):
        client.check(uid, cryptographic_usage_mask=[enums.CryptographicUsageMask.SIGN])
    new = client.rekey(uid=uid)
    assert new != uid and client.get(new).value != client.get(uid).value
    _, attrs = client.get_attributes(new, ["State", "Name"])
    values = {a.attribute_name.value: a.attribute_value for a in attrs}
    assert values["State"].value == enums.State.ACTIVE and values["Name"].name_value.value == "rekeyed"

    hmac_uid = client.create(
        enums.CryptographicAlgorithm.HMAC_SHA256,
        256,
        cryptographic_usage_mask=[
            enums.CryptographicUsageMask.MAC_GENERATE,
            enums.CryptographicUsageMask.MAC_VERIFY,
        ],
    )
    client.activate(hmac_uid)
    _, mac = client.mac(b"record-42", uid=hmac_uid, algorithm=enums.CryptographicAlgorithm.HMAC_SHA256)
    import hashlib
    import hmac as hmac_mod

    assert mac == hmac_mod.new(client.get(hmac_uid).value, b"record-42", hashlib.sha256).digest()

    base = client.create(
        enums.CryptographicAlgorithm.AES,
        256,
        cryptographic_usage_mask=[enums.CryptographicUsageMask.DERIVE_KEY],
    )
    client.activate(base)
    derived = [
        client.derive_key(
            enums.ObjectType.SYMMETRIC_KEY,
            [base],
            enums.DerivationMethod.HMAC,
            {
                "cryptographic_parameters": {"hashing_algorithm": enums.HashingAlgorithm.SHA_256},
                "derivation_data": b"tenant-record-7",
            },
            cryptographic_length=256,
            cryptographic_algorithm=enums.CryptographicAlgorithm.AES,
        )
        for _ in range(2)
    ]
    first, second = (client.get(d).value for d in derived)
    assert (
        first == second == hmac_mod.new(client.get(base).value, b"tenant-record-7", hashlib.sha256).digest()
    )


def test_discover_versions_and_query(kmip_server, client_for):
    client = client_for(version=V12)
    proxy = client.proxy
    from kmip.core.messages.contents import ProtocolVersion

    result = proxy.discover_versions(
        protocol_versions=[ProtocolVersion(1, 0), ProtocolVersion(1, 2), ProtocolVersion(3, 0)]
    )
    assert [(v.major, v.minor) for v in result.protocol_versions] == [(1, 2), (1, 0)]
    result = proxy.discover_versions()
    assert (2, 0) in [(v.major, v.minor) for v in result.protocol_versions]
    query = proxy.query(
        query_functions=[
            enums.QueryFunction.QUERY_OPERATIONS,
            enums.QueryFunction.QUERY_OBJECTS,
            enums.QueryFunction.QUERY_SERVER_INFORMATION,
        ]
    )
    assert enums.Operation.GET in query.operations and enums.Operation.ENCRYPT in query.operations
    assert enums.Operation.SET_ATTRIBUTE not in query.operations  # a 2.0 operation, not listed to 1.2
    assert enums.ObjectType.SECRET_DATA in query.object_types
    assert query.vendor_identification == "OpenKCM"


def test_key_wrapping_specification_same_tenant_only(client_for):
    client = client_for(tenant_id="wrap-a", version=V12)
    kek = client.create(
        enums.CryptographicAlgorithm.AES,
        256,
        cryptographic_usage_mask=[enums.CryptographicUsageMask.WRAP_KEY],
    )
    client.activate(kek)
    target = _aes(client, "wrapped")
    spec = {
        "wrapping_method": enums.WrappingMethod.ENCRYPT,
        "encryption_key_information": {
            "unique_identifier": kek,
            "cryptographic_parameters": {"block_cipher_mode": enums.BlockCipherMode.NIST_KEY_WRAP},
        },
        "encoding_option": enums.EncodingOption.NO_ENCODING,
    }
    wrapped = client.get(target, key_wrapping_specification=spec)
    from cryptography.hazmat.primitives import keywrap

    assert keywrap.aes_key_unwrap(client.get(kek).value, wrapped.value) == client.get(target).value
    other = client_for(tenant_id="wrap-b", version=V12)
    foreign_kek = other.create(enums.CryptographicAlgorithm.AES, 256)
    other.activate(foreign_kek)
    spec["encryption_key_information"]["unique_identifier"] = foreign_kek
    with pytest.raises(KmipOperationFailure) as info:
        client.get(target, key_wrapping_specification=spec)
    assert info.value.reason == enums.ResultReason.ITEM_NOT_FOUND
