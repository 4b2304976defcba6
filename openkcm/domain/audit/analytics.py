"""Reading the trail back: events by time (paged), usage counters per day/operation/service."""

from __future__ import annotations

import base64
import json
from collections import defaultdict
from datetime import date, datetime, timedelta
from typing import Any

from openkcm.domain.audit.chain import item_events_and_digests
from openkcm.errors import InvalidRequest
from openkcm.storage import UsageModel
from openkcm.storage.audit_models import AuditLinkModel, bind_audit_models

# A link's events span at most one flush interval (links are cut at every flush attempt, even while the
# store is down), so a link that started this long before ``since`` cannot hold a later event.
LINK_SPAN_SLACK = timedelta(hours=1)


def _iso(value: datetime | str) -> str:
    if isinstance(value, datetime):
        return value.isoformat(timespec="microseconds")
    return str(value)


def read_events(
    tenant_id: str, *, since: datetime | str = "", until: datetime | str = "~", kinds: set[str] | None = None
) -> list[dict[str, Any]]:
    """Events of one tenant with ``since <= time < until``, oldest first."""
    bind_audit_models()
    lower, upper = _iso(since), _iso(until)
    start = lower or "0"  # DynamoDB refuses an empty key value; "0" sorts before every ISO time
    if lower:
        try:
            start = (datetime.fromisoformat(lower) - LINK_SPAN_SLACK).isoformat(timespec="microseconds")
        except ValueError:
            raise InvalidRequest("since must be an ISO 8601 time") from None
    events: list[dict[str, Any]] = []
    for item in AuditLinkModel.time_index.query(tenant_id, AuditLinkModel.first_time.between(start, upper)):
        if item.last_time < lower:
            continue
        for event in item_events_and_digests(item)[0]:
            if lower <= event["time"] < upper and (not kinds or event["kind"] in kinds):
                events.append(event)
    events.sort(key=lambda e: (e["time"], e["event_id"]))
    return events


def page_events(
    events: list[dict[str, Any]], limit: int, next_token: str | None
) -> tuple[list[dict[str, Any]], str | None]:
    """Cursor paging over a time-ordered list: the token is the (time, event id) of the last one returned."""
    if not 1 <= limit <= 1000:
        raise InvalidRequest("limit must be 1..1000", field="limit")
    if next_token:
        try:
            after = tuple(json.loads(base64.urlsafe_b64decode(next_token.encode())))
            if len(after) != 2 or not all(isinstance(x, str) for x in after):
                raise ValueError
        except ValueError:
            raise InvalidRequest("next_token is not valid", field="next_token") from None
        events = [e for e in events if (e["time"], e["event_id"]) > after]
    page = events[:limit]
    token = None
    if len(events) > limit:
        token = base64.urlsafe_b64encode(
            json.dumps([page[-1]["time"], page[-1]["event_id"]]).encode()
        ).decode()
    return page, token


def usage_counts(tenant_id: str, since_day: date, until_day: date) -> list[dict[str, Any]]:
    """Counter rows (day, operation, service, count, last_seen) for ``since_day <= day <= until_day``."""
    rows = []
    condition = UsageModel.sk.between(f"U#{since_day.isoformat()}", f"U#{until_day.isoformat()}#~")
    for item in UsageModel.query(tenant_id, condition):
        rows.append(
            {
                "day": item.day,
                "operation": item.operation,
                "service": item.service,
                "count": int(item.count or 0),
                "last_seen": item.last_seen,
            }
        )
    return rows


def summarize_usage(rows: list[dict[str, Any]], since_day: date, until_day: date) -> dict[str, Any]:
    per_day: dict[str, int] = {}
    day = since_day
    while day <= until_day:
        per_day[day.isoformat()] = 0
        day += timedelta(days=1)
    per_operation: dict[str, int] = defaultdict(int)
    services: dict[str, dict[str, Any]] = {}
    for row in rows:
        per_day[row["day"]] = per_day.get(row["day"], 0) + row["count"]
        per_operation[row["operation"]] += row["count"]
        svc = services.setdefault(
            row["service"], {"service": row["service"], "operations": 0, "last_seen": ""}
        )
        svc["operations"] += row["count"]
        svc["last_seen"] = max(svc["last_seen"], row["last_seen"] or "")
    return {
        "since": since_day.isoformat(),
        "until": until_day.isoformat(),
        "total": sum(per_day.values()),
        "per_day": [{"day": d, "count": c} for d, c in sorted(per_day.items())],
        "per_operation": dict(sorted(per_operation.items())),
        "services": sorted(services.values(), key=lambda s: s["last_seen"], reverse=True),
        "rows": sorted(rows, key=lambda r: (r["day"], r["operation"], r["service"])),
    }
