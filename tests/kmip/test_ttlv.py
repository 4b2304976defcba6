"""The TTLV codec: exact round trips of captured client bytes, and strict refusal of malformed input."""

from __future__ import annotations

from pathlib import Path

import pytest

from openkcm.protocol import messages, ttlv
from openkcm.protocol.tags import Op, Reason, Tag
from openkcm.protocol.ttlv import TTLVError

CAPTURES = Path(__file__).resolve().parent / "captures" / "libmongocrypt"
ALL_CAPTURES = sorted(CAPTURES.glob("*/*.ttlv"))


@pytest.mark.parametrize("path", ALL_CAPTURES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_captured_messages_round_trip_exactly(path: Path):
    data = path.read_bytes()
    assert ttlv.encode(ttlv.decode(data)) == data


def test_captured_requests_decode_to_the_expected_operations():
    expected = {
        "default": [
            (Op.REGISTER, (1, 0)),
            (Op.ACTIVATE, (1, 0)),
            (Op.GET, (1, 0)),
            (Op.GET, (1, 0)),
            (Op.GET, (1, 0)),
        ],
        "delegated": [
            (Op.CREATE, (1, 2)),
            (Op.ACTIVATE, (1, 0)),
            (Op.ENCRYPT, (1, 2)),
            (Op.DECRYPT, (1, 2)),
            (Op.DECRYPT, (1, 2)),
        ],
    }
    for mode, ops in expected.items():
        for index, (op, version) in enumerate(ops, start=1):
            message = messages.decode_request((CAPTURES / mode / f"{index:02d}-request.ttlv").read_bytes())
            assert message.header.version == version
            assert [item.operation for item in message.items] == [op]
            assert not message.header.has_authentication  # the certificate is the identity


def test_every_primitive_round_trips():
    item = ttlv.structure(
        Tag.REQUEST_PAYLOAD,
        [
            ttlv.integer(Tag.CRYPTOGRAPHIC_LENGTH, -5),
            ttlv.long_integer(Tag.USAGE_LIMITS_COUNT, 2**40),
            ttlv.big_integer(Tag.OFFSET, -(2**70)),
            ttlv.enumeration(Tag.OBJECT_TYPE, 2),
            ttlv.boolean(Tag.RANDOM_IV, True),
            ttlv.text(Tag.NAME_VALUE, "ünïcode"),
            ttlv.byte_string(Tag.DATA, b"\x00" * 13),
            ttlv.date_time(Tag.INITIAL_DATE, 1_700_000_000),
            ttlv.interval(Tag.LEASE_TIME, 3600),
            ttlv.structure(Tag.NAME, []),
        ],
    )
    data = ttlv.encode(item)
    assert len(data) % 8 == 0
    assert ttlv.decode(data) == item


def _int_item(length: int = 4, pad: bytes = b"\x00" * 4) -> bytes:
    return bytes.fromhex("42002a02") + length.to_bytes(4, "big") + b"\x00\x00\x01\x00" + pad


@pytest.mark.parametrize(
    "data, why",
    [
        (b"", "empty"),
        (bytes.fromhex("4200780100000008"), "structure longer than the data"),
        (_int_item(8), "integer with length 8"),
        (_int_item(pad=b"\x00\x00\x00\x01"), "non-zero padding"),
        (bytes.fromhex("4200c50600000008") + (2).to_bytes(8, "big"), "boolean 2"),
        (bytes.fromhex("4200550700000002") + b"\xff\xfe" + b"\x00" * 6, "invalid UTF-8"),
        (bytes.fromhex("4200550700000002") + b"ab" + b"\x00" * 5 + b"\x01", "text padding"),
        (bytes.fromhex("9900000200000004") + b"\x00" * 8, "not a KMIP tag"),
        (bytes.fromhex("42002a0b00000004") + b"\x00" * 8, "unknown type"),
        (_int_item() + _int_item(), "two top-level items"),
        (bytes.fromhex("4200780100000010") + _int_item()[:12], "truncated child"),
        (bytes.fromhex("4200040400000000"), "empty big integer"),
    ],
)
def test_malformed_input_is_refused(data: bytes, why: str):
    with pytest.raises(TTLVError):
        ttlv.decode(data)


def test_depth_and_size_limits():
    item = ttlv.integer(Tag.CRYPTOGRAPHIC_LENGTH, 1)
    for _ in range(20):
        item = ttlv.structure(Tag.ATTRIBUTE, [item])
    data = ttlv.encode(item)
    with pytest.raises(TTLVError, match="deep"):
        ttlv.decode(data, max_depth=16)
    assert ttlv.decode(data, max_depth=32) == item
    with pytest.raises(TTLVError, match="larger"):
        ttlv.decode(data, max_size=len(data) - 8)


def test_message_length_framing():
    data = (CAPTURES / "default" / "03-request.ttlv").read_bytes()
    assert ttlv.message_length(data[:8]) == len(data)
    with pytest.raises(TTLVError):
        ttlv.message_length(bytes.fromhex("42007802000000080"[:16]))


def test_request_errors_carry_the_version_to_answer_in():
    from tests.kmip.wire import request

    good = request((1, 2), (Op.GET, [ttlv.text(Tag.UNIQUE_IDENTIFIER, "x")]))
    root = ttlv.decode(good)
    root.value[0].value[-1] = ttlv.integer(Tag.BATCH_COUNT, 3)  # lie about the batch count
    with pytest.raises(messages.MessageError) as info:
        messages.decode_request(ttlv.encode(root))
    assert info.value.version == (1, 2) and info.value.reason == Reason.INVALID_MESSAGE
    with pytest.raises(messages.MessageError) as info:
        messages.decode_request(request((3, 7), (Op.GET, [])))
    assert info.value.version == (2, 0) and info.value.reason == Reason.UNSUPPORTED_PROTOCOL_VERSION
