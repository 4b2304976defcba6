"""A lean TTLV codec (KMIP 1.0-2.0, "Key Management Interoperability Protocol Specification", 9.1).

Every item is ``tag (3 bytes) | type (1 byte) | length (4 bytes, big endian) | value | padding to 8``.
The decoder is strict because it faces the network:
- the declared length of every primitive must be the one its type defines (Integer/Enumeration/Interval
  4, Long Integer/Boolean/Date-Time 8, Big Integer a multiple of 8) and padding bytes must be zero;
- a Structure's length must be covered exactly by its children; the message must end where its outer
  item says; Boolean values are 0 or 1; Text Strings are UTF-8;
- tags are KMIP tags (0x42xxxx) or extension tags (0x54xxxx);
- ``max_size`` bounds the message, ``max_items`` the number of items in it and ``max_depth`` the nesting,
  so a hostile message costs bounded work and recursion: decoding costs ~1 us of Python and a few
  objects per item, so 1 MiB of empty items (8 bytes each) would be ~130 ms of one core and 131,071
  objects (garbage-collector pressure) without the item bound, which is checked before any is built;
- Big Integers are minimal (no leading 8-byte block that only repeats the sign of the next byte), so
  whatever is accepted re-encodes to the same bytes.

Items are small ``__slots__`` objects; a Structure's value is a list of items. This is deliberately not
PyKMIP's object model: the hot path decodes a Get in a few microseconds.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable

STRUCTURE = 0x01
INTEGER = 0x02
LONG_INTEGER = 0x03
BIG_INTEGER = 0x04
ENUMERATION = 0x05
BOOLEAN = 0x06
TEXT_STRING = 0x07
BYTE_STRING = 0x08
DATE_TIME = 0x09
INTERVAL = 0x0A

TYPE_NAMES = {
    STRUCTURE: "Structure",
    INTEGER: "Integer",
    LONG_INTEGER: "LongInteger",
    BIG_INTEGER: "BigInteger",
    ENUMERATION: "Enumeration",
    BOOLEAN: "Boolean",
    TEXT_STRING: "TextString",
    BYTE_STRING: "ByteString",
    DATE_TIME: "DateTime",
    INTERVAL: "Interval",
}

DEFAULT_MAX_SIZE = 1 << 20
DEFAULT_MAX_DEPTH = 16
DEFAULT_MAX_ITEMS = 4096  # the test suite sends <= 400; 64 Registers with 8 attributes each ~2,400
HEADER = struct.Struct(">II")
_I32 = struct.Struct(">i")
_U32 = struct.Struct(">I")
_I64 = struct.Struct(">q")
_ZERO = bytes(8)


class TTLVError(ValueError):
    """The bytes are not well-formed TTLV (or exceed a limit)."""


class TTLV:
    """One TTLV item. ``value`` is int/bool/str/bytes, or a list of TTLV for a Structure."""

    __slots__ = ("tag", "type", "value")

    def __init__(self, tag: int, type_: int, value: object) -> None:
        self.tag = tag
        self.type = type_
        self.value = value

    def __repr__(self) -> str:
        return f"TTLV(0x{self.tag:06x}, {TYPE_NAMES.get(self.type, self.type)}, {self.value!r})"

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, TTLV)
            and self.tag == other.tag
            and self.type == other.type
            and self.value == other.value
        )

    __hash__ = None  # type: ignore[assignment]

    # ---- structure helpers ---------------------------------------------------------------------
    def get(self, tag: int) -> TTLV | None:
        """The first child with ``tag`` (None when absent or this is not a Structure)."""
        if self.type != STRUCTURE:
            return None
        for child in self.value:  # type: ignore[union-attr]
            if child.tag == tag:
                return child
        return None

    def all(self, tag: int) -> list[TTLV]:
        if self.type != STRUCTURE:
            return []
        return [child for child in self.value if child.tag == tag]  # type: ignore[union-attr]

    def child_value(self, tag: int, default: object = None) -> object:
        child = self.get(tag)
        return default if child is None else child.value

    @property
    def children(self) -> list[TTLV]:
        return self.value if self.type == STRUCTURE else []  # type: ignore[return-value]


# ---- constructors ------------------------------------------------------------------------------
def structure(tag: int, children: Iterable[TTLV]) -> TTLV:
    return TTLV(tag, STRUCTURE, [c for c in children if c is not None])


def integer(tag: int, value: int) -> TTLV:
    return TTLV(tag, INTEGER, int(value))


def long_integer(tag: int, value: int) -> TTLV:
    return TTLV(tag, LONG_INTEGER, int(value))


def big_integer(tag: int, value: int) -> TTLV:
    return TTLV(tag, BIG_INTEGER, int(value))


def enumeration(tag: int, value: int) -> TTLV:
    return TTLV(tag, ENUMERATION, int(value))


def boolean(tag: int, value: bool) -> TTLV:
    return TTLV(tag, BOOLEAN, bool(value))


def text(tag: int, value: str) -> TTLV:
    return TTLV(tag, TEXT_STRING, value)


def byte_string(tag: int, value: bytes) -> TTLV:
    return TTLV(tag, BYTE_STRING, bytes(value))


def date_time(tag: int, value: int) -> TTLV:
    return TTLV(tag, DATE_TIME, int(value))


def interval(tag: int, value: int) -> TTLV:
    return TTLV(tag, INTERVAL, int(value))


# ---- encoding ----------------------------------------------------------------------------------
def _pad(n: int) -> int:
    return (8 - n % 8) % 8


def _encode_into(item: TTLV, out: list[bytes]) -> int:
    """Append the encoding of ``item`` to ``out``; return the number of bytes appended."""
    t = item.type
    head = (item.tag << 8) | t
    if t == STRUCTURE:
        index = len(out)
        out.append(b"")
        length = 0
        for child in item.value:  # type: ignore[union-attr]
            length += _encode_into(child, out)
        out[index] = HEADER.pack(head, length)
        return 8 + length
    if t in (INTEGER, ENUMERATION, INTERVAL):
        v = item.value
        if t == INTEGER:
            if not -(1 << 31) <= v < (1 << 31):  # type: ignore[operator]
                raise TTLVError("Integer out of range")
            body = _I32.pack(v)
        else:
            if not 0 <= v < (1 << 32):  # type: ignore[operator]
                raise TTLVError("Enumeration/Interval out of range")
            body = _U32.pack(v)
        out.append(HEADER.pack(head, 4) + body + b"\x00\x00\x00\x00")
        return 16
    if t in (LONG_INTEGER, DATE_TIME):
        out.append(HEADER.pack(head, 8) + _I64.pack(item.value))
        return 16
    if t == BOOLEAN:
        out.append(HEADER.pack(head, 8) + (b"\x00" * 7) + (b"\x01" if item.value else b"\x00"))
        return 16
    if t in (TEXT_STRING, BYTE_STRING):
        body = item.value.encode("utf-8") if t == TEXT_STRING else item.value  # type: ignore[union-attr]
        n = len(body)  # type: ignore[arg-type]
        out.append(HEADER.pack(head, n) + body + _ZERO[: _pad(n)])  # type: ignore[operator]
        return 8 + n + _pad(n)
    if t == BIG_INTEGER:
        v = int(item.value)  # type: ignore[call-overload]
        magnitude = v if v >= 0 else ~v  # minimal two's complement: -2**63 fits 8 bytes, 2**63 does not
        n = max(8, ((magnitude.bit_length() + 8) // 8 + 7) // 8 * 8)
        out.append(HEADER.pack(head, n) + v.to_bytes(n, "big", signed=True))
        return 8 + n
    raise TTLVError(f"unknown item type {t}")


def encode(item: TTLV) -> bytes:
    out: list[bytes] = []
    _encode_into(item, out)
    return b"".join(out)


# ---- decoding ----------------------------------------------------------------------------------
def _valid_tag(tag: int) -> bool:
    high = tag >> 16
    return high == 0x42 or high == 0x54


def _decode_items(buf: bytes, pos: int, end: int, depth: int, max_depth: int) -> list[TTLV]:
    items: list[TTLV] = []
    unpack = HEADER.unpack_from
    while pos < end:
        if end - pos < 8:
            raise TTLVError("truncated item header")
        head, length = unpack(buf, pos)
        tag, t = head >> 8, head & 0xFF
        if not _valid_tag(tag):
            raise TTLVError(f"invalid tag 0x{tag:06x}")
        pos += 8
        if t == STRUCTURE:
            if length % 8 or pos + length > end:
                raise TTLVError("structure length is not a multiple of 8 or overruns its parent")
            if depth + 1 > max_depth:
                raise TTLVError("nesting too deep")
            value: object = _decode_items(buf, pos, pos + length, depth + 1, max_depth)
            pos += length
        elif t in (INTEGER, ENUMERATION, INTERVAL):
            if length != 4 or pos + 8 > end:
                raise TTLVError("4-byte primitive with wrong length")
            if buf[pos + 4 : pos + 8] != b"\x00\x00\x00\x00":
                raise TTLVError("non-zero padding")
            value = (_I32 if t == INTEGER else _U32).unpack_from(buf, pos)[0]
            pos += 8
        elif t in (LONG_INTEGER, DATE_TIME):
            if length != 8 or pos + 8 > end:
                raise TTLVError("8-byte primitive with wrong length")
            value = _I64.unpack_from(buf, pos)[0]
            pos += 8
        elif t == BOOLEAN:
            if length != 8 or pos + 8 > end:
                raise TTLVError("Boolean with wrong length")
            raw = _I64.unpack_from(buf, pos)[0]
            if raw not in (0, 1):
                raise TTLVError("Boolean value is neither 0 nor 1")
            value = raw == 1
            pos += 8
        elif t in (TEXT_STRING, BYTE_STRING):
            padded = length + _pad(length)
            if pos + padded > end:
                raise TTLVError("string overruns its parent")
            data = buf[pos : pos + length]
            if buf[pos + length : pos + padded].count(0) != padded - length:
                raise TTLVError("non-zero padding")
            if t == TEXT_STRING:
                try:
                    value = data.decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise TTLVError("Text String is not UTF-8") from exc
            else:
                value = bytes(data)
            pos += padded
        elif t == BIG_INTEGER:
            if length == 0 or length % 8 or pos + length > end:
                raise TTLVError("Big Integer length must be a non-zero multiple of 8")
            if length > 8 and buf[pos : pos + 8] == (b"\xff" * 8 if buf[pos + 8] & 0x80 else _ZERO):
                raise TTLVError("Big Integer is not minimally encoded")  # a block of sign extension only
            value = int.from_bytes(buf[pos : pos + length], "big", signed=True)
            pos += length
        else:
            raise TTLVError(f"unknown item type 0x{t:02x}")
        items.append(TTLV(tag, t, value))
    if pos != end:
        raise TTLVError("item overruns its parent")
    return items


def _count_items(buf: bytes, end: int, limit: int) -> None:
    """Refuse a message of more than ``limit`` items before building any: one linear walk over the item
    headers (a Structure's children follow its header), no allocation that could outlive it. Lengths are
    not checked here; the decoder does that."""
    unpack = HEADER.unpack_from
    pos = count = 0
    while pos + 8 <= end:
        count += 1
        if count > limit:
            raise TTLVError(f"too many items in one message (the limit is {limit})")
        head, length = unpack(buf, pos)
        pos += 8 if head & 0xFF == STRUCTURE else 8 + length + (-length & 7)


def message_length(header: bytes) -> int:
    """Total length of a message from its first 8 bytes (for stream framing)."""
    if len(header) < 8:
        raise TTLVError("truncated message header")
    head, length = HEADER.unpack_from(header, 0)
    if head & 0xFF != STRUCTURE or not _valid_tag(head >> 8):
        raise TTLVError("a KMIP message is a Structure")
    if length % 8:
        raise TTLVError("message length is not a multiple of 8")
    return 8 + length


def decode(
    data: bytes,
    *,
    max_size: int = DEFAULT_MAX_SIZE,
    max_depth: int = DEFAULT_MAX_DEPTH,
    max_items: int | None = None,
) -> TTLV:
    """Decode exactly one item that spans all of ``data``; ``max_items`` bounds the items it may hold
    (requests from the network: :func:`openkcm.protocol.messages.decode_request`)."""
    n = len(data)
    if n > max_size:
        raise TTLVError(f"message larger than {max_size} bytes")
    if n < 8:
        raise TTLVError("truncated message")
    buf = bytes(data)
    if max_items is not None and n > 8 * max_items:  # shorter messages cannot hold more (8 bytes an item)
        _count_items(buf, n, max_items)
    items = _decode_items(buf, 0, n, 0, max_depth)
    if len(items) != 1:
        raise TTLVError("trailing bytes after the message")
    return items[0]
