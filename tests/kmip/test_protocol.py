"""Protocol behaviour through the bytes-in/bytes-out core: batches and the ID placeholder, refusals,
error results, version-correct result reasons, and authorization of the certificate's tenant."""

from __future__ import annotations

from datetime import UTC, datetime

from openkcm.domain.audit import read_events
from openkcm.domain.pki import ClientIdentity
from openkcm.domain.tenants import DISABLED
from openkcm.protocol import ttlv
from openkcm.protocol.tags import Alg, BatchContinuation, ObjectType, Op, Reason, Status, Tag
from openkcm.storage import CertificateModel
from tests.identities import recorded_identity
from tests.kmip.wire import request, response, uid


def who(tenant_id: str, serial: str = "a1") -> ClientIdentity:
    return recorded_identity(tenant_id, "svc", f"CN=svc.{tenant_id},OU=svc,O={tenant_id}", serial)


def create_payload(length: int = 256, name: str | None = None) -> list[ttlv.TTLV]:
    def attr(n, v):
        return ttlv.structure(Tag.ATTRIBUTE, [ttlv.text(Tag.ATTRIBUTE_NAME, n), v])

    attrs = [
        attr("Cryptographic Algorithm", ttlv.enumeration(Tag.ATTRIBUTE_VALUE, Alg.AES)),
        attr("Cryptographic Length", ttlv.integer(Tag.ATTRIBUTE_VALUE, length)),
    ]
    if name:
        attrs.append(
            attr(
                "Name",
                ttlv.structure(
                    Tag.ATTRIBUTE_VALUE, [ttlv.text(Tag.NAME_VALUE, name), ttlv.enumeration(Tag.NAME_TYPE, 1)]
                ),
            )
        )
    return [
        ttlv.enumeration(Tag.OBJECT_TYPE, ObjectType.SYMMETRIC_KEY),
        ttlv.structure(Tag.TEMPLATE_ATTRIBUTE, attrs),
    ]


def call(core, tenant_id, data: bytes, serial: str = "a1"):
    return response(core.handle(data, who(tenant_id, serial), "127.0.0.1:9"))


def test_batch_uses_the_id_placeholder_within_the_batch_only(kmip_core, tenant_factory):
    tenant_factory(tenant_id="batchy")
    _, results = call(
        kmip_core, "batchy", request((1, 2), (Op.CREATE, create_payload()), (Op.ACTIVATE, []), (Op.GET, []))
    )
    assert [r.status for r in results] == [Status.SUCCESS] * 3
    created = results[0].payload.child_value(Tag.UNIQUE_IDENTIFIER)
    assert results[1].payload.child_value(Tag.UNIQUE_IDENTIFIER) == created
    assert results[2].payload.child_value(Tag.UNIQUE_IDENTIFIER) == created
    # the next request starts with no placeholder (PyKMIP's server keeps it: the spec does not)
    _, results = call(kmip_core, "batchy", request((1, 2), (Op.GET, [])))
    assert results[0].status == Status.OPERATION_FAILED and results[0].reason == Reason.MISSING_DATA


def test_batch_stops_at_the_first_failure_unless_asked_to_continue(kmip_core, tenant_factory):
    tenant_factory(tenant_id="stopper")
    items = [(Op.GET, [uid("stopper.00000000000000000000000000000000")]), (Op.CREATE, create_payload())]
    _, results = call(kmip_core, "stopper", request((1, 2), *items))
    assert len(results) == 1 and results[0].reason == Reason.ITEM_NOT_FOUND
    cont = [ttlv.enumeration(Tag.BATCH_ERROR_CONTINUATION_OPTION, BatchContinuation.CONTINUE)]
    _, results = call(kmip_core, "stopper", request((1, 2), *items, header_extra=cont))
    assert [r.status for r in results] == [Status.OPERATION_FAILED, Status.SUCCESS]


def test_asynchronous_indicator_is_refused_cleanly(kmip_core, tenant_factory):
    tenant_factory(tenant_id="asyncer")
    header = [ttlv.boolean(Tag.ASYNCHRONOUS_INDICATOR, True)]
    _, results = call(
        kmip_core, "asyncer", request((1, 2), (Op.CREATE, create_payload()), header_extra=header)
    )
    assert results[0].status == Status.OPERATION_FAILED and results[0].reason == Reason.FEATURE_NOT_SUPPORTED
    assert kmip_core.services.store.all("asyncer") == []


def test_unsupported_operation_and_bad_fields(kmip_core, tenant_factory):
    tenant_factory(tenant_id="errs")
    _, results = call(
        kmip_core,
        "errs",
        request(
            (1, 4),
            (Op.CREATE_KEY_PAIR, []),
            (Op.SIGN, []),
            header_extra=[ttlv.enumeration(Tag.BATCH_ERROR_CONTINUATION_OPTION, BatchContinuation.CONTINUE)],
        ),
    )
    assert [r.reason for r in results] == [Reason.OPERATION_NOT_SUPPORTED] * 2
    _, results = call(kmip_core, "errs", request((1, 2), (Op.CREATE, create_payload(length=100))))
    assert results[0].reason == Reason.INVALID_FIELD  # 1.x has no Invalid Attribute Value: mapped down
    _, results = call(
        kmip_core,
        "errs",
        request(
            (2, 0),
            (
                Op.CREATE,
                [
                    ttlv.enumeration(Tag.OBJECT_TYPE, 2),
                    ttlv.structure(
                        Tag.ATTRIBUTES,
                        [
                            ttlv.enumeration(Tag.CRYPTOGRAPHIC_ALGORITHM, Alg.AES),
                            ttlv.integer(Tag.CRYPTOGRAPHIC_LENGTH, 100),
                        ],
                    ),
                ],
            ),
        ),
    )
    assert results[0].reason == Reason.INVALID_ATTRIBUTE_VALUE


def test_invalid_message_gets_an_error_response(kmip_core, tenant_factory):
    tenant_factory(tenant_id="garbage")
    version, results = call(kmip_core, "garbage", ttlv.encode(ttlv.structure(Tag.REQUEST_MESSAGE, [])))
    assert version == (1, 0) and results[0].reason == Reason.INVALID_MESSAGE and results[0].operation is None


def test_maximum_response_size(kmip_core, tenant_factory):
    """Read-only results over the limit become Response Too Large; a state-changing item keeps its real
    result (it ran and was audited: the client must learn the new object's id)."""
    tenant_factory(tenant_id="smally")
    header = [ttlv.integer(Tag.MAXIMUM_RESPONSE_SIZE, 64)]
    _, results = call(kmip_core, "smally", request((1, 2), (Op.QUERY, []), header_extra=header))
    assert results[0].reason == Reason.RESPONSE_TOO_LARGE
    _, results = call(
        kmip_core, "smally", request((1, 2), (Op.CREATE, create_payload()), header_extra=header)
    )
    assert results[0].status == Status.SUCCESS
    assert kmip_core.services.store.get("smally", results[0].payload.child_value(Tag.UNIQUE_IDENTIFIER))


def test_wrong_lifecycle_state_per_version(kmip_core, tenant_factory):
    tenant_factory(tenant_id="states")
    _, results = call(
        kmip_core,
        "states",
        request(
            (2, 0),
            (
                Op.CREATE,
                [
                    ttlv.enumeration(Tag.OBJECT_TYPE, 2),
                    ttlv.structure(
                        Tag.ATTRIBUTES,
                        [
                            ttlv.enumeration(Tag.CRYPTOGRAPHIC_ALGORITHM, Alg.AES),
                            ttlv.integer(Tag.CRYPTOGRAPHIC_LENGTH, 128),
                        ],
                    ),
                ],
            ),
        ),
    )
    key_id = results[0].payload.child_value(Tag.UNIQUE_IDENTIFIER)
    for version, reason in (((2, 0), Reason.WRONG_KEY_LIFECYCLE_STATE), ((1, 4), Reason.PERMISSION_DENIED)):
        _, results = call(
            kmip_core,
            "states",
            request(version, (Op.ENCRYPT, [uid(key_id), ttlv.byte_string(Tag.DATA, b"x")])),
        )
        assert results[0].reason == reason


def test_unknown_disabled_tenant_and_revoked_certificate_are_refused_and_audited(
    runtime, kmip_core, tenant_factory
):
    tenant_factory(tenant_id="gated")
    get = request((1, 2), (Op.CREATE, create_payload()))
    _, results = call(kmip_core, "nobody-here", get)
    assert results[0].reason == Reason.AUTHENTICATION_NOT_SUCCESSFUL

    now = datetime.now(UTC)
    CertificateModel(
        "gated",
        CertificateModel.sort_key("dead"),
        serial="dead",
        service_id="svc",
        issued_at=now,
        not_after=now,
        revoked_at=now,
        revoked_reason="key leaked",
    ).save()
    _, results = call(kmip_core, "gated", get, serial="dead")
    assert results[0].reason == Reason.AUTHENTICATION_NOT_SUCCESSFUL
    _, results = call(kmip_core, "gated", get, serial="alive")
    assert results[0].status == Status.SUCCESS

    # a malformed message is no way round the refusal: the same answer, audited as a security event
    garbage = ttlv.encode(ttlv.structure(Tag.REQUEST_MESSAGE, []))
    _, results = call(kmip_core, "gated", garbage, serial="dead")
    assert results[0].reason == Reason.AUTHENTICATION_NOT_SUCCESSFUL
    _, results = call(kmip_core, "nobody-here", garbage)
    assert results[0].reason == Reason.AUTHENTICATION_NOT_SUCCESSFUL

    runtime.tenants.set_status("gated", DISABLED)
    runtime.keyring.invalidate("gated")
    _, results = call(kmip_core, "gated", get, serial="alive")
    assert results[0].reason == Reason.PERMISSION_DENIED
    _, results = call(kmip_core, "gated", garbage, serial="alive")
    assert results[0].reason == Reason.PERMISSION_DENIED
    runtime.audit.flush()
    security = [e for e in read_events("gated", since="2000-01-01T00:00:00+00:00") if e["kind"] == "security"]
    assert any(e["reason"] == "the tenant is not enabled" for e in security)
    assert any(
        e["details"].get("serial") == "dead"
        for e in read_events("_platform", since="2000-01-01T00:00:00+00:00")
    )
    refused_messages = [
        e
        for e in read_events("_platform", since="2000-01-01T00:00:00+00:00")
        if e["operation"] == "Message" and e["kind"] == "security"
    ]
    assert {e["details"]["claimed_tenant"] for e in refused_messages} >= {"gated", "nobody-here"}
    assert any(e["operation"] == "Message" and e["result"] == "denied" for e in security)


def test_l2_rotation_keeps_old_objects_readable_and_seals_new_ones_under_the_new_version(
    runtime, kmip_core, tenant_factory
):
    tenant_factory(tenant_id="rotating")
    _, results = call(kmip_core, "rotating", request((1, 2), (Op.CREATE, create_payload()), (Op.GET, [])))
    old_id = results[0].payload.child_value(Tag.UNIQUE_IDENTIFIER)
    material = (
        results[1]
        .payload.get(Tag.SYMMETRIC_KEY)
        .get(Tag.KEY_BLOCK)
        .get(Tag.KEY_VALUE)
        .child_value(Tag.KEY_MATERIAL)
    )
    assert runtime.keyring.rotate("rotating") == 2
    _, results = call(
        kmip_core, "rotating", request((1, 2), (Op.GET, [uid(old_id)]), (Op.CREATE, create_payload()))
    )
    again = (
        results[0]
        .payload.get(Tag.SYMMETRIC_KEY)
        .get(Tag.KEY_BLOCK)
        .get(Tag.KEY_VALUE)
        .child_value(Tag.KEY_MATERIAL)
    )
    assert again == material
    new_id = results[1].payload.child_value(Tag.UNIQUE_IDENTIFIER)
    store = kmip_core.services.store
    assert store.get("rotating", old_id).l2_version == 1 and store.get("rotating", new_id).l2_version == 2


def test_derive_key_hkdf_in_2_0_is_l4_and_never_stored(kmip_core, tenant_factory):
    from openkcm.domain.hierarchy import derive_l4
    from openkcm.protocol.tags import Derivation

    tenant_factory(tenant_id="deriving")
    attrs = ttlv.structure(
        Tag.ATTRIBUTES,
        [ttlv.enumeration(Tag.CRYPTOGRAPHIC_ALGORITHM, Alg.AES), ttlv.integer(Tag.CRYPTOGRAPHIC_LENGTH, 256)],
    )
    derive = [
        ttlv.enumeration(Tag.OBJECT_TYPE, ObjectType.SYMMETRIC_KEY),
        ttlv.enumeration(Tag.DERIVATION_METHOD, Derivation.HKDF),
        ttlv.structure(
            Tag.DERIVATION_PARAMETERS,
            [ttlv.byte_string(Tag.DERIVATION_DATA, b"customer/42"), ttlv.byte_string(Tag.SALT, b"salty")],
        ),
        ttlv.structure(Tag.ATTRIBUTES, [ttlv.integer(Tag.CRYPTOGRAPHIC_LENGTH, 256)]),
    ]
    _, results = call(
        kmip_core,
        "deriving",
        request(
            (2, 0),
            (Op.CREATE, [ttlv.enumeration(Tag.OBJECT_TYPE, ObjectType.SYMMETRIC_KEY), attrs]),
            (Op.ACTIVATE, []),
            (Op.GET, []),
            (Op.DERIVE_KEY, derive),
            (Op.GET, []),
        ),
    )
    assert [r.status for r in results] == [Status.SUCCESS] * 5

    def material(result):
        return (
            result.payload.get(Tag.SYMMETRIC_KEY)
            .get(Tag.KEY_BLOCK)
            .get(Tag.KEY_VALUE)
            .child_value(Tag.KEY_MATERIAL)
        )

    base, derived = material(results[2]), material(results[4])
    assert derived == derive_l4(base, b"customer/42", 32, b"salty") and derived != base
    derived_id = results[3].payload.child_value(Tag.UNIQUE_IDENTIFIER)
    assert kmip_core.services.store.get("deriving", derived_id).wrapped is None  # the L4 key is never stored
    # HKDF is a 2.0 method: a 1.4 client asking for it is refused
    _, results = call(
        kmip_core, "deriving", request((1, 4), (Op.DERIVE_KEY, [derive[0], uid(derived_id), *derive[1:3]]))
    )
    assert results[0].status == Status.OPERATION_FAILED


def test_warm_read_only_requests_are_answered_inline_and_everything_else_is_not(
    settings, tenant_factory, tmp_path
):
    """The fast path answers only from memory: warm caches, read-only operations, a WAL audit sink."""
    from openkcm.kmip.core import KmipCore
    from openkcm.ops.runtime import build_runtime

    tenant_factory(tenant_id="inline")
    wal_runtime = build_runtime(settings, audit_wal_dir=tmp_path / "wal")
    try:
        core = KmipCore(wal_runtime)
        identity = who("inline")
        create = request((1, 2), (Op.CREATE, create_payload()), (Op.ACTIVATE, []))
        assert core.try_inline(create, identity) is None  # writes never run inline
        _, results = response(core.handle(create, identity))
        key_id = results[0].payload.child_value(Tag.UNIQUE_IDENTIFIER)
        get = request((1, 2), (Op.GET, [uid(key_id)]))
        response(core.handle(get, identity))  # warms tenant, certificate, object and L2 caches
        fast = core.try_inline(get, identity)
        assert fast is not None
        _, results = response(fast)
        assert results[0].status == Status.SUCCESS
        assert core.try_inline(request((1, 2), (Op.GET, [uid("inline." + "0" * 32)])), identity) is None
        wal_runtime.keyring.invalidate("inline")  # an epoch change: cold again
        assert core.try_inline(get, identity) is None
    finally:
        wal_runtime.close()


def test_destroyed_l2_fails_closed_for_this_tenant_only(runtime, kmip_core, tenant_factory):
    tenant_factory(tenant_id="shredded")
    tenant_factory(tenant_id="survivor")
    ids = {}
    for tenant in ("shredded", "survivor"):
        _, results = call(kmip_core, tenant, request((1, 2), (Op.CREATE, create_payload()), (Op.GET, [])))
        assert results[1].status == Status.SUCCESS
        ids[tenant] = results[0].payload.child_value(Tag.UNIQUE_IDENTIFIER)
    runtime.keyring.destroy_all("shredded")  # crypto-shredding: every L2 version of the tenant is gone
    _, results = call(kmip_core, "shredded", request((1, 2), (Op.GET, [uid(ids["shredded"])])))
    assert results[0].status == Status.OPERATION_FAILED and results[0].reason == Reason.PERMISSION_DENIED
    _, results = call(kmip_core, "survivor", request((1, 2), (Op.GET, [uid(ids["survivor"])])))
    assert results[0].status == Status.SUCCESS


def test_a_certificate_past_its_recorded_validity_is_refused(runtime, kmip_core, tenant_factory):
    """TLS checks validity only at the handshake; a long-lived connection or a resumed session can outlive
    the certificate. Each request checks the recorded not_after."""
    tenant_factory(tenant_id="expiring")
    then = datetime.now(UTC)
    CertificateModel(
        "expiring",
        CertificateModel.sort_key("0ld"),
        serial="0ld",
        service_id="svc",
        issued_at=then,
        not_after=then,
    ).save()
    get = request((1, 2), (Op.CREATE, create_payload()))
    _, results = call(kmip_core, "expiring", get, serial="0ld")
    assert results[0].reason == Reason.AUTHENTICATION_NOT_SUCCESSFUL
    assert "expired" in results[0].message
    _, results = call(kmip_core, "expiring", get, serial="fresh")
    assert results[0].status == Status.SUCCESS
