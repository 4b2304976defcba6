"""``/v1/tenants/<id>/audit``: a tenant's audit events by time range and kind, paginated or exported as
JSON lines; chain verification and the compliance report where the audit feature provides them."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from itertools import islice
from typing import Annotated, Any

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.api_gateway import Router
from aws_lambda_powertools.event_handler.openapi.params import Query

from openkcm.api import auth
from openkcm.api.context import decode_cursor, encode_cursor, page_body, runtime, tenant_in_scope
from openkcm.api.errors import json_response, optional_ops
from openkcm.api.routes.common import DEFAULT_LIMIT, Limit, NextToken
from openkcm.domain.audit import KINDS, iter_events
from openkcm.errors import InvalidRequest

router = Router()
MAX_EXPORT = 100_000
EPOCH = "1970-01-01T00:00:00.000000+00:00"

Since = Annotated[str | None, Query(max_length=40, description="ISO 8601 start (inclusive)")]
Until = Annotated[str | None, Query(max_length=40, description="ISO 8601 end (exclusive)")]
Kind = Annotated[str | None, Query(max_length=20, description="operation | security | config | lifecycle")]
Order = Annotated[str, Query(pattern="^(oldest|newest)$", description="oldest (default) or newest first; "
                             "send the same order with a next_token (the token does not carry it)")]


def _time(value: str | None, field: str, default: str) -> str:
    if not value:
        return default
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidRequest(f"{field} must be an ISO 8601 date or time", field=field) from None
    if parsed.tzinfo is None:
        raise InvalidRequest(f"{field} needs a time zone (e.g. ...Z or +00:00)", field=field)
    try:  # stored times are UTC strings: a bound compares with them only in the same form
        return parsed.astimezone(UTC).isoformat(timespec="microseconds")
    except OverflowError:  # within a day of the calendar's ends
        raise InvalidRequest(f"{field} is out of range", field=field) from None


def _events(tenant_id: str, since: str | None, until: str | None, kind: str | None,
            after: tuple[str, str] | None = None, order: str = "oldest") -> Iterator[dict[str, Any]]:
    """Matching events in ``order``, read lazily (a page reads the links around it, not the whole trail)."""
    if kind is not None and kind not in KINDS:
        raise InvalidRequest(f"kind must be one of {sorted(KINDS)}", field="kind")
    start, end = _time(since, "since", ""), _time(until, "until", "~")
    if start and end != "~" and start >= end:
        raise InvalidRequest("since must be before until", field="since")
    runtime().audit.flush()  # a process with a write-ahead log (the local stack) stores its links first
    return iter_events(tenant_id, since=start or EPOCH, until=end, kinds={kind} if kind else None, after=after,
                       newest_first=order == "newest")


def _after(next_token: str | None) -> tuple[str, str] | None:
    if not next_token:
        return None
    time, _, event_id = decode_cursor(next_token).partition("|")
    if not event_id:
        raise InvalidRequest("next_token is not a token this API issued", field="next_token")
    return time, event_id


@router.get("/<tenant_id>/audit")
def query_audit(tenant_id: str, since: Since = None, until: Until = None, kind: Kind = None,
                limit: Limit = DEFAULT_LIMIT, next_token: NextToken = None, order: Order = "oldest") -> dict[str, Any]:
    tenant_in_scope(router, tenant_id, auth.AUDIT_READ)
    events = list(islice(_events(tenant_id, since, until, kind, _after(next_token), order), limit + 1))
    page = events[:limit]
    more = len(events) > limit and page
    return page_body(page, encode_cursor(f"{page[-1]['time']}|{page[-1]['event_id']}") if more else None)


@router.get("/<tenant_id>/audit/export")
def export_audit(tenant_id: str, since: Since = None, until: Until = None, kind: Kind = None) -> Response[str]:
    """Every matching event as JSON lines (``application/x-ndjson``), oldest first."""
    tenant_in_scope(router, tenant_id, auth.AUDIT_READ)
    events = list(islice(_events(tenant_id, since, until, kind), MAX_EXPORT + 1))
    if len(events) > MAX_EXPORT:
        raise InvalidRequest(f"more than {MAX_EXPORT} events; narrow the time range", field="since")
    body = "".join(json.dumps(e, sort_keys=True, separators=(",", ":")) + "\n" for e in events)
    return Response(200, "application/x-ndjson", body,
                    headers={"Content-Disposition": f'attachment; filename="audit-{tenant_id}.jsonl"'})


@router.get("/<tenant_id>/audit/verify")
def verify_audit(tenant_id: str) -> Response[dict[str, Any]]:
    """Verify the tenant's hash chains and signed checkpoints (the audit feature's verifier)."""
    tenant_in_scope(router, tenant_id, auth.AUDIT_READ)
    module = optional_ops("openkcm.ops.audit", "audit verification")
    return json_response(200, _plain(module.verify_tenant(runtime(), tenant_id)))


Day = Annotated[str | None, Query(max_length=40, description="ISO 8601 date or time")]
ReportFormat = Annotated[str, Query(pattern="^(json|html)$", description="json (default) or html")]


@router.get("/<tenant_id>/audit/compliance-report")
def compliance_report(tenant_id: str, since: Day = None, until: Day = None,
                      format: ReportFormat = "json") -> Response[Any]:
    """Key configuration and history, services x keys, rotations versus policy, certificates, refusals and
    security events, chain verification and operations per day, for a period (default: the last 30 days)."""
    tenant_in_scope(router, tenant_id, auth.AUDIT_READ)
    module = optional_ops("openkcm.ops.audit", "the compliance report")
    for name, value in (("since", since), ("until", until)):
        if value:
            try:
                datetime.fromisoformat(value)
            except ValueError:
                raise InvalidRequest(f"{name} must be an ISO 8601 date or time", field=name) from None
    report = module.compliance_report(runtime(), tenant_id, since=since, until=until, fmt=format)
    if format == "html":
        return Response(200, "text/html; charset=utf-8", str(report),
                        headers={"Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src data:"})
    return json_response(200, _plain(report))


def _plain(value: Any) -> Any:
    """Dataclasses and pydantic models from the audit feature, as JSON-ready values."""
    import dataclasses

    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    return value
