"""The bytes-in/bytes-out KMIP core: ``KmipCore.handle(request, identity) -> response``.

Every transport (the mTLS socket server, tests, a future HTTP binding) calls this one function. Per
request message it: decodes (strictly, bounded in bytes, items and nesting), authorizes the certificate's
tenant (known, Ready, the certificate serial not revoked: cached, refreshed with the tenant epoch), runs
each batch item through the dispatch table with a frozen :class:`RequestContext`, records one audit event
per item with ``sync=False`` and makes them durable with ONE ``audit.sync()`` before the response is
encoded (group commit). There is no global lock and no request state outside the call.

A refused certificate or tenant gets its refusal on every message, but the security record of it (and its
EventBridge event) at most once a minute per certificate, refusal and operation, with the count of those
refused in between: a revoked client retrying in a loop must not become a flood of audit writes.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import threading
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from openkcm.domain.audit import EventTemplate, NullAuditSink, RefusalThrottle, acceptable_text
from openkcm.domain.hierarchy import derive_l4
from openkcm.domain.objects import ManagedObject, ObjectStore
from openkcm.domain.pki import ClientIdentity
from openkcm.domain.tenants import PLATFORM_TENANT, READY
from openkcm.errors import InvalidRequest, NotFound, OpenKCMError
from openkcm.kmip.context import BatchState, Outcome, RequestContext
from openkcm.kmip.dispatch import HANDLERS
from openkcm.kmip.errors import KmipError, from_domain
from openkcm.ops.runtime import Runtime
from openkcm.protocol import messages, ttlv
from openkcm.protocol.messages import MessageError, RequestItem, RequestMessage, ResponseItem
from openkcm.protocol.tags import OPERATION_NAMES, BatchContinuation, Op, Reason, Status, Tag
from openkcm.storage import CertificateModel

log = logging.getLogger("openkcm.kmip")

# Read-only operations that can be answered from warm caches without touching the store.
_INLINE_OPS = frozenset(
    {
        Op.GET,
        Op.GET_ATTRIBUTES,
        Op.GET_ATTRIBUTE_LIST,
        Op.ENCRYPT,
        Op.DECRYPT,
        Op.MAC,
        Op.MAC_VERIFY,
        Op.CHECK,
        Op.DISCOVER_VERSIONS,
        Op.QUERY,
    }
)
_LISTING_KEPT = _INLINE_OPS | {Op.LOCATE}  # items after which a batch's Locate listing still holds
# Operations that change nothing: only their results may be replaced by Response Too Large (a committed
# Create, Register, Destroy... keeps its real result, or the client would never learn what it did).
_READ_ONLY = _LISTING_KEPT
REFUSAL_AUDIT_SECONDS = 60.0  # authorization refusals: one security record a minute per certificate
_NO_OBJECT_OPS = frozenset({Op.DISCOVER_VERSIONS, Op.QUERY})


@dataclass(frozen=True)
class KmipConfig:
    max_message_size: int = 1 << 20
    max_depth: int = 16
    max_items: int = ttlv.DEFAULT_MAX_ITEMS  # TTLV items in one request (a 64-item batch needs ~2,400)
    max_batch_items: int = 64
    # Larger requests never take the inline path: decoding them on a listener's event loop would stall
    # every other connection (a warm Get is ~100 bytes; 4 KiB is at most 512 items, ~0.4 ms to decode).
    inline_max_size: int = 4096
    server_name: str = "OpenKCM KMIP server"
    inline_warm: bool = True  # let transports answer warm read-only requests without a worker hand-off


def operation_name(op: int | None) -> str:
    """KMIP operation in audit form: ``GET_ATTRIBUTES`` -> ``GetAttributes``."""
    if op is None:
        return "Message"
    name = OPERATION_NAMES.get(op)
    return "".join(part.capitalize() for part in name.split("_")) if name else f"Operation{op}"


class Metrics:
    """Operation counts, errors and a latency histogram (ms buckets), drained as EMF by the server."""

    BUCKETS = (0.25, 0.5, 1, 2, 5, 10, 25, 50, 100, 250, 1000)

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        self.ops: dict[tuple[str, str], int] = defaultdict(int)
        self.latency: list[int] = [0] * (len(self.BUCKETS) + 1)
        self.messages = 0

    def observe(self, ops: list[tuple[str, str]], seconds: float) -> None:
        ms = seconds * 1000
        bucket = next((i for i, b in enumerate(self.BUCKETS) if ms <= b), len(self.BUCKETS))
        with self._lock:
            self.messages += 1
            self.latency[bucket] += 1
            for key in ops:
                self.ops[key] += 1

    def drain(self) -> dict[str, Any]:
        with self._lock:
            snapshot = {"messages": self.messages, "ops": dict(self.ops), "latency": list(self.latency)}
            self.reset()
        return snapshot


class KmipServices:
    """What operations use. Built once per process; immutable afterwards."""

    def __init__(self, runtime: Runtime, config: KmipConfig, store: ObjectStore) -> None:
        self.runtime = runtime
        self.config = config
        self.store = store
        self.audit = runtime.audit
        self.clock = runtime.clock
        self.keyring = runtime.keyring


def _derive(base: bytes, obj: ManagedObject) -> bytes:
    """Material of a derived (L4) object: recomputed from its base on every use, never stored."""
    recipe: dict[str, Any] = obj.first("_derived")
    data = bytes.fromhex(recipe["data"])
    length = int(recipe["length"])
    if recipe["method"] == "hmac":
        import hashlib
        import hmac

        return hmac.new(base, data, hashlib.sha256).digest()[:length]
    salt = bytes.fromhex(recipe["salt"]) if recipe.get("salt") else None
    return derive_l4(base, data, length, salt)


class KmipCore:
    def __init__(
        self, runtime: Runtime, config: KmipConfig | None = None, store: ObjectStore | None = None
    ) -> None:
        self.config = config or KmipConfig()
        if store is None:
            store = ObjectStore(runtime.keyring, clock=runtime.clock, ttl=runtime.settings.epoch_poll_seconds)
        store.deriver = _derive
        self.services = KmipServices(runtime, self.config, store)
        self.metrics = Metrics()
        self._cert_cache: dict[tuple[str, str], tuple[float, int, str | None, float]] = {}
        # One audit template per (tenant, certificate subject, service, client address): a connection's
        # events share those fields, validated and encoded once (see EventTemplate).
        self._templates: dict[tuple[str, str, str, str], EventTemplate] = {}
        self._cert_lock = threading.Lock()
        self._refusals = RefusalThrottle(REFUSAL_AUDIT_SECONDS)
        self._poll = runtime.settings.epoch_poll_seconds
        # request ids: unique per process start + a counter (no random syscall per request)
        self._request_prefix = uuid.uuid4().hex[:12]
        self._request_counter = itertools.count(1)
        # The inline path needs an audit sink that never blocks in record(): a WAL (or none at all).
        audit = runtime.audit
        self._inline_ok = self.config.inline_warm and (
            getattr(audit, "wal_dir", None) is not None or isinstance(audit, NullAuditSink)
        )
        self._inline_fsync = bool(getattr(runtime.settings, "audit_wal_fsync", True)) and not isinstance(
            audit, NullAuditSink
        )
        self._inline_max = self.config.inline_max_size

    # ---- authorization -------------------------------------------------------------------------
    def _certificate_refusal(self, tenant_id: str, serial_hex: str, epoch: int) -> str | None:
        """Why the tenant's certificate with this serial is not accepted, or None. Only recorded
        certificates are (``openkcm.ops.certificates``): one without a record could be neither listed nor
        revoked. Expiry is checked here too, against the record: TLS checks it only at the handshake, and a
        connection (or a resumed session) may outlive the certificate. Cached per tenant epoch, which a
        revocation bumps, for at most ``epoch_poll_seconds``."""
        now = time.monotonic()
        key = (tenant_id, serial_hex)
        with self._cert_lock:
            hit = self._cert_cache.get(key)
        if hit is None or hit[1] != epoch or now - hit[0] >= self._poll:
            try:
                cert = CertificateModel.get(tenant_id, CertificateModel.sort_key(serial_hex))
                refusal = "revoked" if cert.revoked_at is not None else None
                not_after = cert.not_after.timestamp()
            except CertificateModel.DoesNotExist:
                refusal, not_after = "not issued by this deployment", 0.0
            hit = (now, epoch, refusal, not_after)
            with self._cert_lock:
                if len(self._cert_cache) > 100_000:
                    self._cert_cache.clear()
                self._cert_cache[key] = hit
        if hit[2] is None and self.services.clock.timestamp() >= hit[3]:
            return "expired"
        return hit[2]

    def authorize(self, identity: ClientIdentity) -> KmipError | None:
        """None when the caller may proceed; otherwise the error every item gets."""
        try:
            epoch, status = self.services.keyring.tenant_state(identity.tenant_id)
        except NotFound:
            return KmipError(Reason.AUTHENTICATION_NOT_SUCCESSFUL, "the client certificate is not accepted")
        if status != READY:
            return KmipError(Reason.PERMISSION_DENIED, "the tenant is not enabled")
        refusal = self._certificate_refusal(identity.tenant_id, identity.serial_hex, epoch)
        if refusal is not None:
            return KmipError(Reason.AUTHENTICATION_NOT_SUCCESSFUL, f"the client certificate is not accepted ({refusal})")
        return None

    # ---- audit ---------------------------------------------------------------------------------
    def _audit(
        self,
        identity: ClientIdentity | None,
        tenant_id: str,
        operation: str,
        *,
        result: str,
        kind: str = "operation",
        object_id: str = "",
        reason: str = "",
        l2_version: int = 0,
        client_address: str = "",
        request_id: str = "",
        details: dict[str, str] | None = None,
    ) -> None:
        actor, role = (identity.subject[:256], identity.service_id) if identity else ("", "")
        if details:  # refusals name the claimed tenant and serial: rare, not worth a cached template
            template = EventTemplate(
                tenant_id=tenant_id,
                source="kmip",
                actor=actor,
                actor_role=role,
                client_address=client_address,
                details=details,
            )
        else:
            template = self._template(tenant_id, actor, role, client_address)
        record, reason = self.services.audit.record_from, reason[:200]
        try:
            record(
                template,
                operation,
                result=result,
                kind=kind,
                object_id=object_id,
                reason=reason,
                l2_version=l2_version,
                request_id=request_id,
                sync=False,
            )
        except InvalidRequest:  # client-chosen text the schema refuses (an id, an echoed value): keep the
            # event without it rather than lose it or fail the request
            record(
                template,
                operation,
                result=result,
                kind=kind,
                object_id=object_id if acceptable_text(object_id) else "<unprintable>",
                reason=reason if acceptable_text(reason) else "<unprintable>",
                l2_version=l2_version,
                request_id=request_id,
                sync=False,
            )

    def _template(self, tenant_id: str, actor: str, role: str, client_address: str) -> EventTemplate:
        key = (tenant_id, actor, role, client_address)
        template = self._templates.get(key)
        if template is None:
            template = EventTemplate(
                tenant_id=tenant_id,
                source="kmip",
                actor=actor,
                actor_role=role,
                client_address=client_address,
            )
            if len(self._templates) > 10_000:  # client addresses churn: a bound, not an LRU
                self._templates.clear()
            self._templates[key] = template
        return template

    # ---- the core ------------------------------------------------------------------------------
    def handle(self, request: bytes, identity: ClientIdentity, client_address: str = "") -> bytes:
        """Answer one request message (may read the store: run it off the event loop)."""
        started = time.perf_counter()
        message: RequestMessage | MessageError
        if len(request) > self._inline_max and self.authorize(identity) is not None:
            # A refused certificate's large message is not decoded (only its header, for the version):
            # it gets the refusal as one answer for the whole message. Decoding what will be refused
            # anyway would let a revoked client keep the workers (and the GIL) busy at will.
            message = MessageError("not read", version=messages.peek_version(request))
        else:
            try:
                message = self._decode(request)
            except MessageError as exc:
                message = exc
        return self._process(message, identity, client_address, started, sync=True)

    def handle_decoded(
        self, message: RequestMessage | MessageError, identity: ClientIdentity, client_address: str = ""
    ) -> bytes:
        """:meth:`handle` for a message that :meth:`try_inline_or_decoded` already decoded (or found
        malformed) and handed back: the worker does not decode it a second time."""
        return self._process(message, identity, client_address, time.perf_counter(), sync=True)

    # ---- the non-blocking fast path ------------------------------------------------------------
    @property
    def inline_needs_sync(self) -> bool:
        """After :meth:`try_inline`, whether the caller must still run :meth:`sync_audit` (an fsync)
        before it sends the response; False when the WAL is handed to the OS only (already done)."""
        return self._inline_fsync

    def sync_audit(self) -> None:
        """Make the records of answers the caller holds durable; raises if they cannot be (the caller
        then sends none of those answers)."""
        self.services.audit.sync()

    def try_inline(
        self, request: bytes, identity: ClientIdentity, client_address: str = "", *, defer_sync: bool = False
    ) -> bytes | None:
        """The response when the request can be answered from memory alone, else None (see
        :meth:`try_inline_or_decoded`, which also hands back what it decoded)."""
        answer = self.try_inline_or_decoded(request, identity, client_address, defer_sync=defer_sync)
        return answer if answer.__class__ is bytes else None  # type: ignore[return-value]

    def try_inline_or_decoded(
        self, request: bytes, identity: ClientIdentity, client_address: str = "", *, defer_sync: bool = False
    ) -> bytes | RequestMessage | MessageError | None:
        """Bytes: the response, when the request could be answered from memory alone (warm caches, a
        Ready tenant, a certificate accepted at this epoch, read-only operations, a WAL-backed audit
        sink). Otherwise what the caller passes to a worker: the decoded message (or why it is malformed)
        for :meth:`handle_decoded`, or None when nothing was decoded, for :meth:`handle`.

        Cheap checks come first: a request over ``inline_max_size`` or from a certificate or tenant that
        is not warm and accepted is never decoded here (on a listener's event loop it would delay every
        other connection). Audit records are kept; with ``inline_needs_sync`` the caller syncs them
        before answering. With ``defer_sync`` the caller always does: one :meth:`sync_audit` for all the
        answers it holds (a listener answering many connections in one loop pass pays one WAL write
        instead of one each)."""
        if not self._inline_ok or len(request) > self._inline_max:
            return None
        # Before any decoding: the tenant's state is in memory and Ready, and this certificate was
        # accepted at the tenant's current epoch, recently enough (its expiry is checked by authorize).
        keyring = self.services.keyring
        tenant = identity.tenant_id
        if not keyring.warm(tenant):
            return None
        epoch, status = keyring.tenant_state(tenant)
        with self._cert_lock:
            hit = self._cert_cache.get((tenant, identity.serial_hex))
        if (
            hit is None
            or hit[1] != epoch
            or hit[2] is not None
            or status != READY
            or time.monotonic() - hit[0] >= self._poll
        ):
            return None
        started = time.perf_counter()
        try:
            message = self._decode(request)
        except MessageError as exc:
            return exc  # rare: the ordinary path answers it, without decoding again
        if not self._warm(message, tenant):
            return message
        sync = not (defer_sync or self._inline_fsync)
        return self._process(message, identity, client_address, started, sync=sync)

    def _warm(self, message: RequestMessage, tenant: str) -> bool:
        """Every item is a read-only operation on an object (and L2 key) already in memory."""
        keyring, store = self.services.keyring, self.services.store
        for item in message.items:
            if item.operation not in _INLINE_OPS:
                return False
            if item.operation in _NO_OBJECT_OPS:
                continue
            payload = item.payload
            if payload is None or payload.get(Tag.KEY_WRAPPING_SPECIFICATION) is not None:
                return False
            node = payload.get(Tag.UNIQUE_IDENTIFIER)
            if node is None or node.type != ttlv.TEXT_STRING:
                return False
            obj = store.peek(tenant, node.value)  # type: ignore[arg-type]
            if obj is None or obj.derived_from is not None:
                return False
            if obj.wrapped is not None and not keyring.warm(tenant, obj.l2_version):
                return False
        return True

    def _decode(self, request: bytes) -> RequestMessage:
        config = self.config
        return messages.decode_request(
            request, max_size=config.max_message_size, max_depth=config.max_depth, max_items=config.max_items
        )

    def _process(
        self,
        message: RequestMessage | MessageError,
        identity: ClientIdentity,
        client_address: str,
        started: float,
        *,
        sync: bool,
    ) -> bytes:
        request_id = f"{self._request_prefix}-{next(self._request_counter)}"
        now = int(self.services.clock.timestamp())
        counted: list[tuple[str, str]] = []
        if isinstance(message, MessageError):
            exc = message
            # A refused certificate or tenant gets its refusal, audited as such, whatever it sent: a
            # malformed message must not be a way round authorization (nor a different answer to it).
            refused = self.authorize(identity)
            if refused is not None:
                self._audit_refusal(identity, refused, "Message", client_address, request_id)
                exc = MessageError(refused.message, refused.reason, exc.version)
                counted.append(("Message", "denied"))
            else:
                self._audit(
                    identity,
                    identity.tenant_id or PLATFORM_TENANT,
                    "Message",
                    result="failure",
                    reason=f"invalid message: {exc.message}"[:200],
                    client_address=client_address,
                    request_id=request_id,
                )
                counted.append(("Message", "failure"))
            if sync:
                self._sync()
            self.metrics.observe(counted, time.perf_counter() - started)
            return messages.error_response(exc, now)
        header = message.header
        version = header.version
        refusal = unauthorized = self.authorize(identity)
        if refusal is None and len(message.items) > self.config.max_batch_items:
            refusal = KmipError(Reason.INVALID_MESSAGE, "too many batch items")
        if refusal is None and header.asynchronous:
            refusal = KmipError(Reason.FEATURE_NOT_SUPPORTED, "asynchronous operations are not supported")
        if (
            refusal is None
            and header.batch_error_continuation == BatchContinuation.UNDO
            and len(message.items) > 1  # one item has nothing before it to undo: Undo is Stop
        ):
            refusal = KmipError(
                Reason.FEATURE_NOT_SUPPORTED, "Batch Error Continuation Option Undo is not supported"
            )
        if refusal is None:
            try:
                self.services.audit.ensure_writable()
            except OpenKCMError as exc:
                refusal = from_domain(exc)
        results: list[ResponseItem] = []
        if refusal is not None:
            security = refusal.reason in (Reason.AUTHENTICATION_NOT_SUCCESSFUL, Reason.PERMISSION_DENIED)
            tenant = (
                identity.tenant_id
                if refusal.reason != Reason.AUTHENTICATION_NOT_SUCCESSFUL
                else PLATFORM_TENANT
            )
            for item in message.items:
                name = operation_name(item.operation)
                results.append(
                    ResponseItem(
                        item.operation,
                        Status.OPERATION_FAILED,
                        refusal.reason,
                        refusal.message,
                        item_id=item.item_id,
                    )
                )
                counted.append((name, "denied"))
            operation = operation_name(message.items[0].operation)
            if unauthorized is not None:
                self._audit_refusal(identity, unauthorized, operation, client_address, request_id)
            else:
                with contextlib.suppress(OpenKCMError):
                    self._audit(
                        identity,
                        tenant,
                        operation,
                        result="denied",
                        kind="security" if security else "operation",
                        reason=refusal.message,
                        client_address=client_address,
                        request_id=request_id,
                        details={
                            "claimed_tenant": identity.tenant_id[:64],
                            "serial": identity.serial_hex[:64],
                        },
                    )
        else:
            ctx = RequestContext(
                identity.tenant_id,
                identity.service_id,
                identity.subject,
                identity.serial_hex,
                client_address,
                version,
                request_id,
                self.services,
            )
            batch = BatchState()
            stop_on_error = header.batch_error_continuation != BatchContinuation.CONTINUE
            for item in message.items:
                result = self._run_item(ctx, item, batch, identity)
                if item.operation not in _LISTING_KEPT:
                    batch.listing = None  # the item may have changed an object Locate would match
                results.append(result)
                counted.append(
                    (
                        operation_name(item.operation),
                        "success" if result.status == Status.SUCCESS else "failure",
                    )
                )
                if result.status != Status.SUCCESS and stop_on_error:
                    break
        if sync:
            self._sync()
        response = messages.encode_response(version, results, now)
        limit = header.max_response_size
        if limit is not None and len(response) > limit:
            # Only what changed nothing is withheld: a state-changing item ran, was audited and may have
            # created an object, so it keeps its real result (its id) even when that alone is over the
            # limit; failing it here would leave the client believing nothing happened. (Refusing such
            # a message up front would need its response size before running it, which is unknowable.)
            results = [
                ResponseItem(
                    r.operation,
                    Status.OPERATION_FAILED,
                    Reason.RESPONSE_TOO_LARGE,
                    "the response exceeds Maximum Response Size",
                    item_id=r.item_id,
                )
                if r.operation in _READ_ONLY and r.status == Status.SUCCESS
                else r
                for r in results
            ]
            response = messages.encode_response(version, results, now)
        self.metrics.observe(counted, time.perf_counter() - started)
        return response

    def _audit_refusal(
        self,
        identity: ClientIdentity,
        refusal: KmipError,
        operation: str,
        client_address: str,
        request_id: str,
    ) -> None:
        """The security record of a message refused for its certificate or tenant: the first at once,
        then at most one a minute per (certificate, refusal, operation, client host) with the count refused
        between (operations KMIP does not define share one key). The host is in the key: a certificate
        turning up from a new address is the sign of a stolen one and is recorded at once."""
        kind = "Operation?" if operation.startswith("Operation") else operation
        host = client_address.rsplit(":", 1)[0] if client_address.count(":") == 1 else client_address
        count = self._refusals.admit((identity.tenant_id, identity.serial_hex, refusal.message, kind, host[:64]))
        if count is None:
            return
        security = refusal.reason == Reason.AUTHENTICATION_NOT_SUCCESSFUL
        reason = refusal.message
        if count:
            reason = f"{reason}; {count} more refused since the last record"
        with contextlib.suppress(OpenKCMError):
            self._audit(
                identity,
                PLATFORM_TENANT if security else identity.tenant_id,
                operation,
                result="denied",
                kind="security",
                reason=reason,
                client_address=client_address,
                request_id=request_id,
                details={"claimed_tenant": identity.tenant_id[:64], "serial": identity.serial_hex[:64]},
            )

    def _sync(self) -> None:
        try:
            self.services.audit.sync()
        except Exception:
            log.exception("audit sync failed")

    def _run_item(
        self, ctx: RequestContext, item: RequestItem, batch: BatchState, identity: ClientIdentity
    ) -> ResponseItem:
        handler = HANDLERS.get(item.operation)
        name = operation_name(item.operation)
        crossed = len(batch.cross_tenant)
        outcome: Outcome | None = None
        error: KmipError | None = None
        if handler is None:
            error = KmipError(Reason.OPERATION_NOT_SUPPORTED, "operation not supported")
        else:
            payload = item.payload if item.payload is not None else ttlv.structure(Tag.REQUEST_PAYLOAD, [])
            try:
                outcome = handler(ctx, payload, batch)
            except KmipError as exc:
                error = exc
            except OpenKCMError as exc:
                error = from_domain(exc)
            except ttlv.TTLVError as exc:
                error = KmipError(Reason.INVALID_MESSAGE, str(exc)[:200])
            except Exception:
                log.exception("operation %s failed", name)
                error = KmipError(Reason.GENERAL_FAILURE, "internal error")
        cross = len(batch.cross_tenant) > crossed
        object_id = outcome.object_id if outcome else (batch.cross_tenant[-1] if cross else "")
        self._audit(
            identity,
            ctx.tenant_id,
            name,
            result="success" if error is None else ("denied" if cross else "failure"),
            kind="security" if cross else "operation",
            object_id=object_id[:256],
            reason="cross-tenant refusal" if cross else (error.message if error else ""),
            l2_version=outcome.l2_version if outcome else 0,
            client_address=ctx.client_address,
            request_id=ctx.request_id,
        )
        if error is not None:
            return ResponseItem(
                item.operation,
                Status.OPERATION_FAILED,
                error.reason,
                error.message,
                payload=error.payload,
                item_id=item.item_id,
            )
        assert outcome is not None
        return ResponseItem(item.operation, Status.SUCCESS, payload=outcome.payload, item_id=item.item_id)
