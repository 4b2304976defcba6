"""The audit event schema (DECISIONS 4): identifiers, names and reasons only — never key material.

An event says who (actor: certificate subject / token subject / function; actor_role: KMIP service id,
API role or schedule), from where (source, client address, request id), what (operation, object id) and
which part of the key chain it touched (``l1_ref`` -> ``l2_version`` -> ``object_id``), with its result.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from json.encoder import encode_basestring  # the C string encoder json.dumps(ensure_ascii=False) uses
from typing import Any, ClassVar

from openkcm.errors import InvalidRequest

SCHEMA_VERSION = 1
KINDS = frozenset({"operation", "security", "config", "lifecycle"})
RESULTS = frozenset({"success", "denied", "failure"})
_MAX_FIELD = 512
# Defence in depth against a caller passing a secret by mistake: PEM blocks and long base64/hex runs
# (a wrapped 32-byte key is >= 88 base64 characters) are refused. Identifiers, ARNs, SHA-256 hex digests
# (64 characters) and certificate subjects stay well below the threshold.
_PEM = re.compile(r"-----BEGIN|PRIVATE KEY")
_RUN = re.compile(r"[A-Za-z0-9+/=_-]{80,}")
_HEX = re.compile(r"^[0-9a-fA-F]+\Z")


@dataclass(frozen=True, slots=True)
class AuditEvent:
    tenant_id: str
    source: str  # kmip | api | provision | rotate | keystore | cli | webhook
    operation: str
    result: str = "success"
    kind: str = "operation"
    actor: str = ""  # certificate subject, token subject, or function name
    actor_role: str = ""  # KMIP service id, API role, or schedule name
    account_id: str = ""
    object_id: str = ""  # the L3 object (KMIP unique identifier) when one was touched
    reason: str = ""
    l1_ref: str = ""  # the L1 key (or internal root key version) that wraps the L2 used
    l2_version: int = 0
    request_id: str = ""
    client_address: str = ""
    details: Mapping[str, str] = field(default_factory=dict)
    event_id: str = field(default_factory=lambda: new_event_id())
    time: str = ""
    v: ClassVar[int] = SCHEMA_VERSION  # stored with every record (not a constructor argument)

    def __post_init__(self) -> None:
        if self.kind not in KINDS or self.result not in RESULTS:
            raise InvalidRequest(f"audit kind/result must be one of {sorted(KINDS)} / {sorted(RESULTS)}")
        if not self.tenant_id or not self.operation:
            raise InvalidRequest("audit events name a tenant and an operation")
        # One pass for the common case (every field a short string): PEM markers are looked for in all of
        # them at once; only long or odd values get the full per-field check. Same rules, ~half the cost
        # on the hot path of every KMIP request.
        values = [getattr(self, name) for name in _TEXT_FIELDS]
        try:
            joined = "\x00".join(values)
        except TypeError:
            joined = ""
            for name, value in zip(_TEXT_FIELDS, values, strict=True):
                _check_text(name, value)
        for name, value in zip(_TEXT_FIELDS, values, strict=True):
            if len(value) >= 80:
                _check_text(name, value)
        if "-----BEGIN" in joined or "PRIVATE KEY" in joined:
            for name, value in zip(_TEXT_FIELDS, values, strict=True):
                _check_text(name, value)  # names the field
        if not isinstance(self.l2_version, int) or isinstance(self.l2_version, bool):
            raise InvalidRequest("audit l2_version must be an integer")
        for name, value in self.details.items():
            if not isinstance(value, str):
                raise InvalidRequest(f"audit detail {name!r} must be a string")
            _check_text(f"details.{name}", value)

    def to_record(self) -> dict[str, Any]:
        """The stored form, keys in sorted order (so :func:`encode_record` need not sort them)."""
        # Not dataclasses.asdict: its deep copy cost ~300 us per event, the hot path of every KMIP request.
        record = {name: getattr(self, name) for name in _RECORD_KEYS}
        record["details"] = dict(sorted(self.details.items()))
        return record


_TEXT_FIELDS = (
    "tenant_id",
    "source",
    "operation",
    "actor",
    "actor_role",
    "account_id",
    "object_id",
    "reason",
    "l1_ref",
    "request_id",
    "client_address",
)
_RECORD_KEYS = tuple(sorted([f.name for f in fields(AuditEvent)] + ["v"]))


def _check_text(name: str, value: object) -> None:
    if not isinstance(value, str) or len(value) > _MAX_FIELD:
        raise InvalidRequest(f"audit field {name!r} must be a string of at most {_MAX_FIELD} characters")
    # Short values (identifiers, names, addresses: nearly every field of every KMIP event) cannot hold a
    # run of 80 and are checked for a PEM marker only; this check ran on the hot path of each request.
    if len(value) < 80:
        if "-----BEGIN" in value or "PRIVATE KEY" in value:
            raise InvalidRequest(f"audit field {name!r} looks like key material or a secret; refused")
        return
    if _PEM.search(value) or any(_looks_encoded(run) for run in _RUN.findall(value)):
        raise InvalidRequest(f"audit field {name!r} looks like key material or a secret; refused")


def acceptable_text(value: object) -> bool:
    """Whether an event may hold ``value`` in a text field (the rules of :func:`_check_text`)."""
    try:
        _check_text("value", value)
    except InvalidRequest:
        return False
    return True


def _looks_encoded(run: str) -> bool:
    """Hex, or base64 with upper case, lower case and digits mixed (a path or a name rarely is)."""
    if _HEX.match(run):
        return True
    return any(c.isupper() for c in run) and any(c.islower() for c in run) and any(c.isdigit() for c in run)


def _seed_event_ids() -> None:
    global _EVENT_PREFIX, _EVENT_COUNTER
    _EVENT_PREFIX = os.urandom(8).hex()
    _EVENT_COUNTER = itertools.count(1)


_EVENT_PREFIX = ""
_EVENT_COUNTER = itertools.count(1)
_seed_event_ids()
os.register_at_fork(after_in_child=_seed_event_ids)  # forked KMIP workers must not share the prefix


def new_event_id() -> str:
    """32 hex characters like a UUID: 64 random bits per process (re-drawn in forked children) and a
    counter. A uuid4 per event cost ~2 us of the KMIP hot path; ids only need to be unique."""
    return f"{_EVENT_PREFIX}{next(_EVENT_COUNTER):016x}"


def canonical(value: Any) -> bytes:
    """The one encoding that hashes are computed over: sorted keys, no whitespace, UTF-8."""
    return _CANONICAL.encode(value).encode()


def encode_record(record: dict[str, Any]) -> bytes:
    """:func:`canonical` of a record fresh from :meth:`AuditEvent.to_record` (keys already sorted, values
    replaced in place only), without sorting again: ~1.5 us less on the hot path of every KMIP request.
    ``tests/audit/test_packing.py`` checks that both encodings agree."""
    return _PRESORTED.encode(record).encode()


_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)
_PRESORTED = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, check_circular=False)


def event_digest(record: Mapping[str, Any]) -> str:
    return hashlib.sha256(canonical(record)).hexdigest()


class EventTemplate:
    """The fields a stream of events shares (a KMIP connection: tenant, certificate subject, service,
    client address), validated and encoded once.

    Why: building and validating an :class:`AuditEvent`, turning it into a dict and JSON-encoding 18 keys
    cost ~10 us of every KMIP request, more than a third of what the whole audit trail cost there. A
    template checks its constant fields once (by building a real :class:`AuditEvent`, so the rules are
    the same) and :meth:`encode` writes the varying ones into the pre-encoded frame. The result is
    byte-for-byte :func:`encode_record` of the same event (``tests/audit/test_templates.py`` checks this
    for arbitrary text); :meth:`event` gives the :class:`AuditEvent` for paths that need the object.
    """

    __slots__ = (
        "_head",
        "_middle",
        "account_id",
        "actor",
        "actor_role",
        "client_address",
        "details",
        "source",
        "tenant_id",
    )

    def __init__(
        self,
        *,
        tenant_id: str,
        source: str,
        actor: str = "",
        actor_role: str = "",
        account_id: str = "",
        client_address: str = "",
        details: Mapping[str, str] | None = None,
    ) -> None:
        probe = AuditEvent(  # raises InvalidRequest exactly as an event with these fields would
            tenant_id=tenant_id,
            source=source,
            operation="-",
            actor=actor,
            actor_role=actor_role,
            account_id=account_id,
            client_address=client_address,
            details=dict(details or {}),
        )
        self.tenant_id, self.source, self.actor, self.actor_role = tenant_id, source, actor, actor_role
        self.account_id, self.client_address = account_id, client_address
        self.details = dict(sorted(probe.details.items()))
        # Keys in sorted order, as canonical() writes them: the constant ones frame the varying ones.
        self._head = (
            f'{{"account_id":{encode_basestring(account_id)},"actor":{encode_basestring(actor)},'
            f'"actor_role":{encode_basestring(actor_role)},'
            f'"client_address":{encode_basestring(client_address)},'
            f'"details":{_CANONICAL.encode(self.details)},"event_id":'
        )
        self._middle = (
            f',"source":{encode_basestring(source)},"tenant_id":{encode_basestring(tenant_id)},"time":'
        )

    def event(
        self,
        operation: str,
        *,
        result: str = "success",
        kind: str = "operation",
        object_id: str = "",
        reason: str = "",
        l1_ref: str = "",
        l2_version: int = 0,
        request_id: str = "",
    ) -> AuditEvent:
        return AuditEvent(
            tenant_id=self.tenant_id,
            source=self.source,
            operation=operation,
            result=result,
            kind=kind,
            actor=self.actor,
            actor_role=self.actor_role,
            account_id=self.account_id,
            object_id=object_id,
            reason=reason,
            l1_ref=l1_ref,
            l2_version=l2_version,
            request_id=request_id,
            client_address=self.client_address,
            details=self.details,
        )

    @staticmethod
    def check(
        operation: str, result: str, kind: str, object_id: str, reason: str, l2_version: int, request_id: str
    ) -> None:
        """The :class:`AuditEvent` rules for the varying fields (raises :class:`InvalidRequest`)."""
        if kind not in KINDS or result not in RESULTS:
            raise InvalidRequest(f"audit kind/result must be one of {sorted(KINDS)} / {sorted(RESULTS)}")
        if not operation:
            raise InvalidRequest("audit events name a tenant and an operation")
        if not isinstance(l2_version, int) or isinstance(l2_version, bool):
            raise InvalidRequest("audit l2_version must be an integer")
        for name, value in (
            ("operation", operation),
            ("object_id", object_id),
            ("reason", reason),
            ("request_id", request_id),
        ):
            # Short strings without a PEM marker pass _check_text; anything else gets its full check.
            if type(value) is not str or len(value) >= 80 or "-----BEGIN" in value or "PRIVATE KEY" in value:
                _check_text(name, value)

    def encode(
        self,
        event_id: str,
        time: str,
        operation: str,
        result: str,
        kind: str,
        object_id: str,
        reason: str,
        l1_ref: str,
        l2_version: int,
        request_id: str,
    ) -> bytes:
        """:func:`encode_record` of the event; the varying fields must have passed :meth:`check` (so
        ``kind`` and ``result`` are schema words that need no escaping; ``event_id`` and ``time`` come from
        :func:`new_event_id` and the clock)."""
        return (
            f'{self._head}"{event_id}","kind":"{kind}","l1_ref":{encode_basestring(l1_ref)},'
            f'"l2_version":{l2_version},"object_id":{encode_basestring(object_id)},'
            f'"operation":{encode_basestring(operation)},"reason":{encode_basestring(reason)},'
            f'"request_id":{encode_basestring(request_id)},"result":"{result}"'
            f'{self._middle}"{time}","v":{SCHEMA_VERSION}}}'
        ).encode()
