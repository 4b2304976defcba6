"""Locate by Name reads the name index (entries written in the same transaction as the object), not the
tenant's partition: every way a Name comes or goes keeps it right, objects stored before the index are
found, a stale entry finds nothing, and the index is per tenant."""

from __future__ import annotations

from openkcm.protocol import ttlv
from openkcm.protocol.tags import Op, Status, Tag
from openkcm.storage import ObjectNameModel
from tests.kmip.test_protocol import call, create_payload
from tests.kmip.wire import request, uid

V = (1, 4)


def _name(value: str, tag: Tag = Tag.ATTRIBUTE) -> ttlv.TTLV:
    return ttlv.structure(
        tag,
        [
            ttlv.text(Tag.ATTRIBUTE_NAME, "Name"),
            ttlv.structure(Tag.ATTRIBUTE_VALUE, [ttlv.text(Tag.NAME_VALUE, value), ttlv.enumeration(Tag.NAME_TYPE, 1)]),
        ],
    )


def _located(core, tenant: str, name: str) -> list[str]:
    _, [result] = call(core, tenant, request(V, (Op.LOCATE, [_name(name)])))
    assert result.status == Status.SUCCESS, result.message
    return [n.value for n in result.payload.all(Tag.UNIQUE_IDENTIFIER)]


def _create(core, tenant: str, name: str) -> str:
    _, [result] = call(core, tenant, request(V, (Op.CREATE, create_payload(name=name))))
    assert result.status == Status.SUCCESS, result.message
    return result.payload.child_value(Tag.UNIQUE_IDENTIFIER)


def _ok(core, tenant: str, op: Op, payload: list[ttlv.TTLV]) -> ttlv.TTLV:
    _, [result] = call(core, tenant, request(V, (op, payload)))
    assert result.status == Status.SUCCESS, result.message
    return result.payload


def test_every_way_a_name_comes_or_goes_keeps_locate_right(kmip_core, tenant_factory, monkeypatch):
    tenant_factory(tenant_id="naming")
    store = kmip_core.services.store
    monkeypatch.setattr(store, "all", lambda tenant_id: (_ for _ in ()).throw(AssertionError("partition read")))

    first = _create(kmip_core, "naming", "alpha")
    second = _create(kmip_core, "naming", "alpha")
    assert _located(kmip_core, "naming", "alpha") == [second, first]  # newest first

    # Modify Attribute renames (index 0), Add Attribute adds a second name, Delete Attribute drops it
    _ok(kmip_core, "naming", Op.MODIFY_ATTRIBUTE, [uid(first), _name("beta")])
    assert _located(kmip_core, "naming", "alpha") == [second]
    assert _located(kmip_core, "naming", "beta") == [first]
    _ok(kmip_core, "naming", Op.ADD_ATTRIBUTE, [uid(first), _name("gamma")])
    assert _located(kmip_core, "naming", "gamma") == [first] and _located(kmip_core, "naming", "beta") == [first]
    _ok(kmip_core, "naming", Op.DELETE_ATTRIBUTE, [uid(first), ttlv.text(Tag.ATTRIBUTE_NAME, "Name"),
                                                   ttlv.integer(Tag.ATTRIBUTE_INDEX, 1)])
    assert _located(kmip_core, "naming", "gamma") == [] and _located(kmip_core, "naming", "beta") == [first]

    # Re-key moves the names to the replacement key
    _ok(kmip_core, "naming", Op.ACTIVATE, [uid(second)])
    replacement = _ok(kmip_core, "naming", Op.REKEY, [uid(second)]).child_value(Tag.UNIQUE_IDENTIFIER)
    assert _located(kmip_core, "naming", "alpha") == [replacement]

    # Register and Derive Key index their names too
    registered = _ok(kmip_core, "naming", Op.REGISTER, _register_payload("delta"))
    assert _located(kmip_core, "naming", "delta") == [registered.child_value(Tag.UNIQUE_IDENTIFIER)]


def test_objects_stored_before_the_index_are_found(kmip_core, tenant_factory):
    tenant_factory(tenant_id="legacy")
    old = _create(kmip_core, "legacy", "kept")
    for entry in list(ObjectNameModel.query("legacy", ObjectNameModel.object_id.startswith("~"))):
        entry.delete()  # as if stored by a version without the index
    kmip_core.services.store._indexed.clear()
    assert _located(kmip_core, "legacy", "kept") == [old]
    assert ObjectNameModel.get("legacy", "~N!complete")  # backfilled once, then trusted
    newer = _create(kmip_core, "legacy", "kept")
    assert _located(kmip_core, "legacy", "kept") == [newer, old]


def test_a_stale_entry_finds_nothing_and_the_index_is_per_tenant(kmip_core, tenant_factory):
    tenant_factory(tenant_id="stale-a")
    tenant_factory(tenant_id="stale-b")
    a_key = _create(kmip_core, "stale-a", "shared-name")
    [entry] = [e for e in ObjectNameModel.query("stale-a", ObjectNameModel.object_id.startswith("~N#"))]
    ObjectNameModel("stale-a", entry.object_id.replace(a_key, "stale-a." + "0" * 32), target="stale-a." + "0" * 32).save()
    ObjectNameModel("stale-b", entry.object_id, target=a_key).save()  # even an entry naming another tenant's key
    assert _located(kmip_core, "stale-a", "shared-name") == [a_key]
    assert _located(kmip_core, "stale-b", "shared-name") == []
    b_key = _create(kmip_core, "stale-b", "shared-name")
    assert _located(kmip_core, "stale-b", "shared-name") == [b_key]
    assert _located(kmip_core, "stale-a", "shared-name") == [a_key]


def _register_payload(name: str) -> list[ttlv.TTLV]:
    from openkcm.protocol.tags import Alg, KeyFormat, ObjectType

    block = ttlv.structure(
        Tag.KEY_BLOCK,
        [
            ttlv.enumeration(Tag.KEY_FORMAT_TYPE, KeyFormat.RAW),
            ttlv.structure(Tag.KEY_VALUE, [ttlv.byte_string(Tag.KEY_MATERIAL, b"r" * 32)]),
            ttlv.enumeration(Tag.CRYPTOGRAPHIC_ALGORITHM, Alg.AES),
            ttlv.integer(Tag.CRYPTOGRAPHIC_LENGTH, 256),
        ],
    )
    template = ttlv.structure(Tag.TEMPLATE_ATTRIBUTE, [_name(name)])
    return [
        ttlv.enumeration(Tag.OBJECT_TYPE, ObjectType.SYMMETRIC_KEY),
        template,
        ttlv.structure(Tag.SYMMETRIC_KEY, [block]),
    ]
