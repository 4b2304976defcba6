"""Reading the trail back: events by time (paged), usage counters per day/operation/service."""

from __future__ import annotations

import base64
import heapq
import itertools
import json
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

from openkcm.domain.audit.chain import (
    LEGACY_HORIZON,
    LEGACY_LINK_SPAN,
    LINK_MAX_SPAN,
    ORDER_SLACK,  # the merge holds this much of the trail in memory (~1,600 events at 16,000/s)
    item_events_and_digests,
    spans_bounded_since,
)
from openkcm.errors import InvalidRequest
from openkcm.storage import UsageModel
from openkcm.storage.audit_models import AuditLinkModel, bind_audit_models


def _iso(value: datetime | str) -> str:
    """A bound as stored times are written (UTC, ``+00:00``, microseconds), so that strings compare as
    times; other markers ("", "~") pass through."""
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            return value
        value = parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat(timespec="microseconds")


def _shifted(value: str, delta: timedelta, field: str) -> str:
    """``value + delta``; past the calendar's ends, no bound at all ("0" or "~")."""
    try:
        return (datetime.fromisoformat(value) + delta).isoformat(timespec="microseconds")
    except ValueError:
        raise InvalidRequest(f"{field} must be an ISO 8601 time", field=field) from None
    except OverflowError:
        return "~" if delta > timedelta(0) else "0"


def _bounded_at(tenant_id: str, lower: str) -> bool:
    """Whether every link that could hold events from ``lower`` on was written span-bounded."""
    marker = spans_bounded_since(tenant_id)
    if marker is None:
        return False
    if marker == "0":
        return True
    try:
        return lower >= (datetime.fromisoformat(marker) + LEGACY_HORIZON).isoformat(timespec="microseconds")
    except (ValueError, OverflowError):
        return False


Cursor = tuple[str, str]  # (time, event id) of the last event a reader has seen


def iter_events(
    tenant_id: str,
    *,
    since: datetime | str = "",
    until: datetime | str = "~",
    kinds: set[str] | None = None,
    after: Cursor | None = None,
    ordered: bool = True,
    newest_first: bool = False,
) -> Iterator[dict[str, Any]]:
    """Events of one tenant with ``since <= time < until`` (and after the cursor), oldest first, read lazily.
    ``ordered=False``: each link's events as they are read, with no merge (for readers that only sum, such
    as the compliance report; the merge cost ~3 us per event). ``newest_first``: see :func:`_newest_first`
    (the cursor then means "older than").

    Why lazily: a busy KMIP tenant writes millions of events an hour, and a page of the audit log must not
    read them all. Links come from the time index in ``first_time`` order, starting LINK_MAX_SPAN before
    the page (no earlier link can reach into it; LEGACY_LINK_SPAN for times near links written before the
    bound, see ``chain.mark_spans_bounded``), and their events are merged through a heap: an event is final
    once it is earlier than the next link's first event, so memory holds the links around the page.
    """
    if after is not None and not ordered:
        raise ValueError("a cursor needs ordered events")
    if newest_first:
        yield from _newest_first(tenant_id, _iso(since), _iso(until), kinds, after)
        return
    bind_audit_models()
    lower, upper = _iso(since), _iso(until)
    if after is not None:
        _shifted(after[0], timedelta(0), "next_token")  # a time, or the token is refused
        lower = max(lower, after[0])
    latest = upper if upper == "~" else _shifted(upper, ORDER_SLACK, "until")
    if lower:  # DynamoDB refuses an empty key value, hence two forms
        span = LINK_MAX_SPAN if _bounded_at(tenant_id, lower) else LEGACY_LINK_SPAN
        earliest = _shifted(lower, -(span + ORDER_SLACK), "since")
        query = AuditLinkModel.time_index.query(
            tenant_id,
            AuditLinkModel.first_time.between(earliest, latest),
            # links that end before the page are left on the server (they would only be skipped here)
            filter_condition=AuditLinkModel.last_time >= _shifted(lower, -ORDER_SLACK, "since"),
        )
    else:
        query = AuditLinkModel.time_index.query(tenant_id, AuditLinkModel.first_time <= latest)
    heap: list[tuple[Cursor, int, dict[str, Any]]] = []
    order = itertools.count()  # ties (the same event twice) never compare the dicts
    for item in query:
        try:  # a stored time that does not parse (a damaged item) only costs the slack, not the read
            fence = (datetime.fromisoformat(item.first_time) - ORDER_SLACK).isoformat(timespec="microseconds")
        except (TypeError, ValueError):
            fence = ""
        while heap and heap[0][0][0] < fence:
            yield heapq.heappop(heap)[2]
        if not _may_hold(item, kinds):
            continue
        for event in item_events_and_digests(item)[0]:
            when = event.get("time")
            if not isinstance(when, str) or not lower <= when < upper:
                continue
            if kinds and event.get("kind") not in kinds:
                continue
            if not ordered:
                yield event
                continue
            key = (when, str(event.get("event_id", "")))
            if after is None or key > after:
                heapq.heappush(heap, (key, next(order), event))
    while heap:
        yield heapq.heappop(heap)[2]


def _may_hold(item: AuditLinkModel, kinds: set[str] | None) -> bool:
    """Whether a link can hold events of ``kinds``, by its stored kinds (none stored: it may). The stored
    kinds are not hashed; verification and the checkpointer check them against the records."""
    stored = item.kinds
    return not kinds or not stored or not kinds.isdisjoint(stored)


class _Newer:
    """A heap entry that sorts the newest first (heapq keeps the smallest on top)."""

    __slots__ = ("key", "value")

    def __init__(self, key: Any, value: Any) -> None:
        self.key, self.value = key, value

    def __lt__(self, other: _Newer) -> bool:
        return bool(self.key > other.key)


def _legacy_ceiling(tenant_id: str) -> str | None:
    """No event of a link written before the span bound is later than this: "" when the tenant has no
    such links, None when any link may be one (no marker yet)."""
    marker = spans_bounded_since(tenant_id)
    if marker in (None, "0"):
        return None if marker is None else ""
    try:
        return (datetime.fromisoformat(marker) + LEGACY_HORIZON).isoformat(timespec="microseconds")
    except (ValueError, OverflowError):
        return None


def _newest_first(
    tenant_id: str, lower: str, upper: str, kinds: set[str] | None, before: Cursor | None
) -> Iterator[dict[str, Any]]:
    """Events with ``lower <= time < upper`` (and older than the cursor), newest first: the audit log a
    person opens wants the latest events, and a busy tenant's trail is too long to read to its end.

    Links come from the time index by descending ``first_time``. A link read last bounds every link still
    to come: their events are at most LINK_MAX_SPAN after its ``first_time`` (or before the legacy
    ceiling, and within LEGACY_LINK_SPAN). Links are held compressed in a heap by ``last_time`` and parsed
    only when they may hold the next-newest event (then read whole), so a page reads the events of the
    links around it although it reads the times of the LINK_MAX_SPAN before it."""
    bind_audit_models()
    ceiling = upper if before is None else min(upper, _shifted(before[0], timedelta(0), "next_token"))
    latest = "~" if ceiling == "~" else _shifted(ceiling, ORDER_SLACK, "until")
    if lower:
        span = LINK_MAX_SPAN if _bounded_at(tenant_id, lower) else LEGACY_LINK_SPAN
        condition = AuditLinkModel.first_time.between(_shifted(lower, -(span + ORDER_SLACK), "since"), latest)
        filter_condition = AuditLinkModel.last_time >= _shifted(lower, -ORDER_SLACK, "since")
    else:
        condition, filter_condition = AuditLinkModel.first_time <= latest, None
    # Only the keys and times come with the query: the LINK_MAX_SPAN of links it reads to bound the page
    # was ~6 MB of events at 16,000 records/s, and the page needs one or two of those links in full.
    query = AuditLinkModel.time_index.query(
        tenant_id,
        condition,
        filter_condition=filter_condition,
        scan_index_forward=False,
        attributes_to_get=["tenant_id", "sk", "first_time", "last_time", "kinds"],
    )
    legacy = _legacy_ceiling(tenant_id)
    links: list[_Newer] = []  # unparsed links by the latest time an event of theirs can have
    events: list[_Newer] = []  # parsed events by (time, event id)
    order = itertools.count()

    def parse(item: AuditLinkModel) -> None:
        try:
            item = AuditLinkModel.get(item.tenant_id, item.sk)
        except AuditLinkModel.DoesNotExist:
            return  # expired after its archiving since the query saw it
        for event in item_events_and_digests(item)[0]:
            when = event.get("time")
            if not isinstance(when, str) or not lower <= when < upper or when > ceiling:
                continue
            if kinds and event.get("kind") not in kinds:
                continue
            key = (when, str(event.get("event_id", "")), next(order))
            if before is None or key[:2] < before:
                heapq.heappush(events, _Newer(key, event))

    def final(bound: str | None) -> Iterator[dict[str, Any]]:
        """Yield the events newer than ``bound`` (every event when None) that no held link can beat."""
        while True:
            if links and (not events or links[0].key[0] >= events[0].key[0]):
                parse(heapq.heappop(links).value)
                continue
            if not events or (bound is not None and events[0].key[0] <= bound):
                return
            yield heapq.heappop(events).value

    for item in query:
        try:  # links of earlier versions give their last event in record order: allow for the slack
            reach = (datetime.fromisoformat(item.last_time) + ORDER_SLACK).isoformat(timespec="microseconds")
            first = datetime.fromisoformat(item.first_time)
            bound = (first + LINK_MAX_SPAN + ORDER_SLACK).isoformat(timespec="microseconds")
            wide = (first + LEGACY_LINK_SPAN + ORDER_SLACK).isoformat(timespec="microseconds")
            if legacy is None:
                bound = wide
            elif legacy:  # a legacy link still to come ends before the ceiling and within its span
                bound = max(bound, min(legacy, wide))
        except (TypeError, ValueError, OverflowError):
            reach, bound = "~", "~"  # a damaged item: parse it before anything, bound nothing yet
        if _may_hold(item, kinds):
            heapq.heappush(links, _Newer((reach, next(order)), item))
        yield from final(bound)
    yield from final(None)


def read_events(
    tenant_id: str, *, since: datetime | str = "", until: datetime | str = "~", kinds: set[str] | None = None
) -> list[dict[str, Any]]:
    """Every event of one tenant with ``since <= time < until``, oldest first (reports; bounded ranges)."""
    events = list(iter_events(tenant_id, since=since, until=until, kinds=kinds))
    events.sort(key=lambda e: (e["time"], e["event_id"]))  # exact even for links written before min/max
    return events


def read_page(
    tenant_id: str,
    *,
    since: datetime | str,
    until: datetime | str,
    kinds: set[str] | None,
    limit: int,
    next_token: str | None,
    newest_first: bool = False,
) -> tuple[list[dict[str, Any]], str | None]:
    """One page of :func:`iter_events`; the token is the (time, event id) of the last event returned."""
    if not 1 <= limit <= 1000:
        raise InvalidRequest("limit must be 1..1000", field="limit")
    after = None
    if next_token:
        try:
            after = tuple(json.loads(base64.urlsafe_b64decode(next_token.encode())))
            if len(after) != 2 or not all(isinstance(x, str) for x in after):
                raise ValueError
        except (ValueError, TypeError):
            raise InvalidRequest("next_token is not valid", field="next_token") from None
    events = list(
        itertools.islice(
            iter_events(
                tenant_id, since=since, until=until, kinds=kinds, after=after, newest_first=newest_first
            ),
            limit + 1,
        )
    )
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
