"""KMIP attributes: one table of what we support, how each is encoded, and since which version.

Internal values are JSON-friendly (ints, bools, strings, small dicts) and every attribute is a list of
instances (single-valued ones hold one). On the wire:
- KMIP 1.x: ``Attribute {Attribute Name, [Attribute Index], Attribute Value}``, custom names ``x-``/``y-``;
- KMIP 2.0: the attribute itself under its own tag inside ``Attributes``.
Replies only ever carry attributes the client's version defines (``since``/``until``): a 1.0 client never
sees a 1.1+ attribute (the Percona Server for MongoDB failure).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from openkcm.domain.objects import ManagedObject
from openkcm.kmip.errors import KmipError
from openkcm.protocol import ttlv
from openkcm.protocol.tags import OBJECT_TYPE_NAMES, STATE_VALUES, ObjectType, Reason, Tag
from openkcm.protocol.ttlv import TTLV

Version = tuple[int, int]

# Internal kinds of value.
SCALAR, NAME, LINK, REVOCATION = "scalar", "name", "link", "revocation"


@dataclass(frozen=True, slots=True)
class AttrSpec:
    name: str
    tag: int
    type: int
    kind: str = SCALAR
    multi: bool = False
    client_settable: bool = False  # may a client set/modify/delete it after creation
    on_create: bool = False  # may a client supply it in Create/Register templates
    since: Version = (1, 0)
    until: Version = (9, 9)


_SPECS = [
    AttrSpec("Unique Identifier", Tag.UNIQUE_IDENTIFIER, ttlv.TEXT_STRING),
    AttrSpec("Name", Tag.NAME, ttlv.STRUCTURE, NAME, multi=True, client_settable=True, on_create=True),
    AttrSpec("Object Type", Tag.OBJECT_TYPE, ttlv.ENUMERATION),
    AttrSpec("Cryptographic Algorithm", Tag.CRYPTOGRAPHIC_ALGORITHM, ttlv.ENUMERATION, on_create=True),
    AttrSpec("Cryptographic Length", Tag.CRYPTOGRAPHIC_LENGTH, ttlv.INTEGER, on_create=True),
    AttrSpec("Cryptographic Usage Mask", Tag.CRYPTOGRAPHIC_USAGE_MASK, ttlv.INTEGER, on_create=True),
    AttrSpec("State", Tag.STATE, ttlv.ENUMERATION),
    AttrSpec("Initial Date", Tag.INITIAL_DATE, ttlv.DATE_TIME),
    AttrSpec("Activation Date", Tag.ACTIVATION_DATE, ttlv.DATE_TIME),
    AttrSpec("Deactivation Date", Tag.DEACTIVATION_DATE, ttlv.DATE_TIME),
    AttrSpec("Destroy Date", Tag.DESTROY_DATE, ttlv.DATE_TIME),
    AttrSpec("Compromise Occurrence Date", Tag.COMPROMISE_OCCURRENCE_DATE, ttlv.DATE_TIME),
    AttrSpec("Compromise Date", Tag.COMPROMISE_DATE, ttlv.DATE_TIME),
    AttrSpec("Revocation Reason", Tag.REVOCATION_REASON, ttlv.STRUCTURE, REVOCATION),
    AttrSpec(
        "Object Group", Tag.OBJECT_GROUP, ttlv.TEXT_STRING, multi=True, client_settable=True, on_create=True
    ),
    AttrSpec("Link", Tag.LINK, ttlv.STRUCTURE, LINK, multi=True),
    AttrSpec(
        "Contact Information", Tag.CONTACT_INFORMATION, ttlv.TEXT_STRING, client_settable=True, on_create=True
    ),
    AttrSpec("Last Change Date", Tag.LAST_CHANGE_DATE, ttlv.DATE_TIME),
    AttrSpec("Original Creation Date", Tag.ORIGINAL_CREATION_DATE, ttlv.DATE_TIME, since=(1, 2)),
]
SPECS: dict[str, AttrSpec] = {s.name: s for s in _SPECS}
SPECS_BY_TAG: dict[int, AttrSpec] = {s.tag: s for s in _SPECS}
CUSTOM_TYPES = frozenset(
    {
        ttlv.INTEGER,
        ttlv.LONG_INTEGER,
        ttlv.ENUMERATION,
        ttlv.BOOLEAN,
        ttlv.TEXT_STRING,
        ttlv.BYTE_STRING,
        ttlv.DATE_TIME,
        ttlv.INTERVAL,
    }
)


def defined_in(spec: AttrSpec, version: Version) -> bool:
    return spec.since <= version <= spec.until


def is_custom(name: str) -> bool:
    return name.startswith(("x-", "y-")) and 2 < len(name) <= 128


# ---- decoding (requests) -----------------------------------------------------------------------
def _bad(message: str, reason: int = Reason.INVALID_FIELD) -> KmipError:
    return KmipError(reason, message)


def decode_value(spec: AttrSpec, node: TTLV) -> Any:
    if node.type != spec.type:
        raise _bad(f"{spec.name} has the wrong type", Reason.INVALID_ATTRIBUTE_VALUE)
    if spec.kind == SCALAR:
        if spec.type == ttlv.TEXT_STRING and len(node.value) > 1024:  # type: ignore[arg-type]
            raise _bad(f"{spec.name} is too long", Reason.INVALID_ATTRIBUTE_VALUE)
        return node.value
    if spec.kind == NAME:
        value, kind = node.get(Tag.NAME_VALUE), node.get(Tag.NAME_TYPE)
        if value is None or value.type != ttlv.TEXT_STRING or not value.value or len(value.value) > 512:  # type: ignore[arg-type]
            raise _bad("Name needs a Name Value", Reason.INVALID_ATTRIBUTE_VALUE)
        name_type = kind.value if kind is not None and kind.type == ttlv.ENUMERATION else 1
        return {"v": value.value, "t": name_type}
    if spec.kind == LINK:
        link_type, linked = node.get(Tag.LINK_TYPE), node.get(Tag.LINKED_OBJECT_IDENTIFIER)
        if link_type is None or linked is None or linked.type != ttlv.TEXT_STRING:
            raise _bad("Link needs Link Type and Linked Object Identifier", Reason.INVALID_ATTRIBUTE_VALUE)
        return {"t": link_type.value, "id": linked.value}
    if spec.kind == REVOCATION:
        code, message = node.get(Tag.REVOCATION_REASON_CODE), node.get(Tag.REVOCATION_MESSAGE)
        if code is None or code.type != ttlv.ENUMERATION:
            raise _bad("Revocation Reason needs a code", Reason.INVALID_ATTRIBUTE_VALUE)
        text = message.value if message is not None and message.type == ttlv.TEXT_STRING else ""
        return {"c": code.value, "m": str(text)[:256]}
    raise _bad("unsupported attribute", Reason.UNSUPPORTED_ATTRIBUTE)


def decode_custom(node: TTLV) -> dict[str, Any]:
    if node.type not in CUSTOM_TYPES:
        raise _bad("custom attributes hold primitive values", Reason.INVALID_ATTRIBUTE_VALUE)
    value = node.value.hex() if node.type == ttlv.BYTE_STRING else node.value  # type: ignore[union-attr]
    if isinstance(value, str) and len(value) > 2048:
        raise _bad("custom attribute value too long", Reason.INVALID_ATTRIBUTE_VALUE)
    return {"ty": node.type, "v": value}


def decode_attribute_1x(node: TTLV) -> tuple[str, int | None, Any]:
    """``Attribute`` structure (1.x) -> (name, index or None, internal value)."""
    if node.tag != Tag.ATTRIBUTE or node.type != ttlv.STRUCTURE:
        raise _bad("expected an Attribute")
    name_node, index_node, value_node = (
        node.get(Tag.ATTRIBUTE_NAME),
        node.get(Tag.ATTRIBUTE_INDEX),
        node.get(Tag.ATTRIBUTE_VALUE),
    )
    if name_node is None or name_node.type != ttlv.TEXT_STRING:
        raise _bad("Attribute needs an Attribute Name")
    name: str = name_node.value  # type: ignore[assignment]
    index = index_node.value if index_node is not None and index_node.type == ttlv.INTEGER else None
    if value_node is None:
        return name, index, None  # allowed in Delete Attribute
    if is_custom(name):
        return name, index, decode_custom(value_node)
    spec = SPECS.get(name)
    if spec is None:
        raise _bad(f"attribute {name[:64]!r} is not supported", Reason.UNSUPPORTED_ATTRIBUTE)
    return name, index, decode_value(spec, value_node)


def decode_attribute_2x(node: TTLV) -> tuple[str, Any]:
    spec = SPECS_BY_TAG.get(node.tag)
    if spec is None:
        raise _bad("attribute not supported", Reason.UNSUPPORTED_ATTRIBUTE)
    return spec.name, decode_value(spec, node)


def reference_name(node: TTLV) -> str:
    """2.0 Attribute Reference (an enumeration of the attribute's tag) -> attribute name."""
    if node.type == ttlv.ENUMERATION and node.value in SPECS_BY_TAG:
        return SPECS_BY_TAG[node.value].name  # type: ignore[index]
    if node.type == ttlv.STRUCTURE:  # {Vendor Identification, Attribute Name}: standard names only
        name = node.child_value(Tag.ATTRIBUTE_NAME)
        vendor = node.child_value(Tag.VENDOR_IDENTIFICATION, "")
        if not vendor and isinstance(name, str) and name in SPECS:
            return name
    raise _bad("attribute reference not supported", Reason.UNSUPPORTED_ATTRIBUTE)


def template_attributes(version: Version, payload: TTLV) -> list[tuple[str, Any]]:
    """Attributes a client supplies with Create/Register/Derive Key/ReKey: 1.x Template-Attribute, 2.0
    Attributes. Name-referenced templates (1.x) are not supported."""
    pairs: list[tuple[str, Any]] = []
    if version[0] >= 2:
        node = payload.get(Tag.ATTRIBUTES)
        if node is not None:
            if node.type != ttlv.STRUCTURE:
                raise _bad("Attributes must be a Structure")
            pairs.extend(decode_attribute_2x(child) for child in node.children)
        return pairs
    for tag in (Tag.TEMPLATE_ATTRIBUTE, Tag.COMMON_TEMPLATE_ATTRIBUTE):
        for node in payload.all(tag):
            if node.type != ttlv.STRUCTURE:
                raise _bad("Template-Attribute must be a Structure")
            for child in node.children:
                if child.tag == Tag.NAME:
                    raise _bad("named templates are not supported", Reason.FEATURE_NOT_SUPPORTED)
                name, _, value = decode_attribute_1x(child)
                if value is None:
                    raise _bad("Attribute needs an Attribute Value")
                pairs.append((name, value))
    return pairs


# ---- encoding (responses) ----------------------------------------------------------------------
def _encode_value(spec_tag: int, spec: AttrSpec | None, value: Any) -> TTLV:
    if spec is None:  # custom
        raw = bytes.fromhex(value["v"]) if value["ty"] == ttlv.BYTE_STRING else value["v"]
        return TTLV(spec_tag, value["ty"], raw)
    if spec.kind == NAME:
        return ttlv.structure(
            spec_tag, [ttlv.text(Tag.NAME_VALUE, value["v"]), ttlv.enumeration(Tag.NAME_TYPE, value["t"])]
        )
    if spec.kind == LINK:
        return ttlv.structure(
            spec_tag,
            [
                ttlv.enumeration(Tag.LINK_TYPE, value["t"]),
                ttlv.text(Tag.LINKED_OBJECT_IDENTIFIER, value["id"]),
            ],
        )
    if spec.kind == REVOCATION:
        children = [ttlv.enumeration(Tag.REVOCATION_REASON_CODE, value["c"])]
        if value.get("m"):
            children.append(ttlv.text(Tag.REVOCATION_MESSAGE, value["m"]))
        return ttlv.structure(spec_tag, children)
    return TTLV(spec_tag, spec.type, value)


def encode_attribute(version: Version, name: str, value: Any, index: int = 0) -> TTLV:
    spec = SPECS.get(name)
    if version[0] >= 2:
        assert spec is not None
        return _encode_value(spec.tag, spec, value)
    children = [ttlv.text(Tag.ATTRIBUTE_NAME, name)]
    if index:
        children.append(ttlv.integer(Tag.ATTRIBUTE_INDEX, index))
    children.append(_encode_value(Tag.ATTRIBUTE_VALUE, spec, value))
    return ttlv.structure(Tag.ATTRIBUTE, children)


def visible(version: Version, name: str) -> bool:
    """Whether a client speaking ``version`` may see attribute ``name`` at all."""
    if name.startswith("_"):
        return False
    if is_custom(name):
        return version[0] < 2  # 2.0 replaced custom attributes with vendor attributes
    spec = SPECS.get(name)
    return spec is not None and defined_in(spec, version)


def object_attributes(obj: ManagedObject) -> list[tuple[str, list[Any]]]:
    """Every attribute of an object, server-managed ones included, in a stable order."""
    managed: list[tuple[str, list[Any]]] = [
        ("Unique Identifier", [obj.object_id]),
        ("Object Type", [getattr(ObjectType, obj.object_type)]),
        ("State", [STATE_VALUES[obj.state]]),
    ]
    ordered = [(name, obj.attributes[name]) for name in SPECS if name in obj.attributes]
    custom = [(name, values) for name, values in sorted(obj.attributes.items()) if is_custom(name)]
    return managed + ordered + custom


def encode_object_attributes(
    version: Version, obj: ManagedObject, names: Iterable[str] | None = None
) -> list[TTLV]:
    wanted = None if names is None else set(names)
    nodes: list[TTLV] = []
    for name, values in object_attributes(obj):
        if wanted is not None and name not in wanted:
            continue
        if not visible(version, name):
            continue
        for index, value in enumerate(values):
            nodes.append(encode_attribute(version, name, value, index))
    return nodes


def object_type_name(value: int) -> str:
    name = OBJECT_TYPE_NAMES.get(value)
    if name is None:
        raise _bad("unknown Object Type", Reason.INVALID_FIELD)
    return name
