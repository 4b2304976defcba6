"""Attribute edits shared by Add/Modify/Delete/Set Attribute: which attributes a client may change,
single- versus multi-valued rules, and keeping the Name index of the object in step."""

from __future__ import annotations

from typing import Any

from openkcm.domain.objects import Attributes, ManagedObject
from openkcm.kmip.attributes import SPECS, is_custom
from openkcm.kmip.context import RequestContext
from openkcm.kmip.errors import KmipError
from openkcm.kmip.lifecycle import MAX_INSTANCES, check_size, names_of, now
from openkcm.protocol.tags import Reason


def settable(name: str) -> None:
    spec = SPECS.get(name)
    if is_custom(name):
        if name.startswith("y-"):
            raise KmipError(Reason.ATTRIBUTE_READ_ONLY, "y- attributes belong to the server")
        return
    if spec is None:
        raise KmipError(Reason.UNSUPPORTED_ATTRIBUTE, "attribute not supported")
    if not spec.client_settable:
        raise KmipError(Reason.ATTRIBUTE_READ_ONLY, f"{name} cannot be changed by a client")


def multi(name: str) -> bool:
    spec = SPECS.get(name)
    return spec.multi if spec is not None else True


def copy_attributes(obj: ManagedObject) -> Attributes:
    return {k: list(v) for k, v in obj.attributes.items()}


def save(ctx: RequestContext, obj: ManagedObject, attributes: Attributes) -> ManagedObject:
    check_size(attributes)
    attributes["Last Change Date"] = [now(ctx)]
    return ctx.services.store.update(obj, attributes=attributes, names=names_of(attributes))


def add(attributes: Attributes, name: str, value: Any) -> int:
    values = attributes.setdefault(name, [])
    if values and not multi(name):
        raise KmipError(Reason.ATTRIBUTE_SINGLE_VALUED, f"{name} is single-valued and set already")
    if len(values) >= MAX_INSTANCES:
        raise KmipError(Reason.INVALID_ATTRIBUTE_VALUE, "too many instances")
    values.append(value)
    return len(values) - 1


def instance_index(attributes: Attributes, name: str, index: int | None, current: Any = None) -> int:
    values = attributes.get(name) or []
    if current is not None:
        if current not in values:
            raise KmipError(Reason.ATTRIBUTE_NOT_FOUND, "no such attribute instance")
        return values.index(current)
    index = index or 0
    if not 0 <= index < len(values):
        raise KmipError(Reason.ATTRIBUTE_NOT_FOUND, "no such attribute instance")
    return index
