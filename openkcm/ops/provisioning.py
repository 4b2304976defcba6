"""Marketplace provisioning: signed webhook in, isolated tenant out (issue 6, seed 003).

Flow
- :func:`accept_webhook` checks ``X-OpenKCM-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of
  "<t>.<raw body>">`` (DECISIONS 13) in constant time, refuses anything outside a 5-minute window or seen
  before (a replay guard of conditional puts), validates the event and hands it to a queue: SQS in AWS
  (with a dead-letter queue), :class:`LocalProvisioningQueue` in the embedded default. It answers at once.
- :func:`process_event` is the worker. It is idempotent by ``event_id`` through Powertools idempotency
  on DynamoDB: the same event twice does its work once and answers the first result again. A failure
  raises, which deletes the in-progress idempotency record, so the queue's retry runs it again.
- :func:`provision_tenant` is a list of resumable steps. Each step is idempotent by itself and is
  recorded in the tenant's ``PROVISION`` item when done; a retry skips what is done and finishes the
  rest. The tenant record shows where it is: ``Provisioning`` -> ``Ready``, or ``Failed`` with the
  reason and the attempt count.
- ``service_disabled`` / ``tenant_deleted`` delete at once (every KMIP and API call of the tenant fails)
  and schedule crypto-shredding after ``shred_retention_days`` (see :mod:`openkcm.ops.rotation`).
"""

from __future__ import annotations

import contextlib
import hashlib
import heapq
import hmac
import itertools
import json
import logging
import os
import re
import secrets
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pynamodb.connection import Connection
from pynamodb.transactions import TransactWrite

from openkcm.config import Settings
from openkcm.domain.audit import AuditEvent, RefusalThrottle
from openkcm.domain.tenants import (
    ACCOUNT_PATTERN,
    DELETED,
    FAILED,
    ID_PATTERN,
    PLATFORM_TENANT,
    PROVISIONING,
    READY,
    digest_tenant_id,
)
from openkcm.errors import AlreadyExists, InvalidRequest, NotFound, OpenKCMError, Unauthenticated, WrongState
from openkcm.ops import events, notifications
from openkcm.ops.runtime import Runtime
from openkcm.storage import ConditionFailed, TenantModel
from openkcm.storage.models import IdempotencyModel, ProvisioningModel, TrustEntryModel, condition_guard

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "x-openkcm-signature"
REPLAY_WINDOW_SECONDS = 300
IDEMPOTENCY_SECONDS = 7 * 24 * 3600
DEFAULT_ROTATION_DAYS = 90
PROVISION_STEPS = ("record", "l2_key", "trust_domain", "audit_stream", "rotation_policy", "ready")
_SIG_PART = re.compile(r"^\s*(t|v1)=([0-9A-Za-z]+)\s*\Z")
_EVENT_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


# ---- the event ---------------------------------------------------------------------------------------
class MarketplaceEvent(BaseModel):
    """The JSON of seed 003 plus ``event_id`` (and ``tenant`` for tenant events), DECISIONS 13."""

    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)

    event_id: str = Field(pattern=_EVENT_ID.pattern)
    event: Literal["service_enabled", "service_disabled", "tenant_created", "tenant_deleted"]
    customer: str = Field(pattern=ACCOUNT_PATTERN.pattern)
    service: str = Field(default="openkcm", max_length=64)
    region: str = Field(default="", max_length=32, pattern=r"^[a-z0-9-]*$")
    timestamp: datetime
    tenant: str | None = Field(default=None, pattern=ID_PATTERN.pattern)

    @model_validator(mode="after")
    def _tenant_events_name_a_tenant(self) -> MarketplaceEvent:
        if self.event.startswith("tenant_") and not self.tenant:
            raise ValueError(f"a {self.event} event names its tenant")
        return self

    def to_message(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


def parse_event(body: bytes | str | Mapping[str, Any]) -> MarketplaceEvent:
    try:
        if isinstance(body, Mapping):
            return MarketplaceEvent.model_validate(body)
        return MarketplaceEvent.model_validate_json(body)
    except ValidationError as exc:
        fields = sorted({".".join(str(p) for p in err["loc"]) or "body" for err in exc.errors()})
        raise InvalidRequest("the marketplace event is invalid", fields=",".join(fields)) from None


def default_tenant_id(customer: str) -> str:
    """The tenant a ``service_enabled`` event creates: the customer id itself when it is a valid tenant id
    (seed 003 shows ``acme-corp-12345``), else a stable digest of it (:func:`digest_tenant_id`).
    Deterministic, so retries and duplicates always land on the same tenant; :func:`customer_tenant_id`
    moves to the digest when another account holds this id."""
    candidate = customer.lower()
    if ID_PATTERN.fullmatch(candidate) and not candidate.startswith("t-"):
        return candidate
    return digest_tenant_id(customer)


@dataclass(frozen=True)
class CustomerTenant:
    tenant_id: str
    squatted_by: str = ""  # the account holding the customer's default id, when tenant_id is the digest


def _holder(tenant_id: str) -> str | None:
    """The account that holds a tenant id: its tenant record's, else the customer of a provisioning that
    stopped before creating the record. Neither item is ever deleted (no TTL on the tenants table,
    crypto-shredding keeps both, a shredded id is never provisioned again), so the answer never goes back
    to None once given."""
    try:
        return TenantModel.get(tenant_id, TenantModel.SORT_KEY).account_id
    except TenantModel.DoesNotExist:
        pass
    try:
        return ProvisioningModel.get(tenant_id, ProvisioningModel.SORT_KEY).customer
    except ProvisioningModel.DoesNotExist:
        return None


def customer_tenant_id(customer: str) -> CustomerTenant:
    """The tenant of a customer's ``service_*`` events: :func:`default_tenant_id`, unless that id is held
    by another account (made through the CMK API before the customer subscribed, or a customer whose id
    differs only in case): then :func:`digest_tenant_id`. Deterministic given the holder, which never
    changes; and a customer already on its digest tenant stays there."""
    preferred = default_tenant_id(customer)
    digest = digest_tenant_id(customer)
    if preferred == digest:
        return CustomerTenant(digest)
    holder = _holder(preferred)
    if holder == customer:
        return CustomerTenant(preferred)
    if holder is None:
        return CustomerTenant(digest if _holder(digest) == customer else preferred)
    return CustomerTenant(digest, squatted_by=holder)


# ---- signature -----------------------------------------------------------------------------------------
def sign(secret: bytes, timestamp: int, body: bytes) -> str:
    """The header value a marketplace sends (used by tests, the benchmark and `openkcm` tooling)."""
    mac = hmac.new(secret, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


@dataclass(frozen=True)
class SignatureCheck:
    timestamp: int
    mac: str


class WebhookRejected(Unauthenticated):
    """The webhook signature is missing, forged, stale or replayed."""

    def __init__(self, reason: str) -> None:
        super().__init__("webhook signature rejected")
        self.reason = reason  # kept for the audit record, never told to the caller


def verify_signature(
    secret: bytes, header: str | None, body: bytes, now: float, window: int = REPLAY_WINDOW_SECONDS
) -> SignatureCheck:
    if not header:
        raise WebhookRejected("missing")
    parts: dict[str, list[str]] = {}
    for piece in header.split(","):
        match = _SIG_PART.match(piece)
        if not match:
            raise WebhookRejected("malformed")
        parts.setdefault(match.group(1), []).append(match.group(2))
    if (
        len(parts.get("t", [])) != 1
        or not parts.get("v1")
        or not parts["t"][0].isdigit()
        or len(parts["t"][0]) > 12
    ):
        raise WebhookRejected("malformed")
    raw_t = parts["t"][0]  # signed exactly as sent: "<t>.<raw body>"
    timestamp = int(raw_t)
    expected = hmac.new(secret, raw_t.encode() + b"." + body, hashlib.sha256).hexdigest()
    # Several v1 values are allowed (secret rotation on the sender's side); each compared in constant time.
    matched = [v for v in parts["v1"] if hmac.compare_digest(v.lower().encode(), expected.encode())]
    if not matched:
        raise WebhookRejected("forged")
    if abs(now - timestamp) > window:
        raise WebhookRejected("stale")
    return SignatureCheck(timestamp, expected)


def remember_signature(check: SignatureCheck, window: int = REPLAY_WINDOW_SECONDS) -> None:
    """Conditional put of the MAC: a second delivery of the very same signed request is a replay. The item
    expires (TTL) once the timestamp has left the window, when the window check refuses it anyway."""
    item = IdempotencyModel(f"webhook-replay#{check.mac}", expiration=check.timestamp + 2 * window)
    try:
        with condition_guard():
            item.save(condition=IdempotencyModel.id.does_not_exist())
    except ConditionFailed:
        raise WebhookRejected("replayed") from None


def forget_signature(check: SignatureCheck) -> None:
    """Undo :func:`remember_signature` for a delivery that was refused after it (could not be queued)."""
    IdempotencyModel(f"webhook-replay#{check.mac}").delete()


# ---- the webhook secret -------------------------------------------------------------------------------
SECRET_RELOAD_SECONDS = 60  # a signature that fails reloads the secret at most this often (per process)
SECRET_MAX_AGE_SECONDS = 300  # and a cached secret is read again after this long (a rotation takes effect)
PREVIOUS_SECRET_GRACE_SECONDS = 24 * 3600  # AWSPREVIOUS is accepted this long after AWSCURRENT was made


@dataclass(frozen=True)
class WebhookSecrets:
    """The secrets a delivery may be signed with: the current one, and during a Secrets Manager rotation
    the previous one (``previous_until``, epoch seconds, bounds it)."""

    current: bytes
    previous: bytes | None = None
    previous_until: float = 0.0

    def accepted(self, now: float) -> tuple[bytes, ...]:
        if self.previous is not None and now < self.previous_until:
            return (self.current, self.previous)
        return (self.current,)


def load_webhook_secrets(settings: Settings) -> WebhookSecrets:
    """AWS: the Secrets Manager secret named by ``webhook_secret_arn`` (``AWSCURRENT``, and ``AWSPREVIOUS``
    for :data:`PREVIOUS_SECRET_GRACE_SECONDS` after the current version was created). Embedded default:
    the 0600 file ``<data_dir>/secrets/webhook-secret`` (created on first use, DECISIONS 6)."""
    if not settings.webhook_secret_arn:
        return WebhookSecrets(_local_secret(Path(settings.data_dir) / "secrets" / "webhook-secret"))
    import boto3
    from botocore.exceptions import ClientError

    client = boto3.client("secretsmanager", region_name=settings.region)
    reply = client.get_secret_value(SecretId=settings.webhook_secret_arn)
    current = _secret_value(reply)
    created = reply.get("CreatedDate")
    if not isinstance(created, datetime):
        return WebhookSecrets(current)  # no creation time: no bound for the previous version, so none
    try:
        previous = _secret_value(
            client.get_secret_value(SecretId=settings.webhook_secret_arn, VersionStage="AWSPREVIOUS")
        )
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") != "ResourceNotFoundException":
            raise
        return WebhookSecrets(current)  # never rotated
    if previous == current:
        return WebhookSecrets(current)
    return WebhookSecrets(current, previous, _aware(created).timestamp() + PREVIOUS_SECRET_GRACE_SECONDS)


def load_webhook_secret(settings: Settings) -> bytes:
    return load_webhook_secrets(settings).current


def _secret_value(reply: Mapping[str, Any]) -> bytes:
    value = reply.get("SecretString") or reply["SecretBinary"]
    return value.encode() if isinstance(value, str) else bytes(value)


def _local_secret(path: Path) -> bytes:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        if path.stat().st_mode & 0o077:
            log.error("%s must not be readable by group or others (chmod 600)", path)
            raise OpenKCMError("the webhook secret is misconfigured") from None
        return path.read_bytes().strip()
    try:
        os.write(fd, secrets.token_hex(32).encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    return path.read_bytes().strip()


class _SecretCache:
    """One process's copy of the webhook secrets. Read again when older than
    :data:`SECRET_MAX_AGE_SECONDS`, or when a signature does not verify (the secret may have been rotated)
    but at most every :data:`SECRET_RELOAD_SECONDS`, so a flood of forged requests costs at most one read
    of Secrets Manager a minute. Times come from the runtime's clock."""

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime
        self._lock = threading.Lock()
        self._secrets: WebhookSecrets | None = None
        self._loaded_at = 0.0

    def get(self) -> WebhookSecrets:
        found = self._secrets
        now = self._runtime.clock.timestamp()
        if found is None or not 0 <= now - self._loaded_at < SECRET_MAX_AGE_SECONDS:
            found = self.reload(force=found is None)
        assert found is not None
        return found

    def reload(self, *, force: bool = False) -> WebhookSecrets | None:
        """Read the secrets again unless that was done less than :data:`SECRET_RELOAD_SECONDS` ago. A
        failing read keeps the secrets known (and counts as a read for the rate limit)."""
        with self._lock:
            now = self._runtime.clock.timestamp()
            known = self._secrets
            if known is not None and not force and 0 <= now - self._loaded_at < SECRET_RELOAD_SECONDS:
                return known
            self._loaded_at = now
            try:
                self._secrets = load_webhook_secrets(self._runtime.settings)
            except Exception:
                if known is None:
                    raise
                log.warning("could not read the webhook secret again; keeping the one loaded", exc_info=True)
            return self._secrets


def _secret_cache(runtime: Runtime) -> _SecretCache:
    found = runtime.extras.get("webhook_secrets")
    if found is None:
        found = runtime.extras.setdefault("webhook_secrets", _SecretCache(runtime))
    return found


def webhook_secret(runtime: Runtime) -> bytes:
    """The current webhook secret (what OpenKCM's own tooling signs with)."""
    return _secret_cache(runtime).get().current


def _verify(runtime: Runtime, header: str | None, body: bytes) -> SignatureCheck:
    """:func:`verify_signature` against each accepted secret; when none matches, once more after reading
    the secrets again (rate-limited), so a rotation needs no restart of warm processes."""
    cache = _secret_cache(runtime)
    now = runtime.clock.timestamp()
    known = cache.get()
    try:
        return _verify_any(known.accepted(now), header, body, now)
    except WebhookRejected as exc:
        if exc.reason != "forged":
            raise
        fresh = cache.reload()
        if fresh is None or fresh == known:
            raise
        return _verify_any(fresh.accepted(now), header, body, now)


def _verify_any(candidates: tuple[bytes, ...], header: str | None, body: bytes, now: float) -> SignatureCheck:
    for secret in candidates:
        try:
            return verify_signature(secret, header, body, now)
        except WebhookRejected as exc:
            if exc.reason != "forged":  # missing, malformed, stale: the same under every secret
                raise
    raise WebhookRejected("forged")


# ---- the webhook ---------------------------------------------------------------------------------------
Enqueue = Callable[[dict[str, Any]], None]


def accept_webhook(
    runtime: Runtime, headers: Mapping[str, str], body: bytes, enqueue: Enqueue, *, client_address: str = ""
) -> tuple[int, dict[str, Any]]:
    """Authenticate, validate and queue one marketplace event. Returns (HTTP status, JSON body)."""
    lowered = {k.lower(): v for k, v in headers.items()}
    try:
        check = _verify(runtime, lowered.get(SIGNATURE_HEADER), body)
        remember_signature(check)
    except WebhookRejected as exc:
        _audit_refusal(runtime, exc.reason, client_address)
        return exc.http_status, exc.to_dict()
    try:
        event = parse_event(body)
    except InvalidRequest as exc:
        return exc.http_status, exc.to_dict()
    try:
        tenant_id = event.tenant or customer_tenant_id(event.customer).tenant_id
        enqueue(event.to_message())
    except Exception:
        forget_signature(check)  # not queued: the marketplace's retry of this delivery must get through
        raise
    runtime.audit.record(
        AuditEvent(
            tenant_id=PLATFORM_TENANT,
            source="provision",
            operation="MarketplaceWebhook",
            kind="lifecycle",
            actor="marketplace",
            account_id=event.customer,
            client_address=client_address,
            details={"event": event.event, "event_id": event.event_id, "tenant": tenant_id},
        )
    )
    return 202, {"accepted": True, "event_id": event.event_id, "event": event.event, "tenant_id": tenant_id}


WEBHOOK_REFUSAL_AUDIT_SECONDS = 60.0


def _audit_refusal(runtime: Runtime, reason: str, client_address: str) -> None:
    """A refused delivery is a security record (which the sink also publishes as a security_event): the
    first per (client address, reason) at once, then at most one a minute per process carrying the number
    refused in between, so forged floods cannot flood the hash-chained platform trail and the bus."""
    throttle = runtime.extras.get("webhook_refusals")
    if throttle is None:
        throttle = runtime.extras.setdefault("webhook_refusals", RefusalThrottle(WEBHOOK_REFUSAL_AUDIT_SECONDS))
    suppressed = throttle.admit((client_address, reason))
    if suppressed is None:
        return
    runtime.audit.record(
        AuditEvent(
            tenant_id=PLATFORM_TENANT,
            source="provision",
            operation="MarketplaceWebhook",
            kind="security",
            result="denied",
            reason=f"signature {reason}"
            + (f" ({suppressed} more since the last record)" if suppressed else ""),
            actor="marketplace",
            client_address=client_address,
            details={"suppressed": str(suppressed)} if suppressed else {},
        )
    )


class SqsEnqueue:
    """AWS: the queue between webhook and worker (its redrive policy sends poison messages to a DLQ)."""

    def __init__(self, queue_url: str, client: Any = None) -> None:
        self.queue_url = queue_url
        self._client = client

    def __call__(self, message: dict[str, Any]) -> None:
        if self._client is None:
            import boto3

            self._client = boto3.client("sqs")
        self._client.send_message(
            QueueUrl=self.queue_url, MessageBody=json.dumps(message, separators=(",", ":"))
        )


# ---- the worker ------------------------------------------------------------------------------------------
class _WorkerContext:
    """What Powertools asks of a Lambda context, for workers that are not Lambdas: the remaining time sets
    how long an in-progress idempotency record blocks a duplicate (a crashed worker's record expires)."""

    function_name = "openkcm-provision-local"
    aws_request_id = "local"

    def __init__(self, budget_seconds: float = 120.0) -> None:
        self._deadline = time.monotonic() + budget_seconds

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


StepHook = Callable[[str], None]


def process_event(
    runtime: Runtime,
    message: Mapping[str, Any],
    *,
    context: Any = None,
    before_step: StepHook | None = None,
    after_step: StepHook | None = None,
) -> dict[str, Any]:
    """Handle one queued marketplace event, at most once per ``event_id``."""
    from aws_lambda_powertools.utilities.idempotency import (
        DynamoDBPersistenceLayer,
        IdempotencyConfig,
        idempotent_function,
    )

    event = parse_event(message)
    config = IdempotencyConfig(
        event_key_jmespath="event_id",
        raise_on_no_idempotency_key=True,
        expires_after_seconds=IDEMPOTENCY_SECONDS,
    )
    config.register_lambda_context(context or _WorkerContext())
    store = runtime.extras.get("idempotency_store")
    if store is None:
        import boto3

        store = runtime.extras["idempotency_store"] = DynamoDBPersistenceLayer(
            table_name=IdempotencyModel.Meta.table_name,
            boto3_client=boto3.client("dynamodb", region_name=runtime.settings.region),
        )

    @idempotent_function(
        data_keyword_argument="message",
        persistence_store=store,
        config=config,
        key_prefix="openkcm-marketplace",
    )
    def handle(message: dict[str, Any]) -> dict[str, Any]:
        return _dispatch(runtime, event, before_step=before_step, after_step=after_step)

    return handle(message=event.to_message())


def _dispatch(runtime: Runtime, event: MarketplaceEvent, **hooks: Any) -> dict[str, Any]:
    if event.event in ("service_enabled", "tenant_created"):

        def provision(tenant_id: str) -> dict[str, Any]:
            return provision_tenant(
                runtime,
                tenant_id,
                event.customer,
                region=event.region,
                event_id=event.event_id,
                event_time=_aware(event.timestamp),
                **hooks,
            )

        if event.tenant:
            return provision(event.tenant)
        chosen = customer_tenant_id(event.customer)
        _note_fallback(runtime, event, chosen)
        try:
            return provision(chosen.tenant_id)
        except NotFound:
            # Another account took the default id between the look and the claim: decide again, once.
            again = customer_tenant_id(event.customer)
            if again.tenant_id == chosen.tenant_id:
                raise
            _note_fallback(runtime, event, again)
            return provision(again.tenant_id)
    when = _aware(event.timestamp)
    if event.event == "tenant_deleted":
        assert event.tenant is not None
        return {
            "deleted": [
                delete_tenant(runtime, event.tenant, event.customer, reason=event.event, event_time=when)
            ]
        }
    deleted = [
        delete_tenant(runtime, t.tenant_id, event.customer, reason=event.event, event_time=when)
        for t in list(runtime.tenants.list_for_account(event.customer))
    ]
    return {"deleted": deleted}


def _note_fallback(runtime: Runtime, event: MarketplaceEvent, chosen: CustomerTenant) -> None:
    """A customer provisioned on its digest tenant because another account holds its default id: the
    operator sees it in the platform's security trail (and on the bus as a security_event)."""
    if not chosen.squatted_by:
        return
    preferred = default_tenant_id(event.customer)
    log.warning(
        "marketplace customer %s: default tenant id %s is held by account %s; using %s",
        event.customer,
        preferred,
        chosen.squatted_by,
        chosen.tenant_id,
    )
    runtime.audit.record(
        AuditEvent(
            tenant_id=PLATFORM_TENANT,
            source="provision",
            operation="ResolveMarketplaceTenant",
            kind="security",
            actor="marketplace",
            account_id=event.customer,
            reason="the customer's default tenant id is held by another account",
            details={
                "event_id": event.event_id,
                "default_tenant": preferred,
                "held_by": chosen.squatted_by,
                "tenant": chosen.tenant_id,
            },
        )
    )


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _progress(runtime: Runtime, tenant_id: str, customer: str, event_id: str) -> ProvisioningModel:
    now = runtime.clock.now()
    item = ProvisioningModel(tenant_id, customer=customer, event_id=event_id, created_at=now, updated_at=now)
    try:
        with condition_guard():
            item.save(condition=ProvisioningModel.tenant_id.does_not_exist())
    except ConditionFailed:
        item = ProvisioningModel.get(tenant_id, ProvisioningModel.SORT_KEY)
    return item


def provisioning_status(tenant_id: str) -> dict[str, Any]:
    """Where a tenant's provisioning stands (also when the failure came before its record existed)."""
    try:
        item = ProvisioningModel.get(tenant_id, ProvisioningModel.SORT_KEY)
    except ProvisioningModel.DoesNotExist:
        raise NotFound("no provisioning of this tenant") from None
    try:
        tenant = TenantModel.get(tenant_id, TenantModel.SORT_KEY)
        status, reason = tenant.status, tenant.status_reason
    except TenantModel.DoesNotExist:
        status, reason = (FAILED if item.last_error else PROVISIONING), item.last_error
    return {
        "tenant_id": tenant_id,
        "status": status,
        "reason": reason,
        "steps_done": list(item.steps_done),
        "attempts": int(item.attempts),
        "retries": max(0, int(item.attempts) - 1),
        "last_error": item.last_error,
    }


def provision_tenant(
    runtime: Runtime,
    tenant_id: str,
    customer: str,
    *,
    region: str = "",
    event_id: str = "",
    name: str = "",
    event_time: datetime | None = None,
    before_step: StepHook | None = None,
    after_step: StepHook | None = None,
) -> dict[str, Any]:
    """Create (or finish creating) a platform-managed tenant. Safe to run again after any failure. An
    enable timed (``event_time``) before the tenant's deletion was decided is a stale delivery: ignored
    (one of the same second is taken as the later, the customer's latest word)."""
    runtime.audit.ensure_writable()
    try:  # a tenant of another account (created through the API, say) is neither touched nor claimed
        owner = TenantModel.get(tenant_id, TenantModel.SORT_KEY).account_id
    except TenantModel.DoesNotExist:
        owner = None
    if owner is not None and owner != customer:
        raise NotFound("no such tenant")  # indistinguishable from missing; its status stays as it is
    progress = _progress(runtime, tenant_id, customer, event_id)
    if progress.shredded_at is not None:
        raise AlreadyExists(
            "this tenant was crypto-shredded; its id cannot be provisioned again", tenant_id=tenant_id
        )
    if progress.customer != customer:
        raise NotFound("no such tenant")  # another customer's tenant id: indistinguishable from missing
    done = set(progress.steps_done)
    if "ready" in done and progress.deleted_at is None:
        _repair_ready(runtime, progress)
        _note_enable(progress, event_time)
        return {"tenant_id": tenant_id, "status": READY, "attempts": int(progress.attempts), "resumed": False}
    decided = progress.deleted_event_at
    stale = progress.deleted_at is not None and event_time is not None and decided is not None
    if stale and event_time < decided:  # of the same second: taken as the later, the customer's last word
        log.info("marketplace enable of %s from before its deletion ignored", tenant_id)
        return {"tenant_id": tenant_id, "status": DELETED, "ignored": "the enable predates the deletion"}
    actions = [ProvisioningModel.attempts.add(1), ProvisioningModel.updated_at.set(runtime.clock.now())]
    if event_time is not None and (
        progress.enabled_event_at is None or event_time > progress.enabled_event_at
    ):
        actions.append(ProvisioningModel.enabled_event_at.set(event_time))
    with condition_guard():
        progress.update(actions=actions)
    attempt = int(progress.attempts)
    if progress.deleted_at is not None:
        restored = _undelete(runtime, progress)
        if "ready" in done:
            return restored
        # deleted before it was ever ready: restoring means finishing its provisioning, not calling it Ready
    _mark_provisioning(runtime, tenant_id, attempt)
    steps: dict[str, Callable[[], None]] = {
        "record": lambda: _step_record(runtime, tenant_id, customer, region, name),
        "l2_key": lambda: runtime.keyring.create_first_version(tenant_id),
        "trust_domain": lambda: _step_trust(runtime, tenant_id),
        "audit_stream": lambda: _step_audit_stream(runtime, tenant_id, customer, event_id),
        "rotation_policy": lambda: _step_rotation_policy(runtime, tenant_id),
        "ready": lambda: _step_ready(runtime, tenant_id, customer, attempt),
    }
    current = ""
    try:
        for current in PROVISION_STEPS:
            if current in done:
                continue
            if before_step:
                before_step(current)
            if current == "ready":
                progress.refresh()
                if progress.deleted_at is not None:  # deleted while being provisioned: it stays deleted
                    return _deleted_meanwhile(tenant_id)
            steps[current]()
            if after_step:
                after_step(current)
            done = _record_step(progress, done, current)
            if current != "ready" and "ready" in done:  # a concurrent delivery finished the tenant
                _repair_ready(runtime, progress)
                break
    except DeletedMeanwhile:
        return _deleted_meanwhile(tenant_id)
    except Exception as exc:
        _mark_failed(runtime, progress, current, exc, attempt)
        raise
    return {"tenant_id": tenant_id, "status": READY, "attempts": attempt, "resumed": attempt > 1}


def _note_enable(progress: ProvisioningModel, event_time: datetime | None) -> None:
    """Keep the latest enable's marketplace time: a deletion from before it is a stale delivery."""
    for _ in range(3):
        if event_time is None or (
            progress.enabled_event_at is not None and event_time <= progress.enabled_event_at
        ):
            return
        try:
            with condition_guard():
                progress.update(actions=[ProvisioningModel.enabled_event_at.set(event_time)])
            return
        except ConditionFailed:
            progress.refresh()


class DeletedMeanwhile(Exception):
    """The tenant was deleted while a delivery provisioned it: the deletion stands (not a failure)."""


def _deleted_meanwhile(tenant_id: str) -> dict[str, Any]:
    """Final, so the queue does not retry it into a restore: the unsubscribe came after this enable."""
    log.info("marketplace enable of %s ended: the tenant was deleted while it was provisioned", tenant_id)
    return {"tenant_id": tenant_id, "status": DELETED, "ignored": "deleted while it was provisioned"}


def _set_ready_unless_deleted(runtime: Runtime, tenant_id: str) -> bool:
    """Ready, in one transaction with the check that no deletion was recorded meanwhile (a delete
    between a look and the write left a tenant Ready while deleted)."""
    for _ in range(5):
        tenant = runtime.tenants.get(tenant_id)
        try:
            with (
                condition_guard(),
                TransactWrite(connection=Connection(region=TenantModel.Meta.region)) as tx,
            ):
                tx.condition_check(
                    ProvisioningModel,
                    tenant_id,
                    range_key=ProvisioningModel.SORT_KEY,
                    condition=ProvisioningModel.deleted_at.does_not_exist(),
                )
                tx.update(
                    tenant,
                    actions=[
                        TenantModel.status.set(READY),
                        TenantModel.status_reason.remove(),
                        TenantModel.updated_at.set(runtime.clock.now()),
                        TenantModel.epoch.add(1),
                    ],
                )
            return True
        except ConditionFailed:
            try:
                if ProvisioningModel.get(tenant_id, ProvisioningModel.SORT_KEY).deleted_at is not None:
                    return False
            except ProvisioningModel.DoesNotExist:
                pass
    raise WrongState("the tenant keeps changing; retry", tenant_id=tenant_id)


def _record_step(progress: ProvisioningModel, done: set[str], step: str) -> set[str]:
    """Add ``step`` to the record's steps. Two deliveries for one tenant (another event id, or the queue's
    retry) may run at once; the steps are idempotent, so losing the record's version check to the other
    means reading what it did and adding this step to that, not failing the tenant."""
    for _ in range(5):
        merged = done | set(progress.steps_done) | {step}
        try:
            with condition_guard():
                progress.update(
                    actions=[
                        ProvisioningModel.steps_done.set(sorted(merged)),
                        ProvisioningModel.last_error.remove(),
                    ]
                )
            return merged
        except ConditionFailed:
            progress.refresh()
            if progress.deleted_at is not None:  # deleted meanwhile: it stays deleted
                raise DeletedMeanwhile from None
    raise WrongState("the tenant's provisioning record keeps changing; retry", tenant_id=progress.tenant_id)


def _repair_ready(runtime: Runtime, progress: ProvisioningModel) -> None:
    """Every step is done and the tenant is not deleted: a tenant left Failed or Provisioning by a delivery
    that lost a race to the one that finished is Ready, and one left Deleted by a restore that died half
    way (``restoring_at``) is restored. A disabled tenant, or one deleted through the CMK API whose record
    is still being written, stays as it is."""
    try:
        tenant = TenantModel.get(progress.tenant_id, TenantModel.SORT_KEY)
    except TenantModel.DoesNotExist:
        return
    if tenant.status in (FAILED, PROVISIONING):
        runtime.tenants.set_status(progress.tenant_id, READY)
    elif tenant.status == DELETED and progress.restoring_at is not None and progress.deleted_at is None:
        _finish_restore(runtime, progress)


def _mark_provisioning(runtime: Runtime, tenant_id: str, attempt: int) -> None:
    try:
        tenant = TenantModel.get(tenant_id, TenantModel.SORT_KEY)
    except TenantModel.DoesNotExist:
        return
    if tenant.status != PROVISIONING:
        runtime.tenants.set_status(tenant_id, PROVISIONING, f"retry {attempt - 1} in progress")


def _mark_failed(
    runtime: Runtime, progress: ProvisioningModel, step: str, exc: Exception, attempt: int
) -> None:
    detail = exc.message if isinstance(exc, OpenKCMError) else type(exc).__name__
    reason = f"step {step} failed: {detail} (attempt {attempt})"[:500]
    try:
        progress.refresh()
        progress.update(
            actions=[
                ProvisioningModel.last_error.set(reason),
                ProvisioningModel.updated_at.set(runtime.clock.now()),
            ]
        )
        finished_or_deleted = "ready" in progress.steps_done or progress.deleted_at is not None
        if not finished_or_deleted and TenantModel.count(
            progress.tenant_id,
            TenantModel.sk == TenantModel.SORT_KEY,
            filter_condition=TenantModel.account_id == progress.customer,  # only the customer's own tenant
        ):
            runtime.tenants.set_status(progress.tenant_id, FAILED, reason)
        runtime.audit.record(
            AuditEvent(
                tenant_id=progress.tenant_id,
                source="provision",
                operation="ProvisionTenant",
                kind="lifecycle",
                result="failure",
                reason=reason,
                account_id=progress.customer,
                actor="marketplace",
            )
        )
        notifications.notify(
            runtime,
            tenant_id=progress.tenant_id,
            customer=progress.customer,
            kind=notifications.FAILED,
            subject=f"OpenKCM provisioning for {progress.customer} failed; retrying",
            message=f"Provisioning of tenant {progress.tenant_id} failed at step '{step}' (attempt {attempt}). "
            "It is retried automatically.",
        )
    except Exception:  # the store itself is failing: the queue's retry will try again
        log.exception("could not record the provisioning failure of %s", progress.tenant_id)


def _step_record(runtime: Runtime, tenant_id: str, customer: str, region: str, name: str) -> None:
    try:
        runtime.tenants.create(customer, tenant_id=tenant_id, region=region, name=name)
    except AlreadyExists:
        if runtime.tenants.get(tenant_id).account_id != customer:
            raise NotFound("no such tenant") from None  # never adopt another account's tenant


def _step_trust(runtime: Runtime, tenant_id: str) -> None:
    domain = runtime.settings.trust_domain
    entry = TrustEntryModel(
        tenant_id,
        spiffe_prefix=f"spiffe://{domain}/tenant/{tenant_id}/service/",
        template_json=json.dumps(
            {
                "key": "EC P-256",
                "days": 365,
                "extended_key_usage": "clientAuth",
                "san": f"spiffe://{domain}/tenant/{tenant_id}/service/<service-id>",
            }
        ),
        created_at=runtime.clock.now(),
    )
    try:
        with condition_guard():
            entry.save(condition=TrustEntryModel.tenant_id.does_not_exist())
    except ConditionFailed:
        pass  # made by an earlier attempt


def _step_audit_stream(runtime: Runtime, tenant_id: str, customer: str, event_id: str) -> None:
    runtime.audit.record(
        AuditEvent(
            tenant_id=tenant_id,
            source="provision",
            operation="OpenAuditStream",
            kind="lifecycle",
            actor="marketplace",
            account_id=customer,
            details={"event_id": event_id},
        )
    )


def _step_rotation_policy(runtime: Runtime, tenant_id: str) -> None:
    tenant = runtime.tenants.get(tenant_id)
    with condition_guard():
        tenant.update(actions=[TenantModel.rotation_period_days.set(DEFAULT_ROTATION_DAYS)])


def _step_ready(runtime: Runtime, tenant_id: str, customer: str, attempt: int) -> None:
    if not _set_ready_unless_deleted(runtime, tenant_id):
        raise DeletedMeanwhile
    tenant = runtime.tenants.get(tenant_id)
    runtime.audit.record(
        AuditEvent(
            tenant_id=tenant_id,
            source="provision",
            operation="CreateTenant",
            kind="lifecycle",
            actor="marketplace",
            account_id=customer,
            l2_version=int(tenant.current_l2_version),
            l1_ref=runtime.root.ref,
            details={"attempts": str(attempt)},
        )
    )
    if any(n["kind"] == notifications.READY for n in notifications.list_tenant_notifications(tenant_id)):
        return  # an earlier attempt got this far and crashed before recording the step
    notifications.notify(
        runtime,
        tenant_id=tenant_id,
        customer=customer,
        kind=notifications.READY,
        subject=f"OpenKCM is ready for {customer}",
        message=f"OpenKCM is ready for {customer}! Tenant environment created, encryption keys configured, "
        "services can now request encryption keys.",
    )


def _undelete(runtime: Runtime, progress: ProvisioningModel) -> dict[str, Any]:
    """service_enabled again within the retention period: the tenant comes back as it was — unless its
    crypto-shredding has started (the shred and this exclude each other through the record)."""
    try:
        with condition_guard():
            progress.update(
                actions=[
                    ProvisioningModel.deleted_at.remove(),
                    ProvisioningModel.deleted_event_at.remove(),
                    ProvisioningModel.shred_after.remove(),
                    ProvisioningModel.restoring_at.set(runtime.clock.now()),
                ],
                condition=ProvisioningModel.shred_started_at.does_not_exist()
                & ProvisioningModel.shredded_at.does_not_exist(),
            )
    except ConditionFailed:
        raise WrongState(
            "this tenant is being or was crypto-shredded; it cannot be restored", tenant_id=progress.tenant_id
        ) from None
    if "ready" not in progress.steps_done:
        return {"tenant_id": progress.tenant_id, "status": PROVISIONING, "restored": True}
    return _finish_restore(runtime, progress)


def _finish_restore(runtime: Runtime, progress: ProvisioningModel) -> dict[str, Any]:
    """The restore's record, then Ready. A restore that died after clearing the deletion is finished by the
    next delivery (``_repair_ready``): the record may then be there twice, never not at all."""
    runtime.audit.record(
        AuditEvent(
            tenant_id=progress.tenant_id,
            source="provision",
            operation="RestoreTenant",
            kind="lifecycle",
            actor="marketplace",
            account_id=progress.customer,
        )
    )
    if not _set_ready_unless_deleted(runtime, progress.tenant_id):
        return {
            "tenant_id": progress.tenant_id,
            "status": DELETED,
            "restored": False,
        }  # deleted again meanwhile
    with contextlib.suppress(ConditionFailed), condition_guard():
        progress.refresh()
        progress.update(actions=[ProvisioningModel.restoring_at.remove()])
    return {"tenant_id": progress.tenant_id, "status": READY, "restored": True}


def delete_tenant(
    runtime: Runtime,
    tenant_id: str,
    customer: str,
    *,
    reason: str,
    retention_days: float | None = None,
    event_time: datetime | None = None,
) -> dict[str, Any]:
    """Disable at once, crypto-shred after the retention period (``shred_retention_days`` unless given;
    0 = on the next scheduled run). Idempotent (keeps the first delete time). The marketplace worker and
    the CMK API's DELETE both belong here."""
    tenant = runtime.tenants.get_in_account(customer, tenant_id)
    runtime.audit.ensure_writable()
    now = runtime.clock.now()
    progress = _progress(runtime, tenant_id, customer, "")
    enabled = progress.enabled_event_at
    if (
        progress.deleted_at is None
        and event_time is not None
        and enabled is not None
        and event_time < enabled
    ):
        log.info("marketplace deletion of %s from before its latest enable ignored", tenant_id)
        return {"tenant_id": tenant_id, "status": tenant.status, "ignored": "the deletion predates an enable"}
    newly = progress.deleted_at is None
    if newly:
        days = runtime.settings.shred_retention_days if retention_days is None else retention_days
        if days < 0:
            raise InvalidRequest("retention must be 0 or more days", field="retention_days")
        due = now + timedelta(days=days)
        with condition_guard():
            progress.update(
                actions=[
                    ProvisioningModel.deleted_at.set(now),
                    *([ProvisioningModel.deleted_event_at.set(event_time)] if event_time else []),
                    ProvisioningModel.shred_after.set(due),
                ]
            )
    if newly or tenant.status != DELETED:  # newly: a restore may have set Ready after we looked
        runtime.tenants.set_status(tenant_id, DELETED, reason)
        runtime.keyring.invalidate(tenant_id)
        events.publish(runtime, events.TENANT_DISABLED, tenant_id, reason=reason)
        runtime.audit.record(
            AuditEvent(
                tenant_id=tenant_id,
                source="provision",
                operation="DeleteTenant",
                kind="lifecycle",
                actor="marketplace",
                account_id=customer,
                reason=reason,
                details={"shred_after": progress.shred_after.isoformat()},
            )
        )
    return {"tenant_id": tenant_id, "status": DELETED, "shred_after": progress.shred_after.isoformat()}


# ---- the local queue ------------------------------------------------------------------------------------
class LocalProvisioningQueue:
    """The embedded default's queue between webhook and worker: the same worker code on a background
    thread, retried with exponential backoff (``base_delay * 2**n``) up to ``max_attempts``; a message that
    still fails is kept in ``dead_letters`` (the local dead-letter queue).

    With ``journal`` (what ``openkcm local up`` passes) every accepted message is appended to that file and
    fsync'd before ``put`` returns, and a line marks it finished; a restart re-queues what was accepted but
    never finished, so a webhook answered 202 survives SIGKILL as it would in SQS (DECISIONS 15). The
    file is emptied whenever the queue drains."""

    def __init__(
        self,
        runtime: Runtime,
        *,
        max_attempts: int = 5,
        base_delay: float = 0.2,
        worker: Callable[[Runtime, Mapping[str, Any]], Any] = process_event,
        journal: Path | None = None,
    ) -> None:
        self.runtime = runtime
        self.max_attempts = max_attempts
        self.base_delay = base_delay
        self.dead_letters: list[dict[str, Any]] = []
        self.processed = 0
        self._worker = worker
        self._heap: list[tuple[float, int, int, dict[str, Any]]] = []
        self._seq = itertools.count()
        self._cond = threading.Condition()
        self._busy = 0
        self._stop = False
        self._journal_path = journal
        self._journal: Any = None
        if journal is not None:
            self._recover(Path(journal))
        self._thread = threading.Thread(target=self._run, daemon=True, name="provision-worker")
        self._thread.start()

    def __call__(self, message: dict[str, Any]) -> None:
        message = {**message, "_qid": uuid.uuid4().hex}
        with self._cond:  # journal line and queue entry together, so a compaction never falls between
            self._journal_write({"accepted": message})
            self.put(message)

    def _recover(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        pending: dict[str, dict[str, Any]] = {}
        if path.exists():
            good = 0  # bytes up to the end of the last complete line
            with open(path, "rb") as handle:
                for raw in handle:
                    if not raw.endswith(b"\n"):
                        break  # a torn last line: that message was never acknowledged
                    good += len(raw)
                    try:
                        entry = json.loads(raw)
                    except ValueError:
                        continue
                    if "accepted" in entry:
                        pending[entry["accepted"]["_qid"]] = entry["accepted"]
                    else:
                        pending.pop(entry.get("finished", ""), None)
            if good != path.stat().st_size:
                # Cut the torn fragment off before appending: the next accepted message would otherwise be
                # glued to it, unreadable, and lost on the next restart.
                os.truncate(path, good)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._journal = os.fdopen(fd, "a", encoding="utf-8")
        for message in pending.values():
            self.put(message)

    def _journal_write(self, entry: dict[str, Any]) -> None:
        if self._journal is None:
            return
        with self._cond:
            self._journal.write(json.dumps(entry, separators=(",", ":")) + "\n")
            self._journal.flush()
            os.fsync(self._journal.fileno())

    def _finished(self, message: dict[str, Any]) -> None:
        if self._journal is None or "_qid" not in message:
            return
        self._journal_write({"finished": message["_qid"]})
        with self._cond:
            if not self._heap and self._busy <= 1:  # this message was the last one: compact
                self._journal.truncate(0)
                os.fsync(self._journal.fileno())

    def put(self, message: dict[str, Any], attempt: int = 1, delay: float = 0.0) -> None:
        with self._cond:
            heapq.heappush(self._heap, (time.monotonic() + delay, next(self._seq), attempt, dict(message)))
            self._cond.notify()

    def wait_idle(self, timeout: float = 30.0) -> bool:
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._heap or self._busy:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(min(remaining, 0.05))
        return True

    def alive(self) -> bool:
        return self._thread.is_alive()

    def stop(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stop and (not self._heap or self._heap[0][0] > time.monotonic()):
                    wait = (self._heap[0][0] - time.monotonic()) if self._heap else None
                    self._cond.wait(wait)
                if self._stop:
                    return
                _, _, attempt, message = heapq.heappop(self._heap)
                self._busy += 1
            try:
                self._worker(self.runtime, {k: v for k, v in message.items() if k != "_qid"})
                self.processed += 1
                self._finished(message)
            except Exception as exc:  # noqa: BLE001 - any failure is retried, then dead-lettered
                if attempt < self.max_attempts and not isinstance(
                    exc, InvalidRequest | AlreadyExists | NotFound
                ):
                    self.put(message, attempt + 1, self.base_delay * 2 ** (attempt - 1))
                else:
                    log.warning(
                        "provisioning event %s dead-lettered: %s", message.get("event_id"), type(exc).__name__
                    )
                    self.dead_letters.append(message)
                    self._finished(message)
            finally:
                with self._cond:
                    self._busy -= 1
                    self._cond.notify_all()


_LOCAL_QUEUE: LocalProvisioningQueue | None = None


def set_local_queue(queue: LocalProvisioningQueue | None) -> None:
    global _LOCAL_QUEUE
    _LOCAL_QUEUE = queue


def local_queue() -> LocalProvisioningQueue | None:
    return _LOCAL_QUEUE
