"""What an operation is given: a frozen request context, the batch's scratch state, and its result."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from openkcm.protocol.ttlv import TTLV

if TYPE_CHECKING:
    from openkcm.kmip.core import KmipServices

Version = tuple[int, int]


@dataclass(frozen=True, slots=True)
class RequestContext:
    """One request message of one authenticated client. Never mutated; no request state elsewhere."""

    tenant_id: str
    service_id: str
    subject: str
    serial_hex: str
    client_address: str
    version: Version
    request_id: str
    services: KmipServices

    @property
    def v2(self) -> bool:
        return self.version[0] >= 2

    def at_least(self, major: int, minor: int) -> bool:
        return self.version >= (major, minor)


@dataclass(slots=True)
class BatchState:
    """Scratch state of ONE request's batch: the ID placeholder (spec 3.1 of the usage guide: it lives
    for the batch only, never across requests or connections) and cross-tenant notes for the audit."""

    placeholder: str | None = None
    cross_tenant: list[str] = field(default_factory=list)
    # The tenant's objects as Locate last read them in this batch: a message may hold dozens of Locates
    # and each read the whole partition. Dropped after any item that may change an object.
    listing: list[Any] | None = None


@dataclass(slots=True)
class Outcome:
    payload: list[TTLV]
    object_id: str = ""
    l2_version: int = 0
