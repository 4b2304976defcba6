"""Writer chains: each writer (one process start) keeps one hash chain per tenant; a link packs up to
``batch_events`` events. ``hash = SHA-256(prev_hash || canonical({tenant, writer, seq, digests}))`` where
``digests`` are the SHA-256 of each event's canonical encoding, in order."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import socket
import uuid
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from openkcm.domain.audit.events import KINDS, canonical, event_digest
from openkcm.storage import ConditionFailed
from openkcm.storage.audit_models import (
    AuditLinkModel,
    AuditSpanMarkerModel,
    AuditWriterKeyModel,
    bind_audit_models,
)
from openkcm.storage.models import condition_guard

GENESIS = "0" * 64
_TRANSIENT = frozenset(
    {"sk", "lines", "_packed", "_events_bytes", "_summary"}
)  # Link attributes that are not part of the record
_PACKED_FIELDS = frozenset({"events", "digests"})  # stored packed (``Link.packed``), not as JSON
LINK_PREFIX = "W#"
# A stored link's ``first_time``/``last_time`` are the earliest and latest time of its events, and a writer
# never lets them lie further apart than this (it splits a backlog that does). Readers rely on it: a link
# that starts more than LINK_MAX_SPAN before a point in time holds nothing after it, so a page of the
# audit log reads the links around it instead of the tenant's whole trail. Flushes happen every
# ``audit_flush_seconds`` (at most 60, default 1) s, so only a backlog left by a store or KMS outage is split.
LINK_MAX_SPAN = timedelta(seconds=10)
# Links written before ``first_time``/``last_time`` became the earliest/latest event time used the first
# and last event in record order: events timed on different threads (KMIP pool workers) can be out of order
# by the few milliseconds between taking the time and taking the sink's lock. Readers allow this much.
ORDER_SLACK = timedelta(milliseconds=100)
# Links written before the bound (by earlier versions) could span up to an hour; readers allow for that
# until LEGACY_HORIZON after the tenant's span marker (an hour, plus an hour for a rolling deployment in
# which earlier writers still run).
LEGACY_LINK_SPAN = timedelta(hours=1)
LEGACY_HORIZON = timedelta(hours=2)
SPAN_MARKER_SK = "B#spans"


def mark_spans_bounded(tenant_id: str, now: str) -> None:
    """Record once per tenant (idempotent) since when its links are span-bounded: from the start ("0") for
    a tenant without links yet, else from ``now``. (An earlier-version writer that stores a tenant's first
    link during a rolling deployment, between the check and the marker, is not allowed for; its links span
    at most ``audit_flush_seconds``.)"""
    if spans_bounded_since(tenant_id) is not None:
        return
    first = AuditLinkModel.query(tenant_id, AuditLinkModel.sk.startswith(LINK_PREFIX), limit=1)
    since = "0" if next(iter(first), None) is None else now
    try:
        with condition_guard():
            AuditSpanMarkerModel(tenant_id, SPAN_MARKER_SK, since=since).save(
                condition=AuditSpanMarkerModel.sk.does_not_exist()
            )
    except ConditionFailed:
        pass


def spans_bounded_since(tenant_id: str) -> str | None:
    bind_audit_models()
    try:
        return str(AuditSpanMarkerModel.get(tenant_id, SPAN_MARKER_SK).since)
    except AuditSpanMarkerModel.DoesNotExist:
        return None


_SK = re.compile(r"^W#([A-Za-z0-9._:-]{1,160})#(\d{12})\Z")


def link_hash(prev_hash: str, tenant_id: str, writer: str, seq: int, digests: list[str]) -> str:
    body = _digest_list(digests) + canonical({"seq": seq, "tenant": tenant_id, "writer": writer})[1:]
    return hashlib.sha256(prev_hash.encode() + body).hexdigest()


def _digest_list(digests: list[str]) -> bytes:
    """``canonical({"digests": digests, ...})`` up to the comma after the list. SHA-256 hex digests need
    no JSON escaping, so a join gives the same bytes as the encoder at a tenth of its cost (it ran over
    every event of every link); anything else (a damaged stored digest) goes through the encoder."""
    try:
        joined = '","'.join(digests)
    except TypeError:
        joined = None
    if joined is not None and joined.isascii() and joined.isprintable() and "\\" not in joined:
        if not digests:
            return b'{"digests":[],'
        if joined.count('"') == 2 * (len(digests) - 1):  # only the separators: no quote inside a digest
            return b'{"digests":["' + joined.encode() + b'"],'
    return canonical({"digests": digests})[:-1] + b","


WRITER_KEY_PREFIX = "K#"


def writer_key_context(writer: str) -> dict[str, str]:
    return {"purpose": "openkcm-audit-writer", "writer": writer}


def link_mac(key: bytes, link_hash_hex: str) -> str:
    """A writer's MAC over a link hash: only holders of the writer's key (unwrapped with the root key)
    can append links that verify — table write access alone is not enough."""
    return hmac.new(key, b"openkcm/audit-link\x00" + link_hash_hex.encode(), hashlib.sha256).hexdigest()


class Signed(Protocol):
    """A link, or what verification keeps of one."""

    hash: str
    mac: str


def mac_valid(key: bytes, link: Signed) -> bool:
    return bool(link.mac) and hmac.compare_digest(link_mac(key, link.hash), link.mac)


def store_writer_key(tenant_id: str, writer: str, wrapped: bytes, parent_ref: str, created: str) -> None:
    """Record the writer's wrapped key in the tenant's partition once (idempotent)."""
    bind_audit_models()
    item = AuditWriterKeyModel(
        tenant_id,
        WRITER_KEY_PREFIX + writer,
        writer=writer,
        wrapped=wrapped,
        parent_ref=parent_ref,
        created=created,
    )
    try:
        with condition_guard():
            item.save(condition=AuditWriterKeyModel.sk.does_not_exist())
    except ConditionFailed:
        pass


def load_writer_keys(tenant_id: str) -> dict[str, AuditWriterKeyModel]:
    bind_audit_models()
    query = AuditWriterKeyModel.query(tenant_id, AuditWriterKeyModel.sk.startswith(WRITER_KEY_PREFIX))
    return {item.writer: item for item in query}


def new_writer_id(prefix: str = "") -> str:
    """Unique per process start, so a restarted writer never reuses a chain position."""
    base = re.sub(r"[^A-Za-z0-9._-]", "-", prefix or socket.gethostname())[:80] or "writer"
    return f"{base}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def link_sk(writer: str, seq: int) -> str:
    return f"{LINK_PREFIX}{writer}#{seq:012d}"


def parse_link_sk(sk: str) -> tuple[str, int] | None:
    match = _SK.match(sk)
    return (match.group(1), int(match.group(2))) if match else None


@dataclass
class Link:
    tenant_id: str
    writer: str
    seq: int
    prev_hash: str
    hash: str
    # None for a link the sink is writing: it has the encoded ``lines`` and a :meth:`describe` summary,
    # and parsing its events back into dicts is work nobody needs. Also None for a link read back by
    # :func:`read_checked_link` whose stored records were proved against its digests without parsing.
    events: list[dict[str, Any]] | None
    digests: list[str] = field(default_factory=list)
    mac: str = ""  # the writer's HMAC over ``hash`` (see link_mac)
    sk: str = ""  # where it was found (verification); empty for links being written
    # The canonical encoding of each event, when the writer already has it (the sink encodes an event
    # once, for its WAL line and its digest, and reuses those bytes here: re-encoding every event for the
    # link, its WAL copy and its item was most of the flusher's CPU in the KMIP benchmark's profile).
    lines: list[bytes] = field(default_factory=list, repr=False, compare=False)

    @classmethod
    def build(
        cls,
        tenant_id: str,
        writer: str,
        seq: int,
        prev_hash: str,
        events: list[dict[str, Any]] | None,
        *,
        lines: list[bytes] | None = None,
        digests: list[str] | None = None,
    ) -> Link:
        """``lines``/``digests``, when given, must be ``canonical(e)`` / ``event_digest(e)`` of ``events``;
        without ``events`` both are required (and :meth:`describe` before :meth:`store`)."""
        if events is None and (lines is None or digests is None or len(lines) != len(digests)):
            raise ValueError("a link without events needs their lines and digests")
        if digests is None:
            digests = [event_digest(e) for e in events or []]
        return cls(
            tenant_id,
            writer,
            seq,
            prev_hash,
            link_hash(prev_hash, tenant_id, writer, seq, digests),
            events,
            digests,
            lines=lines or [],
        )

    @property
    def count(self) -> int:
        return len(self.digests)

    def describe(
        self, first_time: str, last_time: str, kinds: list[str], usage: list[tuple[Any, str]]
    ) -> None:
        """What :meth:`store` and the usage counters read from the events, given by a writer that knows
        it without the event dicts: earliest/latest event time, sorted kinds, (usage key, time) per
        counted event."""
        self.__dict__["_summary"] = (first_time, last_time, kinds, usage)

    def summary(self) -> tuple[str, str, list[str], list[tuple[Any, str]]]:
        cached = self.__dict__.get("_summary")
        if cached is not None:
            return cached  # type: ignore[no-any-return]
        events = self.events or []
        used = [e for e in events if e.get("kind") == "operation" and e.get("result") == "success"]
        usage = [
            ((e["tenant_id"], e["time"][:10], e["operation"], e.get("actor_role") or "-"), e["time"])
            for e in used
        ]
        kinds = sorted({e["kind"] for e in events})
        times = [e["time"] for e in events]
        return (min(times, default=""), max(times, default=""), kinds, usage)

    def usage(self) -> list[tuple[Any, str]]:
        """(tenant, day, operation, service) and time of each successful operation in the link."""
        return self.summary()[3]

    def events_bytes(self) -> bytes:
        """The events as one JSON array (built once: the WAL copy and the stored item both use it)."""
        cached = self.__dict__.get("_events_bytes")
        if cached is None:
            if self.lines:
                cached = b"[" + b",".join(self.lines) + b"]"
            else:
                cached = json.dumps(self.events, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
            self.__dict__["_events_bytes"] = cached
        return cached

    def packed(self) -> tuple[bytes, bytes]:
        """What the item stores: the compressed events and the raw digests (see ``AuditLinkModel``).
        Computed once per link (the writer sizes links by it before storing them)."""
        cached = self.__dict__.get("_packed")
        if cached is None:
            cached = self.__dict__["_packed"] = (pack_events(self.events_bytes()), pack_digests(self.digests))
        return cached

    def item_size(self) -> int:
        body, digests = self.packed()
        return len(body) + len(digests)

    def to_wal_bytes(self) -> bytes:
        """The ``links.wal`` line: the header and the item's own packed bytes in base64 (~45 bytes per
        event; the events' JSON was ~540, written and fsync'd again on every flush)."""
        events_z, digests_bin = self.packed()
        header = {k: v for k, v in self.__dict__.items() if k not in _TRANSIENT and k not in _PACKED_FIELDS}
        header["events_z"] = base64.b64encode(events_z).decode()
        header["digests_bin"] = base64.b64encode(digests_bin).decode()
        return json.dumps(header, separators=(",", ":")).encode()

    @classmethod
    def from_wal(cls, line: bytes) -> Link:
        """Read a ``links.wal`` line back (also the earlier format with the events' JSON inline). Raises
        ``ValueError``, ``TypeError`` or ``KeyError`` for a torn or damaged line."""
        data = json.loads(line)
        if not isinstance(data, dict):
            raise TypeError("not a link")
        if "events" in data:
            return cls(**data)
        events_z = base64.b64decode(data.pop("events_z"), validate=True)
        digests_bin = base64.b64decode(data.pop("digests_bin"), validate=True)
        events, digests = unpack_events(events_z), unpack_digests(digests_bin)
        if not events or len(events) != len(digests):
            raise ValueError("damaged link line")
        link = cls(**data, events=events, digests=digests)
        link.__dict__["_packed"] = (events_z, digests_bin)  # store() writes exactly these bytes
        return link

    @classmethod
    def from_item(cls, item: AuditLinkModel) -> Link:
        return cls(
            item.tenant_id,
            item.writer,
            int(item.seq),
            item.prev_hash,
            item.hash,
            *item_events_and_digests(item),
            item.mac or "",
            item.sk,
        )

    def to_archive(self) -> dict[str, Any]:
        return {"type": "link", **{k: v for k, v in self.__dict__.items() if k not in _TRANSIENT}}

    def store(self) -> bool:
        """Write the link unless it is there already. Returns whether this call wrote it (idempotent replay)."""
        bind_audit_models()
        events_z, digests_bin = self.packed()
        first_time, last_time, kinds, _ = self.summary()
        item = AuditLinkModel(
            self.tenant_id,
            link_sk(self.writer, self.seq),
            writer=self.writer,
            seq=self.seq,
            prev_hash=self.prev_hash,
            hash=self.hash,
            events_z=events_z,
            digests_bin=digests_bin,
            mac=self.mac or None,
            event_count=self.count,
            first_time=first_time,
            last_time=last_time,
            kinds=kinds,
        )
        try:
            with condition_guard():
                item.save(condition=AuditLinkModel.sk.does_not_exist())
        except ConditionFailed:
            return False  # written before a crash; the replay found it there
        return True


RecordFacts = tuple[str, str, list[str]]  # earliest and latest time of a link's records, their sorted kinds


def read_checked_link(item: AuditLinkModel) -> tuple[Link, RecordFacts]:
    """A stored link for verification and checkpoints, and what its records say of its index attributes.
    The link comes without its records (``events`` None) when they are, byte for byte, what its digests
    were computed over (:func:`records_match`); otherwise parsed as :meth:`Link.from_item` gives it, for
    the caller to compare record by record and name the problem."""
    if item.events_z is not None and item.digests_bin:
        digests_bin = bytes(item.digests_bin)
        try:
            events_json = zlib.decompress(item.events_z)
        except zlib.error:
            events_json = b""
        bodies = _proven_bodies(events_json, digests_bin)
        if bodies is not None:
            link = Link(
                item.tenant_id,
                item.writer,
                int(item.seq),
                item.prev_hash,
                item.hash,
                None,
                unpack_digests(digests_bin),
                item.mac or "",
                item.sk,
            )
            facts = _proven_facts(events_json, bodies)
            if facts is not None:
                return link, facts
    link = Link.from_item(item)
    return link, record_facts(link.events or [])


def record_facts(events: list[dict[str, Any]]) -> RecordFacts:
    times = [t for t in (e.get("time") for e in events) if isinstance(t, str)]
    kinds = {k for k in (e.get("kind") for e in events) if isinstance(k, str)}
    return min(times, default=""), max(times, default=""), sorted(kinds)


def _proven_facts(events_json: bytes, bodies: list[bytes]) -> RecordFacts | None:
    """Times and kinds read from proven records' bytes: the time is the last key but one (its value a
    plain string), and ``kind`` follows ``event_id`` (the writer's hex) and precedes ``l1_ref``."""
    try:
        times = [body[body.rindex(b'"time":"') + 8 : body.rindex(b'","v":')] for body in bodies]
    except ValueError:
        return None  # not the layout expected (a writer of another version): the caller parses
    kinds = [k for k in KINDS if b'","kind":"' + k.encode() + b'","l1_ref":' in events_json]
    return min(times).decode(), max(times).decode(), sorted(kinds)


def frame_problem(first_time: str, last_time: str, kinds: list[str], facts: RecordFacts) -> str:
    """Why a stored link's index attributes misstate its records ("" when they do not). They are not
    hashed; readers find a link by them (``first_time``/``last_time``, within ORDER_SLACK: links of earlier
    versions give the first and last record in record order) and may skip it by ``kinds``, so editing
    them could hide records from the audit log while the chain still verifies."""
    earliest, latest, actual_kinds = facts
    if kinds and not set(actual_kinds) <= set(kinds):
        return f"its kinds {sorted(kinds)} leave out {sorted(set(actual_kinds) - set(kinds))}"
    if not earliest:
        return ""
    try:
        off_first = abs(datetime.fromisoformat(first_time) - datetime.fromisoformat(earliest))
        off_last = abs(datetime.fromisoformat(last_time) - datetime.fromisoformat(latest))
    except (TypeError, ValueError, OverflowError):
        return f"its stored time range {first_time!r}..{last_time!r} is not a time range"
    if off_first > ORDER_SLACK or off_last > ORDER_SLACK:
        return f"its stored time range {first_time}..{last_time} does not frame its records ({earliest}..{latest})"
    return ""


_RECORD_START = b'{"account_id":'  # every record's first key: canonical() sorts them
_BETWEEN_RECORDS = b"}," + _RECORD_START


def records_match(events_json: bytes, digests_bin: bytes) -> bool:
    """Whether a stored link's events (``[`` + records joined by ``,`` + ``]``, as the sink packs them) are
    exactly the records its digests name, found without parsing them. Parsing every record and encoding it
    again was 90 % of the time of verification and of each checkpoint (~9 us per record; this ~1 us).

    The records are cut where ``},{"account_id":`` occurs: between two records, and never inside one (its
    quote would have to close a string, and after a closing quote JSON allows only ``,`` ``:`` ``}`` ``]``).
    Whatever the cut, the answer is only True when every piece hashes to its digest in order, which proves
    the bytes; other encodings (an earlier format, an editor's) and damage give False, and the caller then
    compares parsed records, which also names the problem."""
    return _proven_bodies(events_json, digests_bin) is not None


def _proven_bodies(events_json: bytes, digests_bin: bytes) -> list[bytes] | None:
    """:func:`records_match`, giving each record's bytes after its first key, or None."""
    count, rest = divmod(len(digests_bin), 32)
    start = b"[" + _RECORD_START
    if not count or rest or not events_json.startswith(start) or not events_json.endswith(b"}]"):
        return None
    bodies = events_json[len(start) : -2].split(_BETWEEN_RECORDS)
    if len(bodies) != count:
        return None
    sha256 = hashlib.sha256
    return (
        bodies
        if b"".join([sha256(_RECORD_START + body + b"}").digest() for body in bodies]) == digests_bin
        else None
    )


def item_events_and_digests(item: AuditLinkModel) -> tuple[list[dict[str, Any]], list[str]]:
    """A stored link's events and digests, in the compressed format or the earlier JSON one."""
    if item.events_z is None and item.events_json is not None:
        try:
            events = json.loads(item.events_json)
        except ValueError:
            events = []
        events = [e for e in events if isinstance(e, dict)] if isinstance(events, list) else []
        return events, list(item.digests or [])
    return unpack_events(item.events_z), unpack_digests(item.digests_bin)


def pack_events(events_json: bytes) -> bytes:
    return zlib.compress(events_json, 1)


def unpack_events(blob: bytes | None) -> list[dict[str, Any]]:
    """The events of a stored link; damage that breaks decoding reads as no events (verification then
    names the link's records missing) instead of an exception."""
    if not blob:
        return []
    try:
        events = json.loads(zlib.decompress(blob))
    except (zlib.error, ValueError):
        return []
    return [e for e in events if isinstance(e, dict)] if isinstance(events, list) else []


def pack_digests(digests: list[str]) -> bytes:
    return bytes.fromhex("".join(digests))


def unpack_digests(blob: bytes | None) -> list[str]:
    raw = blob or b""
    return [raw[i : i + 32].hex() for i in range(0, len(raw) - len(raw) % 32, 32)]


def query_links(
    tenant_id: str, writer: str | None = None, after_seq: int = 0, attributes: list[str] | None = None
) -> Iterator[AuditLinkModel]:
    """Stored link items of a tenant (optionally one writer's, after a sequence number), in key order."""
    bind_audit_models()
    if writer is None:
        condition = AuditLinkModel.sk.startswith(LINK_PREFIX)
    else:
        condition = AuditLinkModel.sk.between(link_sk(writer, after_seq + 1), link_sk(writer, 10**12 - 1))
    return AuditLinkModel.query(tenant_id, condition, attributes_to_get=attributes)
