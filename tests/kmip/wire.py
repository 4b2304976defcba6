"""Building requests and reading responses in tests, with the codec under test's own constructors."""

from __future__ import annotations

from dataclasses import dataclass

from openkcm.protocol import messages, ttlv
from openkcm.protocol.tags import Tag
from openkcm.protocol.ttlv import TTLV


def request(
    version: tuple[int, int],
    *items: tuple[int, list[TTLV]],
    header_extra: list[TTLV] | None = None,
    ids: bool = False,
) -> bytes:
    header = [
        messages.protocol_version(version),
        *(header_extra or []),
        ttlv.integer(Tag.BATCH_COUNT, len(items)),
    ]
    batch = []
    for index, (operation, payload) in enumerate(items):
        children = [ttlv.enumeration(Tag.OPERATION, operation)]
        if ids or len(items) > 1:
            children.append(ttlv.byte_string(Tag.UNIQUE_BATCH_ITEM_ID, bytes([index + 1])))
        children.append(ttlv.structure(Tag.REQUEST_PAYLOAD, payload))
        batch.append(ttlv.structure(Tag.BATCH_ITEM, children))
    return ttlv.encode(
        ttlv.structure(Tag.REQUEST_MESSAGE, [ttlv.structure(Tag.REQUEST_HEADER, header), *batch])
    )


@dataclass
class Result:
    operation: int | None
    status: int
    reason: int | None
    message: str | None
    payload: TTLV | None


def response(data: bytes) -> tuple[tuple[int, int], list[Result]]:
    root = ttlv.decode(data)
    assert root.tag == Tag.RESPONSE_MESSAGE
    header = root.get(Tag.RESPONSE_HEADER)
    pv = header.get(Tag.PROTOCOL_VERSION)
    version = (pv.child_value(Tag.PROTOCOL_VERSION_MAJOR), pv.child_value(Tag.PROTOCOL_VERSION_MINOR))
    assert header.get(Tag.TIME_STAMP) is not None
    items = root.all(Tag.BATCH_ITEM)
    assert header.child_value(Tag.BATCH_COUNT) == len(items)
    results = [
        Result(
            i.child_value(Tag.OPERATION),
            i.child_value(Tag.RESULT_STATUS),
            i.child_value(Tag.RESULT_REASON),
            i.child_value(Tag.RESULT_MESSAGE),
            i.get(Tag.RESPONSE_PAYLOAD),
        )
        for i in items
    ]
    return version, results  # type: ignore[return-value]


def uid(tag_value: str) -> TTLV:
    return ttlv.text(Tag.UNIQUE_IDENTIFIER, tag_value)
