"""Per-process wiring and per-request helpers the routers share: the runtime, the caller, auditing,
pagination cursors and idempotency of creating calls.

Nothing here keeps request state between invocations: the principal is read from the current event
each time it is asked for.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

from aws_lambda_powertools.event_handler.api_gateway import BaseRouter

from openkcm.api.auth import Principal
from openkcm.domain.audit import AuditEvent, RefusalThrottle
from openkcm.domain.pki import CertificateAuthority
from openkcm.errors import InvalidRequest, KeyUnavailable, NotFound, OpenKCMError, PermissionDenied
from openkcm.ops.runtime import Runtime, build_runtime
from openkcm.storage import TenantModel

T = TypeVar("T")

_lock = threading.Lock()
_state: dict[str, Any] = {"runtime": None}

GENERIC_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}\Z")
MAX_PAGE = 100
DEFAULT_PAGE = 50


def bind_runtime(runtime: Runtime | None) -> None:
    """Use this runtime for every request of the process (the local stack and tests)."""
    with _lock:
        _state["runtime"] = runtime
        _state.pop("idempotency", None)


def runtime() -> Runtime:
    """The process's runtime, built from the environment on first use (a Lambda's cold start)."""
    with _lock:
        if _state["runtime"] is None:
            _state["runtime"] = build_runtime()
        return _state["runtime"]


def certificate_authority() -> CertificateAuthority:
    """The deployment's CA (the runtime reads it from the ``OPENKCM_CA_SECRET_ARN`` secret in AWS). A
    missing or unfilled secret is the operator's to fix: 503 with a clear message, not a 400 or a 500."""
    rt = runtime()
    if not rt.settings.ca_secret_arn:
        return rt.certificate_authority()
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        return rt.certificate_authority()
    except (InvalidRequest, BotoCoreError, ClientError, KeyError, TypeError, ValueError):
        raise KeyUnavailable("the deployment CA is not available: fill the CA secret "
                             '({"ca_cert_pem", "ca_key_pem"}) and retry') from None


def principal(router: BaseRouter) -> Principal:
    return Principal.from_claims(router.current_event.request_context.authorizer.jwt_claim)


def check_id(value: str, pattern: re.Pattern[str] = GENERIC_ID) -> str:
    """An id that cannot exist is reported like a missing one."""
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise NotFound("no such object")
    return value


def tenant_in_scope(router: BaseRouter, tenant_id: str, permission: str) -> tuple[Principal, TenantModel]:
    """Load a tenant and check the caller may do ``permission`` on it (404 outside the caller's scope)."""
    from openkcm.domain.tenants import ID_PATTERN

    who = principal(router)
    check_id(tenant_id, ID_PATTERN)
    try:
        tenant = runtime().tenants.get(tenant_id)
    except NotFound:
        # Recorded like a probe of another account's tenant (same answer, same audit write), in the
        # caller's own account: a missing id and a foreign one are indistinguishable to the caller.
        record_probe(router, who, who.account_id, "", permission, "no such tenant", target=tenant_id)
        raise NotFound("no such object") from None
    authorize(router, who, permission, tenant.account_id, tenant_id=tenant_id)
    return who, tenant


_probes = RefusalThrottle()  # keyed by (caller, account, tenant or probed id)


def record_probe(router: BaseRouter, who: Principal, account_id: str, tenant_id: str, permission: str,
                 reason: str, *, target: str = "") -> None:
    """A refusal of an id outside the caller's scope or missing: the first at once, then at most one record
    a minute per caller and target (per process), with the count in between, so that probing cannot flood
    a tenant's trail and the security bus. Missing and foreign ids take the same path."""
    count = _probes.admit((who.subject, account_id, tenant_id or target))
    if count is None:
        return
    record_refusal(router, who, account_id, tenant_id, permission,
                   reason + (f" ({count} more since the last record)" if count else ""))


def authorize(router: BaseRouter, who: Principal, permission: str, account_id: str, *, tenant_id: str = "") -> None:
    """Scope (404) and role (403) check. Every refusal is a security audit event: outside the caller's
    scope it goes to the addressed tenant's (or account's) trail, where its owner sees the probe."""
    try:
        who.require(permission, account_id)
    except NotFound:
        record_probe(router, who, account_id, tenant_id, permission, "outside the caller's account")
        raise
    except PermissionDenied as exc:
        record_refusal(router, who, account_id, tenant_id, permission, exc.message)
        raise


def require_mfa(router: BaseRouter, who: Principal, what: str, account_id: str, *, tenant_id: str = "") -> None:
    try:
        who.require_mfa(what)
    except PermissionDenied as exc:
        record_refusal(router, who, account_id, tenant_id, "mfa", exc.message)
        raise


def record_refusal(router: BaseRouter, who: Principal, account_id: str, tenant_id: str, permission: str,
                   reason: str) -> None:
    from openkcm.domain.tenants import PLATFORM_TENANT

    event = router.current_event
    try:
        audit(router, who, tenant_id=tenant_id or PLATFORM_TENANT, account_id=account_id, operation="ApiRequest",
              kind="security", result="denied", reason=reason[:256],
              details={"permission": permission, "method": str(event.http_method), "path": str(event.path)[:256]})
    except OpenKCMError:
        pass  # the refusal stands whether or not it could be recorded


def audit(
    router: BaseRouter,
    who: Principal,
    *,
    tenant_id: str,
    account_id: str,
    operation: str,
    kind: str = "config",
    result: str = "success",
    object_id: str = "",
    l2_version: int = 0,
    reason: str = "",
    details: dict[str, str] | None = None,
) -> None:
    """Record one state change made through the API, with the caller as actor."""
    event = router.current_event
    runtime().audit.record(
        AuditEvent(
            tenant_id=tenant_id,
            account_id=account_id,
            source="api",
            operation=operation,
            kind=kind,
            result=result,
            actor=who.subject,
            actor_role=who.role_label,
            object_id=object_id,
            l2_version=l2_version,
            reason=reason,
            request_id=str(event.request_context.request_id or ""),
            client_address=str(event.request_context.http.source_ip or ""),
            details=details or {},
        )
    )


# ---- pagination -------------------------------------------------------------------------------------
def encode_cursor(after: str) -> str:
    return base64.urlsafe_b64encode(json.dumps({"after": after}).encode()).decode().rstrip("=")


def decode_cursor(token: str) -> str:
    try:
        padded = token + "=" * (-len(token) % 4)
        after = json.loads(base64.urlsafe_b64decode(padded.encode("ascii")))["after"]
    except (ValueError, KeyError, TypeError, binascii.Error, UnicodeError):
        raise InvalidRequest("next_token is not a token this API issued", field="next_token") from None
    if not isinstance(after, str):
        raise InvalidRequest("next_token is not a token this API issued", field="next_token")
    return after


def paginate(
    items: Iterable[T], key: Callable[[T], str], limit: int, next_token: str | None, *, newest_first: bool = False
) -> tuple[list[T], str | None]:
    """Sort by ``key`` and return the page after the cursor plus the cursor of the next page (or None)."""
    after = decode_cursor(next_token) if next_token else None
    ordered: Sequence[T] = sorted(items, key=key, reverse=newest_first)
    if after is not None:
        ordered = [item for item in ordered if (key(item) < after if newest_first else key(item) > after)]
    page = list(ordered[:limit])
    more = len(ordered) > limit
    return page, (encode_cursor(key(page[-1])) if more and page else None)


def page_body(items: list[dict[str, Any]], next_token: str | None) -> dict[str, Any]:
    return {"items": items, "next_token": next_token}


# ---- idempotency of creating calls --------------------------------------------------------------------
IDEMPOTENCY_HEADER = "idempotency-key"
_IDEMPOTENCY_KEY = re.compile(r"^[A-Za-z0-9._:-]{8,128}\Z")


def _persistence() -> Any:
    from aws_lambda_powertools.utilities.idempotency import DynamoDBPersistenceLayer

    with _lock:
        if "idempotency" not in _state:
            rt = _state["runtime"]
            assert rt is not None
            _state["idempotency"] = DynamoDBPersistenceLayer(table_name=rt.settings.table_name("idempotency"))
        return _state["idempotency"]


def idempotent(router: BaseRouter, who: Principal, operation: str, body: dict[str, Any],
               create: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run a creating call at most once per ``Idempotency-Key`` header (per caller and operation).

    Without the header the call simply runs. A repeated key with the same body returns the first
    answer; with a different body it is refused (409), as is a repeat while the first is still running.
    """
    key = router.current_event.headers.get(IDEMPOTENCY_HEADER)
    if not key:
        return create()
    if not _IDEMPOTENCY_KEY.match(key):
        raise InvalidRequest("Idempotency-Key must be 8-128 letters, digits, '.', '_', ':' or '-'",
                             field="Idempotency-Key")
    from aws_lambda_powertools.utilities.idempotency import IdempotencyConfig, idempotent_function

    runtime()  # make sure the runtime (and with it the table names) is bound
    config = IdempotencyConfig(
        event_key_jmespath="scope", payload_validation_jmespath="body", expires_after_seconds=24 * 3600
    )
    context = getattr(router, "lambda_context", None)
    if context is not None and hasattr(context, "get_remaining_time_in_millis"):
        config.register_lambda_context(context)

    def run(request: dict[str, Any]) -> dict[str, Any]:
        return create()

    run.__name__ = run.__qualname__ = f"openkcm_api_{operation}"
    wrapped = idempotent_function(data_keyword_argument="request", persistence_store=_persistence(), config=config)(run)
    # The path is part of the scope: the same key sent to another tenant's or account's resource is a
    # different request, never the first one's answer.
    event = router.current_event
    scope = f"{who.subject}|{who.account_id}|{operation}|{event.http_method} {event.path}|{key}"
    return wrapped(request={"scope": scope, "body": body})
