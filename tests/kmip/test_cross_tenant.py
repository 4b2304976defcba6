"""Tenant isolation matrix: every operation x another tenant's identifiers, names and attributes.

For a certificate of tenant A, an object of tenant B answers exactly like a random identifier (same
status, reason and message: no oracle), B's object is unchanged, and each attempt lands in B's audit
trail as a security event (cross-tenant refusal)."""

from __future__ import annotations

import uuid

import pytest

from openkcm.domain.audit import read_events
from openkcm.protocol import ttlv
from openkcm.protocol.tags import Alg, LinkType, ObjectType, Op, RevocationCode, Status, Tag
from tests.kmip.test_protocol import call
from tests.kmip.wire import request, uid

SINCE = "2000-01-01T00:00:00+00:00"


def attr(name: str, value: ttlv.TTLV) -> ttlv.TTLV:
    return ttlv.structure(Tag.ATTRIBUTE, [ttlv.text(Tag.ATTRIBUTE_NAME, name), value])


def name_value(name: str) -> ttlv.TTLV:
    return ttlv.structure(
        Tag.ATTRIBUTE_VALUE, [ttlv.text(Tag.NAME_VALUE, name), ttlv.enumeration(Tag.NAME_TYPE, 1)]
    )


def key_payload(alg: int, name: str, owner: str = "team-b") -> list[ttlv.TTLV]:
    return [
        ttlv.enumeration(Tag.OBJECT_TYPE, ObjectType.SYMMETRIC_KEY),
        ttlv.structure(
            Tag.TEMPLATE_ATTRIBUTE,
            [
                attr("Cryptographic Algorithm", ttlv.enumeration(Tag.ATTRIBUTE_VALUE, alg)),
                attr("Cryptographic Length", ttlv.integer(Tag.ATTRIBUTE_VALUE, 256)),
                attr("Name", name_value(name)),
                attr("x-owner", ttlv.text(Tag.ATTRIBUTE_VALUE, owner)),
            ],
        ),
    ]


def operations(target: str, wrapper: str) -> dict[str, tuple[tuple[int, int], int, list[ttlv.TTLV]]]:
    data = ttlv.byte_string(Tag.DATA, b"0123456789abcdef")
    revoke = ttlv.structure(
        Tag.REVOCATION_REASON, [ttlv.enumeration(Tag.REVOCATION_REASON_CODE, RevocationCode.KEY_COMPROMISE)]
    )
    contact = attr("Contact Information", ttlv.text(Tag.ATTRIBUTE_VALUE, "mallory"))
    wrap = ttlv.structure(
        Tag.KEY_WRAPPING_SPECIFICATION,
        [
            ttlv.enumeration(Tag.WRAPPING_METHOD, 1),
            ttlv.structure(Tag.ENCRYPTION_KEY_INFORMATION, [uid(wrapper)]),
        ],
    )
    derive = [
        ttlv.enumeration(Tag.OBJECT_TYPE, ObjectType.SYMMETRIC_KEY),
        uid(target),
        ttlv.enumeration(Tag.DERIVATION_METHOD, 3),
        ttlv.structure(Tag.DERIVATION_PARAMETERS, [ttlv.byte_string(Tag.DERIVATION_DATA, b"r")]),
    ]
    v = (1, 4)
    return {
        "Get": (v, Op.GET, [uid(target)]),
        "GetAttributes": (v, Op.GET_ATTRIBUTES, [uid(target)]),
        "GetAttributeList": (v, Op.GET_ATTRIBUTE_LIST, [uid(target)]),
        "Activate": (v, Op.ACTIVATE, [uid(target)]),
        "Revoke": (v, Op.REVOKE, [uid(target), revoke]),
        "Destroy": (v, Op.DESTROY, [uid(target)]),
        "Encrypt": (v, Op.ENCRYPT, [uid(target), data]),
        "Decrypt": (v, Op.DECRYPT, [uid(target), data, ttlv.byte_string(Tag.IV_COUNTER_NONCE, b"\0" * 16)]),
        "Mac": (v, Op.MAC, [uid(target), data]),
        "MacVerify": (v, Op.MAC_VERIFY, [uid(target), data, ttlv.byte_string(Tag.MAC_DATA, b"\0" * 32)]),
        "Check": (v, Op.CHECK, [uid(target)]),
        "Rekey": (v, Op.REKEY, [uid(target)]),
        "DeriveKey": (v, Op.DERIVE_KEY, derive),
        "AddAttribute": (v, Op.ADD_ATTRIBUTE, [uid(target), contact]),
        "ModifyAttribute": (v, Op.MODIFY_ATTRIBUTE, [uid(target), contact]),
        "DeleteAttribute": (v, Op.DELETE_ATTRIBUTE, [uid(target), ttlv.text(Tag.ATTRIBUTE_NAME, "Name")]),
        "SetAttribute": (
            (2, 0),
            Op.SET_ATTRIBUTE,
            [uid(target), ttlv.structure(Tag.NEW_ATTRIBUTE, [ttlv.text(Tag.CONTACT_INFORMATION, "mallory")])],
        ),
        "GetWrappedUnderForeignKey": (v, Op.GET, [uid(wrapper if target == "__own__" else target), wrap]),
    }


@pytest.fixture
def two_tenants(kmip_core, tenant_factory):
    tenant_factory(tenant_id="tenant-a")
    tenant_factory(tenant_id="tenant-b")
    ids = {}
    for label, alg in (("aes", Alg.AES), ("hmac", Alg.HMAC_SHA256)):
        _, results = call(
            kmip_core,
            "tenant-b",
            request((1, 4), (Op.CREATE, key_payload(alg, f"b-{label}")), (Op.ACTIVATE, [])),
        )
        assert all(r.status == Status.SUCCESS for r in results)
        ids[label] = results[0].payload.child_value(Tag.UNIQUE_IDENTIFIER)
    _, results = call(
        kmip_core,
        "tenant-a",
        request((1, 4), (Op.CREATE, key_payload(Alg.AES, "a-own", owner="team-a")), (Op.ACTIVATE, [])),
    )
    ids["a-own"] = results[0].payload.child_value(Tag.UNIQUE_IDENTIFIER)
    return ids


def _answer(kmip_core, tenant, spec):
    version, op, payload = spec
    _, results = call(kmip_core, tenant, request(version, (op, payload)))
    r = results[0]
    return (r.status, r.reason, r.message, r.payload is None)


def test_every_operation_on_another_tenants_ids_answers_like_a_random_id(runtime, kmip_core, two_tenants):
    b_ids = {k: v for k, v in two_tenants.items() if k != "a-own"}
    before = {k: kmip_core.services.store.get("tenant-b", v) for k, v in b_ids.items()}
    random_same_shape = f"tenant-a.{uuid.uuid4().hex}"
    random_b_shape = f"tenant-b.{uuid.uuid4().hex}"
    attempts = 0
    for label, b_id in b_ids.items():
        foreign = operations(b_id, b_ids["aes"])
        baseline = operations(random_same_shape, random_same_shape)
        foreign_shape = operations(random_b_shape, random_b_shape)
        for name in foreign:
            if name == "GetWrappedUnderForeignKey":
                continue
            got = _answer(kmip_core, "tenant-a", foreign[name])
            assert got[0] == Status.OPERATION_FAILED, (label, name)
            assert got == _answer(kmip_core, "tenant-a", baseline[name]), (label, name)
            assert got == _answer(kmip_core, "tenant-a", foreign_shape[name]), (label, name)
            attempts += 1
    # wrapping A's own key under B's key: exactly like wrapping under a random id
    own = two_tenants["a-own"]
    wrap_foreign = operations(own, b_ids["aes"])["GetWrappedUnderForeignKey"]
    wrap_random = operations(own, random_same_shape)["GetWrappedUnderForeignKey"]
    assert _answer(kmip_core, "tenant-a", wrap_foreign) == _answer(kmip_core, "tenant-a", wrap_random)
    attempts += 1
    # B's objects are untouched
    kmip_core.services.store.forget("tenant-b", b_ids["aes"])
    for label, b_id in b_ids.items():
        kmip_core.services.store.forget("tenant-b", b_id)
        after = kmip_core.services.store.get("tenant-b", b_id)
        assert (after.state, after.attributes, after.names) == (
            before[label].state,
            before[label].attributes,
            before[label].names,
        )
    # every attempt on an existing B object is in B's audit trail as a cross-tenant refusal
    runtime.audit.flush()
    refusals = [
        e
        for e in read_events("tenant-b", since=SINCE)
        if e["kind"] == "security" and e["operation"] == "CrossTenantAccess"
    ]
    assert len(refusals) == attempts
    assert all(e["details"]["caller_tenant"] == "tenant-a" and e["result"] == "denied" for e in refusals)
    mine = [e for e in read_events("tenant-a", since=SINCE) if e["kind"] == "security"]
    assert len(mine) >= attempts and all(e["reason"] == "cross-tenant refusal" for e in mine)


def test_locate_never_finds_another_tenants_names_or_attributes(kmip_core, two_tenants):
    for criteria in (
        [attr("Name", name_value("b-aes"))],
        [attr("x-owner", ttlv.text(Tag.ATTRIBUTE_VALUE, "team-b"))],
        [
            attr("Object Type", ttlv.enumeration(Tag.ATTRIBUTE_VALUE, ObjectType.SYMMETRIC_KEY)),
            attr("Cryptographic Algorithm", ttlv.enumeration(Tag.ATTRIBUTE_VALUE, Alg.HMAC_SHA256)),
        ],
        [
            attr(
                "Link",
                ttlv.structure(
                    Tag.ATTRIBUTE_VALUE,
                    [
                        ttlv.enumeration(Tag.LINK_TYPE, LinkType.REPLACED_OBJECT_LINK),
                        ttlv.text(Tag.LINKED_OBJECT_IDENTIFIER, two_tenants["aes"]),
                    ],
                ),
            )
        ],
    ):
        _, results = call(kmip_core, "tenant-a", request((1, 4), (Op.LOCATE, criteria)))
        assert results[0].status == Status.SUCCESS
        assert results[0].payload.all(Tag.UNIQUE_IDENTIFIER) == []
        assert results[0].payload.child_value(Tag.LOCATED_ITEMS) == 0
    _, results = call(kmip_core, "tenant-a", request((1, 4), (Op.LOCATE, [])))
    assert [n.value for n in results[0].payload.all(Tag.UNIQUE_IDENTIFIER)] == [two_tenants["a-own"]]


def test_moved_blob_fails_authentication(runtime, kmip_core, two_tenants):
    """Material sealed for B's object cannot be opened as another object or under another tenant."""
    from openkcm.errors import IntegrityFailure, KeyUnavailable

    store = kmip_core.services.store
    b_obj = store.get("tenant-b", two_tenants["aes"])
    a_obj = store.get("tenant-a", two_tenants["a-own"])
    with pytest.raises((IntegrityFailure, KeyUnavailable)):
        runtime.keyring.open_object("tenant-a", a_obj.object_id, b_obj.l2_version, b_obj.wrapped)
    with pytest.raises(IntegrityFailure):
        runtime.keyring.open_object("tenant-b", two_tenants["hmac"], b_obj.l2_version, b_obj.wrapped)
