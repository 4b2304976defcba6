"""The one sink every adapter writes through (DECISIONS 4). See the package docstring for the design."""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import json
import logging
import os
import threading
import time
from abc import ABC, abstractmethod
from bisect import bisect_right
from collections import Counter, deque
from collections.abc import Callable
from datetime import datetime, timedelta
from itertools import accumulate
from pathlib import Path
from typing import Any

from openkcm.clock import SYSTEM_CLOCK, Clock
from openkcm.domain.audit.chain import (
    GENESIS,
    LINK_MAX_SPAN,
    Link,
    link_mac,
    mark_spans_bounded,
    new_writer_id,
    store_writer_key,
    writer_key_context,
)
from openkcm.domain.audit.events import AuditEvent, EventTemplate, canonical, encode_record, new_event_id
from openkcm.domain.wrapping import WrappingKey
from openkcm.errors import AuditUnavailable
from openkcm.files import write_private
from openkcm.storage import UsageModel
from openkcm.storage.audit_models import AuditLinkModel, bind_audit_models

log = logging.getLogger(__name__)

SecurityListener = Callable[[AuditEvent], None]
Checkpointer = Callable[[str], Any]
ChainResolver = Callable[[str, int], str]  # (tenant, L2 version) -> parent (L1 or root key) reference
MAX_PENDING = 20_000  # the bound can only be made stricter (smaller), never looser
UNSTORED_EVENT = "audit_record_unstored"  # the log line of a record a writer without a WAL could not store
# A link packs at most this many bytes of events (before compression) and its stored item (compressed
# events + 32-byte digests) at most MAX_ITEM_BYTES: DynamoDB's item limit is 400 KB. Big links are what
# make the trail cheap: a KMIP event compresses to ~20 bytes, and each item write has a fixed cost.
MAX_LINK_BYTES = 6 << 20  # a full batch of 8,000 KMIP events (~540 bytes each) fits
MAX_ITEM_BYTES = 300_000
UsageKey = tuple[str, str, str, str]  # (tenant, day, operation, service) of a successful operation
# What the flusher needs of an event, without the record dict: (tenant, canonical encoding, its raw
# SHA-256, time, kind, usage key or None). Raw: hex strings for the link are made per link in one call.
Pending = tuple[str, bytes, bytes, str, str, UsageKey | None]


def pending_entry(record: dict[str, Any], line: bytes, digest: bytes) -> Pending:
    used = record["kind"] == "operation" and record["result"] == "success"
    usage = (record["tenant_id"], record["time"][:10], record["operation"], record.get("actor_role") or "-")
    return (record["tenant_id"], line, digest, record["time"], record["kind"], usage if used else None)


class AuditSink(ABC):
    @abstractmethod
    def ensure_writable(self) -> None:
        """Raise AuditUnavailable if a record could not be kept right now. Call it *before* acting."""

    @abstractmethod
    def record(self, event: AuditEvent, *, sync: bool = True) -> None:
        """Keep the event. With ``sync=False`` the caller promises a :meth:`sync` before it answers."""

    def record_from(
        self,
        template: EventTemplate,
        operation: str,
        *,
        result: str = "success",
        kind: str = "operation",
        object_id: str = "",
        reason: str = "",
        l2_version: int = 0,
        request_id: str = "",
        sync: bool = True,
    ) -> None:
        """:meth:`record` of ``template.event(...)``; sinks may keep it without building the event."""
        event = template.event(
            operation,
            result=result,
            kind=kind,
            object_id=object_id,
            reason=reason,
            l2_version=l2_version,
            request_id=request_id,
        )
        self.record(event, sync=sync)

    def sync(self) -> None:
        """Make every event recorded so far durable (group commit)."""

    def flush(self) -> None:
        """Push buffered events to the store."""

    def set_security_listener(self, listener: SecurityListener | None) -> None:
        """Called (best effort, after the record is stored) for every ``kind="security"`` event."""

    def close(self) -> None:
        self.flush()


class NullAuditSink(AuditSink):
    """Keeps nothing. Only the benchmark selects it, to measure what auditing costs."""

    def ensure_writable(self) -> None:
        return None

    def record(self, event: AuditEvent, *, sync: bool = True) -> None:
        return None

    def record_from(self, template: EventTemplate, operation: str, **fields: Any) -> None:
        return None


class ChainedAuditSink(AuditSink):
    """Hash-chained, batched, write-ahead-logged, fail-closed.

    Two modes: with ``wal_dir`` (long-lived KMIP workers, the local stack) ``record`` appends to an
    fsync'd WAL and a background flusher writes links; without (Lambdas, the CLI) ``record`` writes the
    link to the store before it returns and :meth:`ensure_writable` probes the store, so an operation is
    refused *before* it acts when the store is unreachable.
    """

    def __init__(
        self,
        *,
        writer_id: str | None = None,
        clock: Clock = SYSTEM_CLOCK,
        wal_dir: Path | None = None,
        batch_events: int = 8000,
        max_pending: int = MAX_PENDING,
        flush_interval: float = 0.2,
        flush_max_delay: float | None = None,
        probe_interval: float = 2.0,
        on_security_event: SecurityListener | None = None,
        checkpointer: Checkpointer | None = None,
        checkpoint_interval: float = 0.0,
        authenticator: WrappingKey | None = None,
    ) -> None:
        if not 1 <= max_pending <= MAX_PENDING:
            raise ValueError(f"max_pending must be 1..{MAX_PENDING} (the bound only gets stricter)")
        self.writer_id = new_writer_id(writer_id or "")
        self._clock = clock
        self._batch = max(1, batch_events)
        # Stored bytes per event (compressed event + digest) of the last link: links are cut to fit an
        # item from the start instead of being built, found too big and rebuilt in halves.
        self._item_bytes_per_event = 64.0
        # The flusher wakes every ``flush_interval`` (fsyncs the WAL, retries the store) but writes links
        # only once a full link is pending or the oldest pending event waited ``flush_max_delay``.
        self._max_delay = flush_interval if flush_max_delay is None else max(flush_interval, flush_max_delay)
        self._flushed_at = time.monotonic()
        self._retired: list[tuple[Any, Path]] = []  # events WAL files whose events are being linked
        self._retire_counter = 0
        self._max_pending = max_pending
        self._probe_interval = probe_interval
        self._probed_at = -1e18
        self._on_security = on_security_event
        self._security: deque[AuditEvent] = deque(maxlen=1000)
        self._resolve_chain: ChainResolver | None = None
        self._chain_ttl = 60.0
        self._chain_cache: dict[tuple[str, int], tuple[str, float]] = {}
        self._checkpointer = checkpointer
        self._checkpoint_interval = checkpoint_interval
        self._checkpointed_at = time.monotonic()
        self._touched: set[str] = set()
        # Link MACs: a per-process random key, wrapped by ``authenticator`` (the root key: KMS in AWS) and
        # recorded once per tenant as ``K#<writer>`` before the writer's first link there.
        self._authenticator = authenticator
        self._writer_key: bytes | None = None
        self._writer_keys: dict[str, tuple[bytes, str]] = {}  # writer -> (wrapped key, parent ref)
        self._keyed: set[tuple[str, str]] = set()  # (writer, tenant) whose K# item is stored
        self._span_marked: set[str] = set()  # tenants whose span marker (chain.mark_spans_bounded) is there
        self._lock = threading.Lock()  # guards pending, heads, unwritten and the WAL files
        self._flush_lock = threading.Lock()  # one flusher at a time
        self._pending: list[Pending] = []
        self._unwritten: list[Link] = []
        self._logged: set[int] = set()  # ids of unwritten links whose records went to the log
        self._backlog = 0  # events recorded and not yet stored (pending, being linked, or unwritten links)
        self._heads: dict[str, tuple[int, str]] = {}  # tenant -> (last seq, last hash)
        self._last_error: str | None = None
        self._events_wal: Any = None
        self._links_wal: Any = None
        self._lock_fd: int | None = None
        self._dirty = False  # records added since the last sync()
        # Lines not yet handed to the OS: one write per sync() (a KMIP listener syncs once per loop pass)
        # instead of a buffered-file write per record.
        self._unsent: list[bytes] = []
        self._sync_lock = threading.Lock()
        self._wal_fsync = True
        self._written_gen = self._synced_gen = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.stats = {"stored_links": 0, "stored_events": 0, "replayed_events": 0, "replayed_links": 0}
        if wal_dir is not None:
            slot = self._claim_slot(Path(wal_dir))
            self.wal_dir = slot
            self._events_path, self._links_path = slot / "events.wal", slot / "links.wal"
            self._writers_path = slot / "writers.json"
            self._replay()
            if self._pending:
                self._flushed_at = float("-inf")  # a dead writer's records go to the store at once
            self._events_wal = open(self._events_path, "ab", buffering=0)  # noqa: SIM115
            self._links_wal = open(self._links_path, "ab")  # noqa: SIM115
            self._thread = threading.Thread(
                target=self._run, args=(flush_interval,), daemon=True, name="audit"
            )
            self._thread.start()

    # ---- writing -------------------------------------------------------------------------------
    def backlog(self) -> int:
        return self._backlog  # one int, updated under the lock: reading it needs none

    def ensure_writable(self) -> None:
        backlog = self._backlog
        if backlog >= self._max_pending:
            raise AuditUnavailable(f"audit store unreachable ({self._last_error or 'backlog full'})")
        if self._events_wal is not None:
            return  # the WAL keeps the record; the bound above is what fails closed
        if backlog:
            self.flush()  # raises AuditUnavailable while the store is still down
        elif self._last_error or time.monotonic() - self._probed_at > self._probe_interval:
            self._probe()

    def _probe(self) -> None:
        bind_audit_models()
        try:
            AuditLinkModel.get("_probe", "_probe")
        except AuditLinkModel.DoesNotExist:
            pass
        except Exception as exc:
            self._last_error = type(exc).__name__
            raise AuditUnavailable("audit store unreachable; operation refused") from exc
        self._last_error = None
        self._probed_at = time.monotonic()

    def record(self, event: AuditEvent, *, sync: bool = True) -> None:
        self.ensure_writable()
        record = event.to_record()
        if record["l2_version"] and not record["l1_ref"]:
            record["l1_ref"] = self._l1_ref(record["tenant_id"], record["l2_version"])
        if not record["time"]:
            record["time"] = self._clock.iso_now()
        # Encoded once: the same bytes are the WAL line, the digest's input and the link item's content.
        line = encode_record(record)
        entry = pending_entry(record, line, hashlib.sha256(line).digest())
        with self._lock:
            if self._events_wal is not None:
                self._unsent.append(line)
                self._dirty = True
            self._pending.append(entry)
            self._backlog += 1
            if event.kind == "security":
                self._security.append(event)
        if self._events_wal is None:
            self.flush()  # no WAL: durable means written to the store before we return
        elif sync:
            self.sync()

    def record_from(
        self,
        template: EventTemplate,
        operation: str,
        *,
        result: str = "success",
        kind: str = "operation",
        object_id: str = "",
        reason: str = "",
        l2_version: int = 0,
        request_id: str = "",
        sync: bool = True,
    ) -> None:
        """The KMIP hot path: the same record as :meth:`record` of ``template.event(...)`` (same rules,
        same bytes), without building the event object, its dict, or a second backlog check. Security
        events and sinks without a WAL take the ordinary path (they need the object, or a store write)."""
        if kind == "security" or self._events_wal is None:
            super().record_from(
                template,
                operation,
                result=result,
                kind=kind,
                object_id=object_id,
                reason=reason,
                l2_version=l2_version,
                request_id=request_id,
                sync=sync,
            )
            return
        template.check(operation, result, kind, object_id, reason, l2_version, request_id)
        tenant_id = template.tenant_id
        l1_ref = self._l1_ref(tenant_id, l2_version) if l2_version else ""
        when = self._clock.iso_now()
        line = template.encode(
            new_event_id(), when, operation, result, kind, object_id, reason, l1_ref, l2_version, request_id
        )
        used = result == "success" and kind == "operation"
        usage = (tenant_id, when[:10], operation, template.actor_role or "-") if used else None
        entry = (tenant_id, line, hashlib.sha256(line).digest(), when, kind, usage)
        with self._lock:
            if self._backlog >= self._max_pending:
                raise AuditUnavailable(f"audit store unreachable ({self._last_error or 'backlog full'})")
            wal = self._events_wal
            if wal is not None:  # None once closed: then the record goes to the store below
                self._unsent.append(line)
                self._dirty = True
            self._pending.append(entry)
            self._backlog += 1
        if wal is None:
            self.flush()
        elif sync:
            self.sync()

    def sync(self) -> None:
        """Group commit: hand the buffered lines to the OS under the lock (that alone survives a killed
        process), then fsync outside it; a caller whose lines an fsync already started after covers
        returns without one, so concurrent callers share fsyncs and recorders never wait on the disk."""
        with self._lock:
            handle = self._events_wal
            if handle is None or not self._dirty:
                mine = self._written_gen
            else:
                self._send(handle)
                self._dirty = False
                self._written_gen += 1
                mine = self._written_gen
        if handle is None or not self._wal_fsync:
            return  # in the OS: survives a killed process; on disk once the flusher fsyncs its link
        with self._sync_lock:
            if self._synced_gen >= mine:
                return
            with self._lock:
                target = self._written_gen  # every generation up to here is in the OS already
                # A file the flusher moved aside may still hold lines not yet on disk: fsync it too.
                # Handles are closed only under _sync_lock (``_drop_retired``), once links.wal holds them.
                handles = [h for h, _ in self._retired] + [self._events_wal]
            for each in handles:
                if each is not None and not each.closed:
                    os.fsync(each.fileno())
            self._synced_gen = target

    def _send(self, handle: Any) -> None:
        """Under ``_lock``: hand the unsent lines to the OS in one write."""
        if not self._unsent:
            return
        data = memoryview(b"\n".join(self._unsent) + b"\n")
        self._unsent.clear()  # a failed write leaves them pending in memory; replay skips a torn line
        while data:
            data = data[handle.write(data) :]

    def set_security_listener(self, listener: SecurityListener | None) -> None:
        self._on_security = listener

    def set_wal_fsync(self, enabled: bool) -> None:
        """``True`` (default): :meth:`sync` returns after fsync — a record survives a machine crash.
        ``False``: after the OS has the line — it survives a killed process (the SIGKILL tests), and the
        flusher's fsync'd ``links.wal`` covers it within ``flush_max_delay``; a machine crash can lose that
        window. The flusher deliberately does not fsync ``events.wal`` in between: an fsync there made
        the event loop's next WAL write wait for the disk (stable pages). Each deployment chooses; the
        fail-closed bound is unaffected."""
        self._wal_fsync = enabled

    def set_chain_resolver(self, resolver: ChainResolver | None, ttl: float = 60.0) -> None:
        """Fill ``l1_ref`` of events that name an L2 version but not its parent, so every record traces
        back to its L1 key. Answers are cached ``ttl`` seconds per (tenant, version); a failed lookup
        leaves the field empty rather than refusing the record."""
        self._resolve_chain, self._chain_ttl = resolver, ttl
        self._chain_cache.clear()

    def _l1_ref(self, tenant_id: str, l2_version: int) -> str:
        if self._resolve_chain is None:
            return ""
        now = time.monotonic()
        cached = self._chain_cache.get((tenant_id, l2_version))
        if cached is not None and now - cached[1] < self._chain_ttl:
            return cached[0]
        try:
            ref = self._resolve_chain(tenant_id, l2_version) or ""
        except Exception:  # noqa: BLE001
            return ""
        if len(self._chain_cache) > 10_000:
            self._chain_cache.clear()
        self._chain_cache[(tenant_id, l2_version)] = (ref, now)
        return ref

    def set_checkpointer(self, checkpointer: Checkpointer | None, interval: float) -> None:
        """Have the flusher thread (WAL mode) checkpoint the tenants it wrote to every ``interval`` s."""
        self._checkpointer, self._checkpoint_interval = checkpointer, interval

    def flush(self) -> None:
        with self._flush_lock:
            self._flushed_at = time.monotonic()
            with self._lock:
                pending, self._pending = self._pending, []
                if pending and self._links_wal is not None:
                    self._retire_events_wal()  # new events go to a fresh file while these are linked
            heads = dict(self._heads)
            try:
                links = self._link(pending)  # outside the lock: hashing and compressing take a while
                if links and self._links_wal is not None:
                    # Outside the recorders' lock: this fsync took 2-60 ms on the benchmark's disk and
                    # held every KMIP answer while it ran.
                    self._append_links(links)
            except BaseException:
                # Nothing is lost: the events go back in front of the pending ones, the chains back to
                # where they were, and the moved-aside WAL files stay until a later flush succeeds.
                self._heads = heads
                with self._lock:
                    self._pending[:0] = pending
                raise
            if links and self._links_wal is not None:
                self._drop_retired()  # every event they held now lives in links.wal
            with self._lock:
                self._unwritten.extend(links)
                todo = list(self._unwritten)
            written: list[Link] = []
            try:
                for link in todo:
                    self._store_writer_key(link)
                    if link.tenant_id not in self._span_marked and self._bounded(link):
                        mark_spans_bounded(
                            link.tenant_id, self._clock.now().isoformat(timespec="microseconds")
                        )
                        self._span_marked.add(link.tenant_id)
                    if link.store():
                        written.append(link)
                    with self._lock:
                        done = self._unwritten.pop(0)
                        self._logged.discard(id(done))  # ids are reused once an object is gone
                        self._backlog -= done.count
            except Exception as exc:  # the store is down: keep the rest, fail closed past the bound
                self._last_error = type(exc).__name__
                self._after_store(written)
                if self._links_wal is None:
                    self._log_unstored()
                    raise AuditUnavailable("audit store unreachable; operation refused") from exc
                return
            self._last_error = None
            self._after_store(written)
            with self._lock:
                stored_all = not self._unwritten
            if stored_all and self._links_wal is not None:
                self._truncate(self._links_wal)

    def _log_unstored(self) -> None:
        """Without a WAL (a Lambda) a record whose store write failed lives only in this process, and its
        operation may already have acted (the store failed between the probe and the write). Each such
        record is written once to the log (CloudWatch Logs keeps it), whole: records hold no secrets.
        ``openkcm audit ingest-log`` chains the ones the trail still lacks."""
        with self._lock:
            links = [link for link in self._unwritten if id(link) not in self._logged]
            self._logged.update(id(link) for link in links)
        for link in links:
            lines = link.lines or [canonical(e) for e in link.events or []]
            for line in lines:
                log.error('{"event":"%s","record":%s}', UNSTORED_EVENT, line.decode("utf-8"))

    @staticmethod
    def _bounded(link: Link) -> bool:
        """Whether the link keeps LINK_MAX_SPAN (a link replayed from an earlier version's links.wal may
        not: the tenant is marked with a later one)."""
        first_time, last_time, _, _ = link.summary()
        return _span(first_time, last_time) <= LINK_MAX_SPAN

    def _append_links(self, links: list[Link]) -> None:
        """Write and fsync the links to links.wal, or leave the file as it was (a failed write is cut off
        so a retry never follows a torn line)."""
        handle = self._links_wal
        size = os.fstat(handle.fileno()).st_size
        try:
            for link in links:
                handle.write(link.to_wal_bytes() + b"\n")
            handle.flush()
            os.fsync(handle.fileno())
        except BaseException:
            with contextlib.suppress(Exception):
                handle.close()
            with contextlib.suppress(OSError):
                os.truncate(self._links_path, size)
            self._links_wal = open(self._links_path, "ab")  # noqa: SIM115
            raise

    def _retire_events_wal(self) -> None:
        """Under ``_lock``: move the events file aside (a rename, no I/O wait) and start a fresh one. The
        old handle stays open until links.wal holds its events (a concurrent :meth:`sync` may still
        fsync it); replay reads retired files too."""
        self._send(self._events_wal)
        if self._dirty:  # in the OS, not yet on disk: a sync() from now on must fsync the moved file
            self._written_gen += 1
        self._retire_counter += 1
        retired = self.wal_dir / f"events-retired-{self._retire_counter:012d}.wal"
        os.replace(self._events_path, retired)
        self._retired.append((self._events_wal, retired))
        self._events_wal = open(self._events_path, "ab", buffering=0)  # noqa: SIM115
        self._dirty = False

    def _drop_retired(self) -> None:
        with self._sync_lock, self._lock:  # no sync() is between choosing a handle and fsyncing it
            retired, self._retired = self._retired, []
            for handle, _ in retired:
                handle.close()
        for _, path in retired:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)

    def _due(self) -> bool:
        with self._lock:
            pending = len(self._pending)
            return bool(
                self._unwritten
                or pending >= self._batch
                or (pending and time.monotonic() - self._flushed_at >= self._max_delay)
            )

    def _after_store(self, written: list[Link]) -> None:
        self.stats["stored_links"] += len(written)
        self.stats["stored_events"] += sum(link.count for link in written)
        for link in written:
            self._touched.add(link.tenant_id)
        try:
            _count_usage(written)
        except Exception as exc:  # noqa: BLE001 (analytics only; the trail itself is stored)
            log.warning("audit usage counters not updated: %s", type(exc).__name__)
        while self._security:
            event = self._security.popleft()
            if self._on_security is not None:
                try:
                    self._on_security(event)
                except Exception as exc:  # noqa: BLE001 (the record is kept; the bus is best effort)
                    log.warning("security event not published: %s", type(exc).__name__)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        with contextlib.suppress(AuditUnavailable):
            self.flush()
        with self._lock, contextlib.suppress(OSError):
            if self._events_wal is not None:
                self._send(self._events_wal)
        for handle in [self._events_wal, self._links_wal] + [h for h, _ in self._retired]:
            if handle is not None and not handle.closed:
                handle.close()  # moved-aside files stay on disk for the next process's replay
        self._events_wal = self._links_wal = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    # ---- internals -----------------------------------------------------------------------------
    def set_authenticator(self, authenticator: WrappingKey | None) -> None:
        """Sign links with a writer key wrapped by ``authenticator`` (``build_runtime`` passes the root key)."""
        with self._lock:
            if self._authenticator is None:
                self._authenticator = authenticator

    def _ensure_writer_key(self) -> None:
        """Called by the flusher before pending events are linked; a failure leaves them pending."""
        if self._authenticator is None or self._writer_key is not None:
            return
        key = os.urandom(32)
        try:
            wrapped = self._authenticator.wrap(key, writer_key_context(self.writer_id))
        except Exception as exc:
            self._last_error = type(exc).__name__
            raise AuditUnavailable("the audit writer key cannot be wrapped right now") from exc
        self._writer_key = key
        self._writer_keys[self.writer_id] = (wrapped, self._authenticator.ref)
        self._save_writers()

    def _save_writers(self) -> None:
        """Keep the wrapped keys of this slot's writers beside the WAL, so a replay after a crash can still
        record ``K#`` items for links it finishes writing."""
        if self._events_wal is None and not hasattr(self, "_writers_path"):
            return
        rows = [
            {"writer": w, "wrapped": base64.b64encode(k).decode(), "parent_ref": r}
            for w, (k, r) in self._writer_keys.items()
        ]
        _rewrite(self._writers_path, [json.dumps(rows)])

    def _store_writer_key(self, link: Link) -> None:
        if (link.writer, link.tenant_id) in self._keyed:
            return
        known = self._writer_keys.get(link.writer)
        if known is not None:
            store_writer_key(
                link.tenant_id,
                link.writer,
                known[0],
                known[1],
                self._clock.now().isoformat(timespec="microseconds"),
            )
        self._keyed.add((link.writer, link.tenant_id))

    def _link(self, pending: list[Pending]) -> list[Link]:
        """Under ``_flush_lock`` (heads and the writer key belong to the flusher)."""
        if pending:
            self._ensure_writer_key()
        by_tenant: dict[str, list[Pending]] = {}
        if len({entry[0] for entry in pending}) == 1:
            by_tenant[pending[0][0]] = pending  # one tenant (a KMIP worker usually serves one): no regrouping
        else:
            for entry in pending:
                by_tenant.setdefault(entry[0], []).append(entry)
        links = []
        for tenant_id, entries in by_tenant.items():
            fits = int(0.9 * MAX_ITEM_BYTES / self._item_bytes_per_event)
            chunks = _chunks(entries, max(1, min(self._batch, fits)), MAX_LINK_BYTES)
            while chunks:
                chunk = chunks.pop(0)
                times = [entry[3] for entry in chunk]
                first_time, last_time = min(times), max(times)
                if len(chunk) > 1 and _span(first_time, last_time) > LINK_MAX_SPAN:
                    chunks[:0] = _split_by_span(chunk)  # a backlog from an outage: readers need the bound
                    continue
                seq, prev = self._heads.get(tenant_id, (0, GENESIS))
                link = Link.build(
                    tenant_id,
                    self.writer_id,
                    seq + 1,
                    prev,
                    None,
                    lines=[entry[1] for entry in chunk],
                    digests=b"".join([entry[2] for entry in chunk]).hex(",", 32).split(","),
                )
                link.describe(
                    first_time,
                    last_time,
                    sorted({entry[4] for entry in chunk}),
                    [(entry[5], entry[3]) for entry in chunk if entry[5] is not None],
                )
                size = link.item_size()
                if len(chunk) >= 100:  # small links compress worse: they say little about the next big one
                    self._item_bytes_per_event = max(8.0, size / len(chunk))
                if len(chunk) > 1 and size > MAX_ITEM_BYTES:  # events that barely compress
                    half = len(chunk) // 2
                    chunks[:0] = [chunk[:half], chunk[half:]]
                    continue
                if self._writer_key is not None:
                    link.mac = link_mac(self._writer_key, link.hash)
                self._heads[tenant_id] = (link.seq, link.hash)
                links.append(link)
        return links

    @staticmethod
    def _truncate(handle: Any) -> None:
        if handle is not None:
            handle.flush()
            handle.truncate(0)
            os.fsync(handle.fileno())

    def _claim_slot(self, wal_dir: Path) -> Path:
        """Each live process owns one slot directory (flock); a crashed process's slot is replayed by the
        next process that claims it. Several KMIP workers can share one ``wal_dir``."""
        wal_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        for index in range(1024):
            slot = wal_dir / f"slot-{index:03d}"
            slot.mkdir(exist_ok=True, mode=0o700)
            fd = os.open(slot / "lock", os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                continue
            self._lock_fd = fd
            return slot
        raise AuditUnavailable("no free audit WAL slot")

    def _replay(self) -> None:
        """After a crash: finish writing computed links, then re-queue events that never got linked.
        The files are then rewritten (write-then-rename) so a torn last line never merges with new ones."""
        linked: set[str] = set()
        if self._writers_path.exists():
            try:
                for row in json.loads(self._writers_path.read_text(encoding="utf-8")):
                    self._writer_keys[row["writer"]] = (base64.b64decode(row["wrapped"]), row["parent_ref"])
            except (ValueError, KeyError, TypeError):
                pass  # written by write-then-rename: only a damaged disk gets here
        if self._links_path.exists():
            for line in self._links_path.read_bytes().splitlines():
                try:
                    link = Link.from_wal(line)
                except (ValueError, TypeError, KeyError):
                    continue  # a torn last line was never acknowledged
                linked.update(e["event_id"] for e in link.events or [])
                self._unwritten.append(link)
        event_files = sorted(self.wal_dir.glob("events-retired-*.wal")) + [self._events_path]
        for path in (p for p in event_files if p.exists()):
            for line in path.read_bytes().splitlines():
                try:
                    record = json.loads(line)
                except ValueError:
                    continue
                if isinstance(record, dict) and record.get("event_id") not in linked:
                    encoded = canonical(record)
                    try:
                        entry = pending_entry(record, encoded, hashlib.sha256(encoded).digest())
                    except (KeyError, TypeError):
                        continue  # not a record this sink wrote (damaged on disk): it cannot be chained
                    linked.add(record.get("event_id"))  # a crash during an earlier replay left copies
                    self._pending.append(entry)
        pending_writers = {link.writer for link in self._unwritten}
        self._writer_keys = {w: k for w, k in self._writer_keys.items() if w in pending_writers}
        self._save_writers()
        self.stats["replayed_links"] = len(self._unwritten)
        self.stats["replayed_events"] = len(self._pending) + sum(link.count for link in self._unwritten)
        self._backlog = self.stats["replayed_events"]
        _rewrite(self._links_path, [link.to_wal_bytes().decode() for link in self._unwritten])
        _rewrite(self._events_path, [entry[1].decode("utf-8") for entry in self._pending])
        for path in event_files[:-1]:  # their events are in the rewritten events.wal or links.wal
            path.unlink(missing_ok=True)

    def _run(self, interval: float) -> None:
        while not self._stop.wait(interval):
            try:
                self.sync()  # hand any unsynced lines to the OS before they are linked
                if self._due():
                    self.flush()
            except Exception as exc:  # noqa: BLE001
                log.warning("audit flush failed: %s", type(exc).__name__)
            self._maybe_checkpoint()

    def _maybe_checkpoint(self) -> None:
        if self._checkpointer is None or self._checkpoint_interval <= 0:
            return
        if time.monotonic() - self._checkpointed_at < self._checkpoint_interval:
            return
        self._checkpointed_at = time.monotonic()
        tenants, self._touched = self._touched, set()
        for tenant_id in sorted(tenants):
            try:
                self._checkpointer(tenant_id)
            except Exception as exc:  # noqa: BLE001
                log.warning("audit checkpoint of a tenant failed: %s", type(exc).__name__)


def _chunks(entries: list[Pending], most: int, max_bytes: int) -> list[list[Pending]]:
    """Cut one tenant's pending events into links of at most ``most`` events and ``max_bytes`` bytes
    (events plus their hex digests; a single event is never split). Cut points are found by bisecting
    the running byte total: a Python step per event here was a tenth of the flusher's time."""
    ends = list(accumulate([len(entry[1]) + 70 for entry in entries]))
    chunks: list[list[Pending]] = []
    start, base = 0, 0
    while start < len(entries):
        end = max(start + 1, bisect_right(ends, base + max_bytes, start, min(len(entries), start + most)))
        chunks.append(entries[start:end])
        start, base = end, ends[end - 1]
    return chunks


def _span(first_time: str, last_time: str) -> timedelta:
    """How far apart two event times are (zero when either does not parse: nothing to split by)."""
    try:
        return datetime.fromisoformat(last_time) - datetime.fromisoformat(first_time)
    except (TypeError, ValueError):
        return timedelta(0)


def _split_by_span(chunk: list[Pending]) -> list[list[Pending]]:
    """Cut events, in record order, into runs whose times lie within LINK_MAX_SPAN of each other."""
    runs: list[list[Pending]] = []
    run: list[Pending] = []
    low = high = ""
    for entry in chunk:
        when = entry[3]
        if run and _span(min(low, when), max(high, when)) > LINK_MAX_SPAN:
            runs.append(run)
            run = []
        if not run:
            low = high = when
        run.append(entry)
        low, high = min(low, when), max(high, when)
    runs.append(run)
    return runs


def _rewrite(path: Path, lines: list[str]) -> None:
    write_private(path, "".join(line + "\n" for line in lines).encode("utf-8"))


def _count_usage(links: list[Link]) -> None:
    """Per tenant/day/operation/service counters with atomic ADD. Only links this writer stored for the
    first time are counted, so a replay does not count twice."""
    # Comprehensions and Counter rather than one Python loop with tuple updates: this ran once per event
    # in the flusher (~1.3 us each in the KMIP benchmark). Events are in record order, so the last time
    # seen for a key is its latest.
    used = [pair for link in links for pair in link.usage()]
    counts = Counter([key for key, _ in used])
    last_seen = dict(used)
    for key, count in counts.items():
        tenant_id, day, operation, service = key
        UsageModel(tenant_id, f"U#{day}#{operation}#{service}").update(
            actions=[
                UsageModel.count.add(count),
                UsageModel.day.set(day),
                UsageModel.operation.set(operation),
                UsageModel.service.set(service),
                UsageModel.last_seen.set(last_seen[key]),
            ]
        )
