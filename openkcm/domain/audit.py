"""The audit trail: one event schema and one sink that every adapter writes through.

Design (why it looks like this)
- **Chains per writer, events packed per item.** A per-tenant counter allocated by conditional writes
  serialises every writer of a busy tenant on one item and caps it near DynamoDB's ~1,000 writes/s per
  partition key. Instead each writer (a KMIP worker process, a Lambda container) keeps its own hash
  chain per tenant: link ``seq`` carries up to ``batch_events`` events and the SHA-256 of the previous
  link over a canonical encoding. Many writers append without coordinating; signed checkpoints (the
  audit issue) join the writer chains of a tenant into one verifiable statement.
- **Nothing lost.** With a write-ahead directory (KMIP workers) ``record`` appends the event to
  ``events.wal`` and fsyncs before it returns; the flusher turns pending events into links, appends
  the links to ``links.wal`` (fsync), then writes them with ``attribute_not_exists`` conditions, so a
  replay after a crash is idempotent. Without a WAL (Lambdas) ``record`` writes synchronously.
- **Fail closed.** If the store stays unreachable and more than ``max_pending`` events wait,
  :meth:`ensure_writable` and :meth:`record` raise :class:`AuditUnavailable`; callers check before
  they act, so an operation is refused rather than done unaudited.
- **Never a secret.** Events hold identifiers, names and reasons only; ``details`` values must be short
  strings and bytes are refused outright.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import threading
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from openkcm.clock import SYSTEM_CLOCK, Clock
from openkcm.errors import AuditUnavailable, InvalidRequest
from openkcm.storage import AuditBatchModel, ConditionFailed, UsageModel
from openkcm.storage.models import condition_guard

GENESIS = "0" * 64
SCHEMA_VERSION = 1
KINDS = frozenset({"operation", "security", "config", "lifecycle"})
RESULTS = frozenset({"success", "denied", "failure"})
_MAX_DETAIL = 512


@dataclass(frozen=True, slots=True)
class AuditEvent:
    tenant_id: str
    source: str  # kmip | api | provision | rotate | keystore | cli
    operation: str
    result: str = "success"
    kind: str = "operation"
    actor: str = ""  # certificate subject, token subject, or function name
    actor_role: str = ""  # KMIP service id, API role, or schedule name
    account_id: str = ""
    object_id: str = ""
    reason: str = ""
    l1_ref: str = ""
    l2_version: int = 0
    request_id: str = ""
    client_address: str = ""
    details: Mapping[str, str] = field(default_factory=dict)
    event_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    time: str = ""

    def __post_init__(self) -> None:
        if self.kind not in KINDS or self.result not in RESULTS:
            raise InvalidRequest(f"audit kind/result must be one of {sorted(KINDS)} / {sorted(RESULTS)}")
        if not self.tenant_id or not self.operation:
            raise InvalidRequest("audit events name a tenant and an operation")
        for name, value in self.details.items():
            if not isinstance(value, str) or len(value) > _MAX_DETAIL:
                raise InvalidRequest(f"audit detail {name!r} must be a string of at most {_MAX_DETAIL} chars")

    def to_record(self) -> dict[str, Any]:
        record = asdict(self)
        record["details"] = dict(self.details)
        record["v"] = SCHEMA_VERSION
        return record


def canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def link_hash(prev_hash: str, tenant_id: str, writer: str, seq: int, events: list[dict[str, Any]]) -> str:
    body = canonical({"tenant": tenant_id, "writer": writer, "seq": seq, "events": events})
    return hashlib.sha256(prev_hash.encode() + body).hexdigest()


def new_writer_id(prefix: str = "") -> str:
    """Unique per process start, so a restarted writer never reuses a chain position."""
    return f"{prefix or socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


class AuditSink(ABC):
    @abstractmethod
    def ensure_writable(self) -> None:
        """Raise AuditUnavailable if a record could not be kept right now."""

    @abstractmethod
    def record(self, event: AuditEvent, *, sync: bool = True) -> None:
        """Keep the event. With ``sync=False`` the caller promises a :meth:`sync` before it answers."""

    def sync(self) -> None:
        """Make every event recorded so far durable (group commit)."""

    def flush(self) -> None:
        """Push buffered events to the store."""

    def close(self) -> None:
        self.flush()


class NullAuditSink(AuditSink):
    """Keeps nothing. Only the benchmark selects it, to measure what auditing costs."""

    def ensure_writable(self) -> None:
        return None

    def record(self, event: AuditEvent, *, sync: bool = True) -> None:
        return None


@dataclass
class _Link:
    tenant_id: str
    writer: str
    seq: int
    prev_hash: str
    hash: str
    events: list[dict[str, Any]]

    def to_json(self) -> str:
        return json.dumps(self.__dict__, separators=(",", ":"))


class ChainedAuditSink(AuditSink):
    def __init__(
        self,
        *,
        writer_id: str | None = None,
        clock: Clock = SYSTEM_CLOCK,
        wal_dir: Path | None = None,
        batch_events: int = 50,
        max_pending: int = 20_000,
        flush_interval: float = 0.2,
        on_security_event: Callable[[AuditEvent], None] | None = None,
    ) -> None:
        self.writer_id = new_writer_id(writer_id or "")
        self._clock = clock
        self._batch = batch_events
        self._max_pending = max_pending
        self._on_security = on_security_event
        self._lock = threading.Lock()  # guards pending, heads, unwritten and the WAL files
        self._flush_lock = threading.Lock()  # one flusher at a time
        self._pending: list[dict[str, Any]] = []
        self._unwritten: list[_Link] = []
        self._heads: dict[str, tuple[int, str]] = {}  # tenant -> (last seq, last hash)
        self._last_error: str | None = None
        self._events_wal = self._links_wal = None
        self._dirty = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if wal_dir is not None:
            wal_dir = Path(wal_dir)
            wal_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            self._events_path, self._links_path = wal_dir / "events.wal", wal_dir / "links.wal"
            self._replay()
            self._events_wal = open(self._events_path, "a", encoding="utf-8")  # noqa: SIM115
            self._links_wal = open(self._links_path, "a", encoding="utf-8")  # noqa: SIM115
            self._thread = threading.Thread(target=self._run, args=(flush_interval,), daemon=True, name="audit")
            self._thread.start()

    # ---- writing -------------------------------------------------------------------------------
    def ensure_writable(self) -> None:
        with self._lock:
            backlog = len(self._pending) + sum(len(link.events) for link in self._unwritten)
        if backlog >= self._max_pending:
            raise AuditUnavailable(f"audit store unreachable ({self._last_error or 'backlog full'})")

    def record(self, event: AuditEvent, *, sync: bool = True) -> None:
        self.ensure_writable()
        record = event.to_record()
        if not record["time"]:
            record["time"] = self._clock.now().isoformat(timespec="microseconds")
        with self._lock:
            if self._events_wal is not None:
                self._events_wal.write(json.dumps(record, separators=(",", ":")) + "\n")
                self._dirty = True
            self._pending.append(record)
        if self._events_wal is None:
            self.flush()  # no WAL: durable means written to the store before we return
        elif sync:
            self.sync()
        if event.kind == "security" and self._on_security is not None:
            with contextlib.suppress(Exception):  # the record is kept; the bus is best effort
                self._on_security(event)

    def sync(self) -> None:
        with self._lock:
            if self._events_wal is not None and self._dirty:
                self._events_wal.flush()
                os.fsync(self._events_wal.fileno())
                self._dirty = False

    def flush(self) -> None:
        with self._flush_lock:
            with self._lock:
                links = self._link_pending()
                if links and self._links_wal is not None:
                    for link in links:
                        self._links_wal.write(link.to_json() + "\n")
                    self._links_wal.flush()
                    os.fsync(self._links_wal.fileno())
                    self._truncate(self._events_wal)
                    self._dirty = False
                self._unwritten.extend(links)
                todo = list(self._unwritten)
            if not todo:
                return
            try:
                for link in todo:
                    self._store(link)
                self._count_usage(todo)
            except Exception as exc:  # the store is down: keep everything, fail closed past the bound
                self._last_error = type(exc).__name__
                if self._links_wal is None:
                    raise AuditUnavailable("audit store unreachable; operation refused") from exc
                return
            self._last_error = None
            with self._lock:
                self._unwritten = self._unwritten[len(todo) :]
                if not self._unwritten and self._links_wal is not None:
                    self._truncate(self._links_wal)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        with contextlib.suppress(AuditUnavailable):
            self.flush()
        for handle in (self._events_wal, self._links_wal):
            if handle is not None:
                handle.close()

    # ---- internals -----------------------------------------------------------------------------
    def _link_pending(self) -> list[_Link]:
        by_tenant: dict[str, list[dict[str, Any]]] = {}
        for record in self._pending:
            by_tenant.setdefault(record["tenant_id"], []).append(record)
        self._pending = []
        links = []
        for tenant_id, records in by_tenant.items():
            for start in range(0, len(records), self._batch):
                events = records[start : start + self._batch]
                seq, prev = self._heads.get(tenant_id, (0, GENESIS))
                seq += 1
                digest = link_hash(prev, tenant_id, self.writer_id, seq, events)
                self._heads[tenant_id] = (seq, digest)
                links.append(_Link(tenant_id, self.writer_id, seq, prev, digest, events))
        return links

    @staticmethod
    def _store(link: _Link) -> None:
        item = AuditBatchModel(
            link.tenant_id,
            f"W#{link.writer}#{link.seq:012d}",
            writer=link.writer,
            seq=link.seq,
            prev_hash=link.prev_hash,
            hash=link.hash,
            events_json=json.dumps(link.events, separators=(",", ":")),
            event_count=len(link.events),
            first_time=link.events[0]["time"],
            last_time=link.events[-1]["time"],
            kinds=sorted({e["kind"] for e in link.events}),
        )
        try:
            with condition_guard():
                item.save(condition=AuditBatchModel.sk.does_not_exist())
        except ConditionFailed:
            pass  # written before a crash; the replay found it there: idempotent

    @staticmethod
    def _count_usage(links: list[_Link]) -> None:
        counts: dict[tuple[str, str, str, str], tuple[int, str]] = {}
        for link in links:
            for event in link.events:
                if event["kind"] != "operation" or event["result"] != "success":
                    continue
                key = (event["tenant_id"], event["time"][:10], event["operation"], event["actor_role"] or "-")
                count, _ = counts.get(key, (0, ""))
                counts[key] = (count + 1, event["time"])
        for (tenant_id, day, operation, service), (count, last_seen) in counts.items():
            UsageModel(tenant_id, f"U#{day}#{operation}#{service}").update(
                actions=[
                    UsageModel.count.add(count),
                    UsageModel.day.set(day),
                    UsageModel.operation.set(operation),
                    UsageModel.service.set(service),
                    UsageModel.last_seen.set(last_seen),
                ]
            )

    @staticmethod
    def _truncate(handle: Any) -> None:
        if handle is not None:
            handle.flush()
            handle.truncate(0)
            os.fsync(handle.fileno())

    def _replay(self) -> None:
        """After a crash: finish writing computed links, then re-queue events that never got linked."""
        linked: set[str] = set()
        if self._links_path.exists():
            for line in self._links_path.read_text(encoding="utf-8").splitlines():
                if not line.strip():
                    continue
                try:
                    link = _Link(**json.loads(line))
                except (ValueError, TypeError):
                    continue  # a torn last line was never acknowledged
                linked.update(e["event_id"] for e in link.events)
                self._unwritten.append(link)
        if self._events_path.exists():
            for line in self._events_path.read_text(encoding="utf-8").splitlines():
                try:
                    record = json.loads(line)
                except ValueError:
                    continue
                if record.get("event_id") not in linked:
                    self._pending.append(record)

    def _run(self, interval: float) -> None:
        while not self._stop.wait(interval):
            with contextlib.suppress(Exception):
                self.flush()


def read_events(tenant_id: str, *, since: str = "", until: str = "~") -> list[dict[str, Any]]:
    """Events of one tenant whose batch started in [since, until), oldest first."""
    events: list[dict[str, Any]] = []
    for item in AuditBatchModel.time_index.query(tenant_id, AuditBatchModel.first_time.between(since, until)):
        events.extend(json.loads(item.events_json))
    events.sort(key=lambda e: (e["time"], e["event_id"]))
    return events
