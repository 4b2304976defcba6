"""KMIP request and response messages (spec 7: Message Contents) over the TTLV codec.

``decode_request`` turns bytes into a :class:`RequestMessage` (header + batch items, payloads left as
TTLV); ``encode_response`` builds the response message. Both are version-aware only where the wire
format differs; what an operation returns per version is the operations' business.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from openkcm.protocol import ttlv
from openkcm.protocol.tags import REASONS_1X, BatchContinuation, Reason, Status, Tag
from openkcm.protocol.ttlv import TTLV, TTLVError

Version = tuple[int, int]
SUPPORTED_VERSIONS: tuple[Version, ...] = ((2, 0), (1, 4), (1, 3), (1, 2), (1, 1), (1, 0))
_SUPPORTED = frozenset(SUPPORTED_VERSIONS)

_T_REQUEST_MESSAGE = Tag.REQUEST_MESSAGE
_T_REQUEST_HEADER = Tag.REQUEST_HEADER
_T_BATCH_ITEM = Tag.BATCH_ITEM
_T_OPERATION = Tag.OPERATION
_T_PAYLOAD = Tag.REQUEST_PAYLOAD
_T_BATCH_ID = Tag.UNIQUE_BATCH_ITEM_ID
_CONTINUATIONS = frozenset({BatchContinuation.CONTINUE, BatchContinuation.STOP, BatchContinuation.UNDO})


class MessageError(Exception):
    """The message decoded as TTLV but is not a valid KMIP request. ``version`` is the protocol version
    to answer in when the header could be read (else None: answer in 1.0)."""

    def __init__(
        self, message: str, reason: int = Reason.INVALID_MESSAGE, version: Version | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason
        self.version = version


@dataclass(slots=True)
class RequestHeader:
    version: Version
    batch_count: int
    max_response_size: int | None = None
    asynchronous: bool = False
    batch_error_continuation: int | None = None
    batch_order: bool | None = None
    time_stamp: int | None = None
    has_authentication: bool = False


@dataclass(slots=True)
class RequestItem:
    operation: int
    payload: TTLV | None
    item_id: bytes | None = None
    has_extension: bool = False


@dataclass(slots=True)
class RequestMessage:
    header: RequestHeader
    items: list[RequestItem]


@dataclass(slots=True)
class ResponseItem:
    operation: int | None
    status: int = Status.SUCCESS
    reason: int | None = None
    message: str | None = None
    payload: list[TTLV] | None = None
    item_id: bytes | None = None


def _int(item: TTLV | None, expected_type: int, what: str) -> int | None:
    if item is None:
        return None
    if item.type != expected_type:
        raise MessageError(f"{what} has the wrong type")
    return item.value  # type: ignore[return-value]


def _version_of(node: TTLV | None) -> Version | None:
    if node is None or node.type != ttlv.STRUCTURE:
        return None
    major = node.get(Tag.PROTOCOL_VERSION_MAJOR)
    minor = node.get(Tag.PROTOCOL_VERSION_MINOR)
    if major is None or minor is None or major.type != ttlv.INTEGER or minor.type != ttlv.INTEGER:
        return None
    return major.value, minor.value  # type: ignore[return-value]


def answer_version(requested: Version | None) -> Version:
    """The version to answer in: the requested one when supported, else the closest we speak."""
    if requested is None:
        return (1, 0)
    if requested in _SUPPORTED:
        return requested
    if requested[0] == 1:
        return (1, 4) if requested[1] > 4 else (1, 0)
    return (2, 0) if requested[0] >= 2 else (1, 0)


def decode_request(
    data: bytes,
    *,
    max_size: int = ttlv.DEFAULT_MAX_SIZE,
    max_depth: int = ttlv.DEFAULT_MAX_DEPTH,
    max_items: int = ttlv.DEFAULT_MAX_ITEMS,
) -> RequestMessage:
    """A request message from the network: bounded in size, nesting and number of TTLV items (a message
    over a bound is an Invalid Message, like any other malformed one)."""
    try:
        root = ttlv.decode(data, max_size=max_size, max_depth=max_depth, max_items=max_items)
    except TTLVError as exc:
        raise MessageError(f"malformed TTLV: {exc}") from None
    if root.tag != _T_REQUEST_MESSAGE or root.type != ttlv.STRUCTURE:
        raise MessageError("not a Request Message")
    children = root.value
    if not children or children[0].tag != _T_REQUEST_HEADER or children[0].type != ttlv.STRUCTURE:  # type: ignore[index]
        raise MessageError("the Request Header must come first")
    header_node: TTLV = children[0]  # type: ignore[index]
    requested = _version_of(header_node.get(Tag.PROTOCOL_VERSION))
    if requested is None:
        raise MessageError("the Request Header has no valid Protocol Version")
    version = answer_version(requested)
    if requested not in _SUPPORTED:
        reason = Reason.UNSUPPORTED_PROTOCOL_VERSION if version[0] >= 2 else Reason.INVALID_MESSAGE
        raise MessageError(
            f"protocol version {requested[0]}.{requested[1]} is not supported", reason, version
        )
    try:
        batch_count = _int(header_node.get(Tag.BATCH_COUNT), ttlv.INTEGER, "Batch Count")
        header = RequestHeader(
            version=version,
            batch_count=batch_count if batch_count is not None else -1,
            max_response_size=_int(
                header_node.get(Tag.MAXIMUM_RESPONSE_SIZE), ttlv.INTEGER, "Maximum Response Size"
            ),
            asynchronous=bool(
                _int(header_node.get(Tag.ASYNCHRONOUS_INDICATOR), ttlv.BOOLEAN, "Asynchronous Indicator")
            ),
            batch_error_continuation=_int(
                header_node.get(Tag.BATCH_ERROR_CONTINUATION_OPTION),
                ttlv.ENUMERATION,
                "Batch Error Continuation Option",
            ),
            batch_order=_int(header_node.get(Tag.BATCH_ORDER_OPTION), ttlv.BOOLEAN, "Batch Order Option"),  # type: ignore[arg-type]
            time_stamp=_int(header_node.get(Tag.TIME_STAMP), ttlv.DATE_TIME, "Time Stamp"),
            has_authentication=header_node.get(Tag.AUTHENTICATION) is not None,
        )
        if batch_count is None:
            raise MessageError("the Request Header has no Batch Count")
        continuation = header.batch_error_continuation
        if continuation is not None and continuation not in _CONTINUATIONS:
            raise MessageError(
                f"Batch Error Continuation Option {continuation} is not defined",
                Reason.UNKNOWN_ENUMERATION,  # 1.x: Invalid Field (reason_for)
            )
        items: list[RequestItem] = []
        for node in children[1:]:  # type: ignore[index]
            if node.tag != _T_BATCH_ITEM or node.type != ttlv.STRUCTURE:
                raise MessageError("a Request Message holds a header and Batch Items only")
            operation = payload = item_id = None
            extension = False
            for child in node.value:
                ctag = child.tag
                if ctag == _T_OPERATION:
                    if child.type != ttlv.ENUMERATION or operation is not None:
                        raise MessageError("Operation must be one Enumeration")
                    operation = child.value
                elif ctag == _T_PAYLOAD:
                    if child.type != ttlv.STRUCTURE or payload is not None:
                        raise MessageError("Request Payload must be one Structure")
                    payload = child
                elif ctag == _T_BATCH_ID:
                    if child.type != ttlv.BYTE_STRING:
                        raise MessageError("Unique Batch Item ID must be a Byte String")
                    item_id = child.value
                elif ctag == Tag.MESSAGE_EXTENSION:
                    extension = True
                else:
                    raise MessageError("unexpected field in a Batch Item")
            if operation is None:
                raise MessageError("a Batch Item has no Operation")
            items.append(RequestItem(operation, payload, item_id, extension))
    except MessageError as exc:
        exc.version = version
        raise
    if not items or len(items) != batch_count:
        raise MessageError("Batch Count does not match the Batch Items", version=version)
    if len(items) > 1 and any(item.item_id is None for item in items):
        raise MessageError("every item of a batch needs a Unique Batch Item ID", version=version)
    return RequestMessage(header, items)


def peek_version(data: bytes) -> Version | None:
    """The version to answer a request in, read from its Request Header alone (the rest of the message
    is not decoded); None when that header cannot be read."""
    try:
        head, length = ttlv.HEADER.unpack_from(data, 8)
        if head >> 8 != _T_REQUEST_HEADER or head & 0xFF != ttlv.STRUCTURE:
            return None
        header = ttlv.decode(data[8 : 16 + length], max_size=4096, max_items=64)
    except (TTLVError, struct.error):
        return None
    requested = _version_of(header.get(Tag.PROTOCOL_VERSION))
    return None if requested is None else answer_version(requested)


def protocol_version(version: Version) -> TTLV:
    return ttlv.structure(
        Tag.PROTOCOL_VERSION,
        [
            ttlv.integer(Tag.PROTOCOL_VERSION_MAJOR, version[0]),
            ttlv.integer(Tag.PROTOCOL_VERSION_MINOR, version[1]),
        ],
    )


def reason_for(version: Version, reason: int) -> int:
    """KMIP 1.x defines fewer result reasons than 2.0: map the 2.0-only ones to their 1.x meaning."""
    if version[0] >= 2 or reason in REASONS_1X:
        return reason
    if reason in (Reason.OBJECT_NOT_FOUND,):
        return Reason.ITEM_NOT_FOUND
    if reason in (Reason.WRONG_KEY_LIFECYCLE_STATE, Reason.OBJECT_DESTROYED, Reason.NOT_AUTHORISED):
        return Reason.PERMISSION_DENIED
    if reason in (
        Reason.INVALID_ATTRIBUTE,
        Reason.INVALID_ATTRIBUTE_VALUE,
        Reason.UNSUPPORTED_ATTRIBUTE,
        Reason.ATTRIBUTE_NOT_FOUND,
        Reason.ATTRIBUTE_INSTANCE_NOT_FOUND,
        Reason.ATTRIBUTE_READ_ONLY,
        Reason.READ_ONLY_ATTRIBUTE,
        Reason.ATTRIBUTE_SINGLE_VALUED,
        Reason.MULTI_VALUED_ATTRIBUTE,
        Reason.BAD_CRYPTOGRAPHIC_PARAMETERS,
        Reason.UNSUPPORTED_CRYPTOGRAPHIC_PARAMETERS,
        Reason.INVALID_OBJECT_TYPE,
        Reason.ILLEGAL_OBJECT_TYPE,
        Reason.MISSING_INITIALIZATION_VECTOR,
        Reason.INCOMPATIBLE_CRYPTOGRAPHIC_USAGE_MASK,
        Reason.NON_UNIQUE_NAME_ATTRIBUTE,
        Reason.INVALID_DATA_TYPE,
        Reason.UNKNOWN_ENUMERATION,
        Reason.UNKNOWN_TAG,
    ):
        return Reason.INVALID_FIELD
    if reason in (Reason.KEY_WRAP_TYPE_NOT_SUPPORTED, Reason.UNSUPPORTED_PROTOCOL_VERSION):
        return Reason.FEATURE_NOT_SUPPORTED
    if reason in (Reason.WRAPPING_OBJECT_NOT_FOUND,):
        return Reason.ITEM_NOT_FOUND
    if reason == Reason.SERVER_LIMIT_EXCEEDED:
        return Reason.PERMISSION_DENIED
    return Reason.GENERAL_FAILURE


def encode_response(version: Version, items: list[ResponseItem], time_stamp: int) -> bytes:
    header = ttlv.structure(
        Tag.RESPONSE_HEADER,
        [
            protocol_version(version),
            ttlv.date_time(Tag.TIME_STAMP, time_stamp),
            ttlv.integer(Tag.BATCH_COUNT, len(items)),
        ],
    )
    nodes = [header]
    for item in items:
        children: list[TTLV] = []
        if item.operation is not None:
            children.append(ttlv.enumeration(Tag.OPERATION, item.operation))
        if item.item_id is not None:
            children.append(ttlv.byte_string(Tag.UNIQUE_BATCH_ITEM_ID, item.item_id))
        children.append(ttlv.enumeration(Tag.RESULT_STATUS, item.status))
        if item.status != Status.SUCCESS:
            children.append(
                ttlv.enumeration(
                    Tag.RESULT_REASON, reason_for(version, item.reason or Reason.GENERAL_FAILURE)
                )
            )
            if item.message:
                children.append(ttlv.text(Tag.RESULT_MESSAGE, item.message))
        if item.payload is not None:
            children.append(ttlv.structure(Tag.RESPONSE_PAYLOAD, item.payload))
        nodes.append(ttlv.structure(Tag.BATCH_ITEM, children))
    return ttlv.encode(ttlv.structure(Tag.RESPONSE_MESSAGE, nodes))


def error_response(exc: MessageError, time_stamp: int) -> bytes:
    """The answer to a message that could not be read: one failed item without an operation."""
    version = exc.version or (1, 0)
    item = ResponseItem(None, Status.OPERATION_FAILED, exc.reason, exc.message)
    return encode_response(version, [item], time_stamp)
