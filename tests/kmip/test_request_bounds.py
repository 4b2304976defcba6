"""Bounds on what one request message may cost and what its answer may hide (review 6e), through the
bytes-in/bytes-out core: TTLV items per message, when the inline path decodes at all, Maximum Response
Size after state changes, the Batch Error Continuation Option, minimal Big Integers, and the throttled
security record of a refused certificate sending in a loop."""

from __future__ import annotations

import struct
import time

import pytest

from openkcm.domain.audit import read_events
from openkcm.domain.pki import ClientIdentity
from openkcm.protocol import messages, ttlv
from openkcm.protocol.messages import MessageError
from openkcm.protocol.tags import BatchContinuation, ObjectType, Op, Reason, Status, Tag
from tests.kmip.hostile_client import hostile
from tests.kmip.test_protocol import call, create_payload, who
from tests.kmip.wire import request, response, uid

SINCE = "2000-01-01T00:00:00+00:00"


# ---- TTLV items per message --------------------------------------------------------------------------
def test_a_message_of_too_many_items_is_an_invalid_message_and_costs_little(kmip_core, tenant_factory):
    tenant_factory(tenant_id="itemcap")
    data = hostile()
    started = time.perf_counter()
    _, results = response(kmip_core.handle(data, who("itemcap"), "127.0.0.1:9"))
    took = time.perf_counter() - started
    assert results[0].reason == Reason.INVALID_MESSAGE and "too many items" in results[0].message
    assert took < 0.06, took  # ~130 ms of decoding without the bound; ~4 ms with it


def _secret_data_register(index: int) -> list[ttlv.TTLV]:
    def attr(name: str, value: ttlv.TTLV) -> ttlv.TTLV:
        return ttlv.structure(Tag.ATTRIBUTE, [ttlv.text(Tag.ATTRIBUTE_NAME, name), value])

    name = ttlv.structure(
        Tag.ATTRIBUTE_VALUE, [ttlv.text(Tag.NAME_VALUE, f"seed-{index}"), ttlv.enumeration(Tag.NAME_TYPE, 1)]
    )
    return [
        ttlv.enumeration(Tag.OBJECT_TYPE, ObjectType.SECRET_DATA),
        ttlv.structure(
            Tag.TEMPLATE_ATTRIBUTE,
            [
                attr("Cryptographic Usage Mask", ttlv.integer(Tag.ATTRIBUTE_VALUE, 0)),
                attr("Name", name),
                attr("Contact Information", ttlv.text(Tag.ATTRIBUTE_VALUE, "ops@example")),
                *(attr(f"x-label-{n}", ttlv.text(Tag.ATTRIBUTE_VALUE, "v")) for n in range(5)),
            ],
        ),
        ttlv.structure(
            Tag.SECRET_DATA,
            [
                ttlv.enumeration(Tag.SECRET_DATA_TYPE, 2),
                ttlv.structure(
                    Tag.KEY_BLOCK,
                    [
                        ttlv.enumeration(Tag.KEY_FORMAT_TYPE, 2),
                        ttlv.structure(Tag.KEY_VALUE, [ttlv.byte_string(Tag.KEY_MATERIAL, b"s" * 96)]),
                    ],
                ),
            ],
        ),
    ]


def _items(node: ttlv.TTLV) -> int:
    return 1 + sum(_items(c) for c in node.children)


def test_the_largest_legitimate_messages_fit_the_item_bound(kmip_core):
    """A full batch (64 items) of Registers with eight template attributes each, and a Register of an
    Opaque Object as large as a message may be."""
    batch = request((1, 4), *[(Op.REGISTER, _secret_data_register(i)) for i in range(64)])
    assert 2400 < _items(ttlv.decode(batch)) <= kmip_core.config.max_items
    assert len(kmip_core._decode(batch).items) == 64
    opaque = [
        ttlv.enumeration(Tag.OBJECT_TYPE, ObjectType.OPAQUE_DATA),
        ttlv.structure(
            Tag.OPAQUE_OBJECT,
            [
                ttlv.enumeration(Tag.OPAQUE_DATA_TYPE, 0x80000000),
                ttlv.byte_string(Tag.OPAQUE_DATA_VALUE, b""),
            ],
        ),
    ]
    small = request((1, 4), (Op.REGISTER, opaque))
    room = kmip_core.config.max_message_size - len(small)
    opaque[1].value[1] = ttlv.byte_string(Tag.OPAQUE_DATA_VALUE, b"o" * room)
    big = request((1, 4), (Op.REGISTER, opaque))
    assert len(big) == kmip_core.config.max_message_size
    assert kmip_core._decode(big).items[0].operation == Op.REGISTER


def test_the_item_bound_is_counted_only_where_it_can_be_exceeded():
    """Every item takes at least 8 bytes: a message of at most 8 x max_items bytes is decoded unbounded
    (no count on the hot path); one item more than the bound is refused."""
    body = struct.pack(">II", (0x420001 << 8) | ttlv.TEXT_STRING, 0) * 9
    data = struct.pack(">II", (Tag.REQUEST_MESSAGE << 8) | ttlv.STRUCTURE, len(body)) + body
    assert len(ttlv.decode(data, max_items=10).value) == 9  # 10 items: the root and 9 children
    with pytest.raises(ttlv.TTLVError, match="too many items"):
        ttlv.decode(data, max_items=9)


# ---- the inline path decodes only what it may answer ---------------------------------------------------
@pytest.fixture
def wal_core(settings, tmp_path):
    from openkcm.kmip.core import KmipCore
    from openkcm.ops.runtime import build_runtime

    rt = build_runtime(settings, audit_wal_dir=tmp_path / "wal")
    yield KmipCore(rt)
    rt.close()


def _count_decodes(monkeypatch) -> list[int]:
    calls: list[int] = []
    real = messages.decode_request

    def counting(data, **kwargs):
        calls.append(len(data))
        return real(data, **kwargs)

    monkeypatch.setattr(messages, "decode_request", counting)
    return calls


def test_inline_path_decodes_nothing_large_or_unaccepted_and_hands_over_what_it_decoded(
    wal_core, tenant_factory, monkeypatch
):
    tenant_factory(tenant_id="triage")
    identity = who("triage")
    _, results = response(
        wal_core.handle(request((1, 2), (Op.CREATE, create_payload()), (Op.ACTIVATE, [])), identity)
    )
    key_id = results[0].payload.child_value(Tag.UNIQUE_IDENTIFIER)
    get = request((1, 2), (Op.GET, [uid(key_id)]))
    response(wal_core.handle(get, identity))  # every cache warm
    calls = _count_decodes(monkeypatch)
    assert wal_core.try_inline_or_decoded(get, identity).__class__ is bytes
    assert calls == [len(get)]
    # larger than inline_max_size: not decoded on the caller's (event loop) thread at all
    assert wal_core.try_inline_or_decoded(hostile(), identity) is None
    padded = request((1, 2), (Op.GET, [uid(key_id), ttlv.text(0x540001, "p" * 5000)]))
    assert wal_core.try_inline_or_decoded(padded, identity) is None
    # a certificate never recorded (refused at the core) or of an unknown tenant: not decoded either
    stranger = ClientIdentity("triage", "svc", "CN=svc", "never-recorded")
    response(wal_core.handle(get, stranger))  # refused; its refusal is cached
    calls.clear()
    assert wal_core.try_inline_or_decoded(get, stranger) is None
    assert calls == []
    # not answerable inline (a write): the decoded message is handed back and answered without a decode
    create = request((1, 2), (Op.CREATE, create_payload()))
    decoded = wal_core.try_inline_or_decoded(create, identity)
    assert isinstance(decoded, messages.RequestMessage) and calls == [len(create)]
    _, results = response(wal_core.handle_decoded(decoded, identity))
    assert results[0].status == Status.SUCCESS and calls == [len(create)]
    garbage = ttlv.encode(ttlv.structure(Tag.REQUEST_MESSAGE, []))
    error = wal_core.try_inline_or_decoded(garbage, identity)
    assert isinstance(error, MessageError)
    _, results = response(wal_core.handle_decoded(error, identity))
    assert results[0].reason == Reason.INVALID_MESSAGE and len(calls) == 2


# ---- Maximum Response Size ---------------------------------------------------------------------------
def test_maximum_response_size_never_hides_a_committed_create(kmip_core, tenant_factory):
    """The Create ran and was audited: its answer keeps the new id, whatever the limit; read-only items of
    the same batch are the ones replaced by Response Too Large."""
    tenant_factory(tenant_id="mrs")
    header = [ttlv.integer(Tag.MAXIMUM_RESPONSE_SIZE, 64)]
    _, results = call(kmip_core, "mrs", request((1, 2), (Op.CREATE, create_payload()), header_extra=header))
    assert results[0].status == Status.SUCCESS
    created = kmip_core.services.store.all("mrs")
    assert [o.object_id for o in created] == [results[0].payload.child_value(Tag.UNIQUE_IDENTIFIER)]
    kmip_core.services.audit.flush()
    assert [e["result"] for e in read_events("mrs", since=SINCE) if e["operation"] == "Create"] == ["success"]
    _, results = call(
        kmip_core,
        "mrs",
        request((1, 2), (Op.CREATE, create_payload()), (Op.ACTIVATE, []), (Op.GET, []), header_extra=header),
    )
    assert [r.status for r in results] == [Status.SUCCESS, Status.SUCCESS, Status.OPERATION_FAILED]
    assert results[2].reason == Reason.RESPONSE_TOO_LARGE
    assert results[1].payload.child_value(Tag.UNIQUE_IDENTIFIER) == results[0].payload.child_value(
        Tag.UNIQUE_IDENTIFIER
    )


# ---- Batch Error Continuation Option -----------------------------------------------------------------
def test_batch_error_continuation_undo_is_refused_before_any_item_runs(kmip_core, tenant_factory):
    tenant_factory(tenant_id="undo")
    undo = [ttlv.enumeration(Tag.BATCH_ERROR_CONTINUATION_OPTION, BatchContinuation.UNDO)]
    items = [(Op.CREATE, create_payload()), (Op.GET, [uid("undo.00000000000000000000000000000000")])]
    for version in ((1, 2), (2, 0)):
        _, results = call(kmip_core, "undo", request(version, *items, header_extra=undo))
        assert [(r.status, r.reason) for r in results] == [
            (Status.OPERATION_FAILED, Reason.FEATURE_NOT_SUPPORTED)
        ] * 2
    assert kmip_core.services.store.all("undo") == []
    # one item has nothing before it to undo: Undo is Stop
    _, results = call(kmip_core, "undo", request((1, 2), (Op.QUERY, []), header_extra=undo))
    assert results[0].status == Status.SUCCESS


@pytest.mark.parametrize(
    ("version", "reason"), [((1, 2), Reason.INVALID_FIELD), ((2, 0), Reason.UNKNOWN_ENUMERATION)]
)
def test_batch_error_continuation_out_of_range_is_refused(kmip_core, tenant_factory, version, reason):
    header = [ttlv.enumeration(Tag.BATCH_ERROR_CONTINUATION_OPTION, 7)]
    data = request(version, (Op.QUERY, []), header_extra=header)
    with pytest.raises(MessageError, match="Batch Error Continuation Option 7"):
        messages.decode_request(data)
    tenant_factory(tenant_id="badcont")
    answered, results = call(kmip_core, "badcont", data)
    assert answered == version and results[0].reason == reason and results[0].operation is None


# ---- Big Integers ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "value",
    [bytes(15) + b"\x01", b"\xff" * 15 + b"\x80", bytes(8) + b"\x00" * 7 + b"\x7f", b"\xff" * 16],
    ids=["one", "minus-128", "positive-padded", "minus-one"],
)
def test_big_integer_with_a_block_of_sign_extension_only_is_refused(value):
    body = struct.pack(">II", (0x420001 << 8) | ttlv.BIG_INTEGER, len(value)) + value
    data = struct.pack(">II", (0x420078 << 8) | ttlv.STRUCTURE, len(body)) + body
    with pytest.raises(ttlv.TTLVError, match="not minimally encoded"):
        ttlv.decode(data)


@pytest.mark.parametrize("value", [0, 1, -1, 2**63 - 1, -(2**63), 2**63, -(2**63) - 1, 2**64, -(2**200)])
def test_minimal_big_integers_round_trip(value):
    data = ttlv.encode(ttlv.structure(0x420078, [ttlv.big_integer(0x420001, value)]))
    assert ttlv.decode(data).value[0].value == value
    assert ttlv.encode(ttlv.decode(data)) == data


# ---- refused certificates in a loop --------------------------------------------------------------------
def test_refusals_of_a_certificate_are_answered_each_time_and_recorded_once_a_minute(
    kmip_core, tenant_factory
):
    tenant_factory(tenant_id="looper")
    published: list = []
    kmip_core.services.audit.set_security_listener(published.append)
    stranger = ClientIdentity("looper", "svc", "CN=svc", "never-recorded")  # CA-signed, never recorded
    get = request((1, 2), (Op.GET, [uid("looper." + "0" * 32)]))
    for _ in range(20):
        _, results = response(kmip_core.handle(get, stranger, "127.0.0.1:9"))
        assert results[0].reason == Reason.AUTHENTICATION_NOT_SUCCESSFUL  # the answer: every time
    kmip_core.services.audit.flush()

    def refusals() -> list[dict]:
        return [
            e
            for e in read_events("_platform", since=SINCE)
            if e["operation"] == "Get" and e["details"].get("serial") == "never-recorded"
        ]

    assert len(refusals()) == 1 and len(published) == 1  # the record (and its event): once
    kmip_core._refusals.interval = 0.0  # a minute later
    response(kmip_core.handle(get, stranger, "127.0.0.1:9"))
    kmip_core.services.audit.flush()
    later = refusals()
    assert len(later) == 2 and any("19 more refused since the last record" in e["reason"] for e in later)


def test_a_refused_certificate_s_large_message_is_refused_without_being_decoded(
    kmip_core, tenant_factory, monkeypatch
):
    """Only its header is read (for the version to answer in): decoding what will be refused anyway would
    let a revoked client keep the workers busy at will. Small messages keep their per-item refusal."""
    tenant_factory(tenant_id="bigrefusal")
    stranger = ClientIdentity("bigrefusal", "svc", "CN=svc", "never-recorded")
    padded = request((2, 0), (Op.GET, [uid("bigrefusal." + "0" * 32), ttlv.text(0x540001, "p" * 8000)]))
    calls = _count_decodes(monkeypatch)
    version, results = response(kmip_core.handle(padded, stranger, "127.0.0.1:9"))
    assert calls == [] and version == (2, 0)
    assert results[0].reason == Reason.AUTHENTICATION_NOT_SUCCESSFUL and results[0].operation is None
    version, results = response(kmip_core.handle(hostile(), stranger, "127.0.0.1:9"))
    assert calls == [] and results[0].reason == Reason.AUTHENTICATION_NOT_SUCCESSFUL
    small = request((1, 2), (Op.GET, [uid("bigrefusal." + "0" * 32)]))
    version, results = response(kmip_core.handle(small, stranger, "127.0.0.1:9"))
    assert calls == [len(small)] and version == (1, 2) and results[0].operation == Op.GET
    assert results[0].reason == Reason.AUTHENTICATION_NOT_SUCCESSFUL
