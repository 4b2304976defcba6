"""Audit use cases for the CLI, the CMK API and schedules: verify, query, usage, checkpoint, archive and
the compliance report (JSON, or standalone HTML with an inline SVG chart that prints to PDF)."""

from __future__ import annotations

import dataclasses
import html
import json
import logging
import re
from collections import defaultdict
from collections.abc import Iterable
from datetime import UTC, date, datetime, time, timedelta
from itertools import pairwise
from pathlib import Path
from typing import Any

from openkcm.domain.audit import (
    UNSTORED_EVENT,
    ArchiveStore,
    AuditEvent,
    ChainedAuditSink,
    CheckpointSigner,
    KmsCheckpointSigner,
    LocalArchiveStore,
    LocalCheckpointSigner,
    S3ArchiveStore,
    archive_tenant,
    iter_events,
    make_checkpoint,
    read_page,
    summarize_usage,
    usage_counts,
    verify_tenant_chain,
)
from openkcm.errors import InvalidRequest
from openkcm.ops.runtime import Runtime
from openkcm.storage import CertificateModel, TenantModel

log = logging.getLogger(__name__)

REPORT_SECTIONS = (
    "key_configuration",
    "services_keys",
    "rotations",
    "certificates",
    "refusals_and_security",
    "chain_verification",
    "operations_per_day",
)


# ---- wiring ----------------------------------------------------------------------------------------
def signer(runtime: Runtime) -> CheckpointSigner:
    """The checkpoint signer the settings select (created once per runtime)."""
    found = runtime.extras.get("audit_signer")
    if found is None:
        settings = runtime.settings
        if settings.audit_signer == "aws-kms":
            import boto3

            found = KmsCheckpointSigner(
                boto3.client("kms", region_name=settings.region), settings.audit_signing_key_id
            )
        else:
            found = LocalCheckpointSigner(Path(settings.data_dir) / "audit")
        runtime.extras["audit_signer"] = found
    return found


def archive_store(runtime: Runtime) -> ArchiveStore:
    found = runtime.extras.get("audit_archive")
    if found is None:
        settings = runtime.settings
        if settings.audit_archive_bucket:
            import boto3

            found = S3ArchiveStore(
                boto3.client("s3", region_name=settings.region),
                settings.audit_archive_bucket,
                settings.audit_archive_prefix,
            )
        else:
            found = LocalArchiveStore(Path(settings.data_dir) / "audit" / "archive")
        runtime.extras["audit_archive"] = found
    return found


def security_publisher(runtime: Runtime):
    """Publish each security audit event as a ``security_event`` domain event (DECISIONS 14)."""

    def publish(event: AuditEvent) -> None:
        from openkcm.ops import events

        details = {
            "operation": event.operation,
            "result": event.result,
            "reason": event.reason,
            "source": event.source,
            "actor": event.actor,
            "service": event.actor_role,
            "event_id": event.event_id,
            "account_id": event.account_id,
            "client_address": event.client_address,
            "request_id": event.request_id,
        }
        events.publish(
            runtime, events.SECURITY_EVENT, event.tenant_id, **{k: v for k, v in details.items() if v}
        )

    return publish


def wire_sink(runtime: Runtime) -> None:
    """Called by ``build_runtime``: security events to EventBridge, periodic checkpoints in WAL mode."""
    sink = runtime.audit
    sink.set_security_listener(security_publisher(runtime))
    if isinstance(sink, ChainedAuditSink):
        sink.set_authenticator(runtime.root)  # no-op when build_runtime passed it already
        sink.set_wal_fsync(runtime.settings.audit_wal_fsync)
        sink.set_chain_resolver(
            lambda tenant_id, version: runtime.keyring.record(tenant_id, version).parent_ref,
            ttl=runtime.settings.l2_cache_ttl_seconds,
        )
    if isinstance(sink, ChainedAuditSink) and runtime.settings.audit_checkpoint_seconds > 0:
        sink.set_checkpointer(
            lambda tenant_id: checkpoint_tenant(runtime, tenant_id), runtime.settings.audit_checkpoint_seconds
        )


# ---- checkpoints, verification, archive ------------------------------------------------------------
def checkpoint_tenant(runtime: Runtime, tenant_id: str, *, force: bool = False) -> dict[str, Any] | None:
    checkpoint = make_checkpoint(
        tenant_id, signer(runtime), runtime.clock, force=force, authenticator=runtime.root
    )
    return None if checkpoint is None else {"tenant_id": tenant_id, **checkpoint.body}


def _all_tenant_ids() -> list[str]:
    from openkcm.domain.tenants import PLATFORM_TENANT

    ids = {
        t.tenant_id
        for t in TenantModel.scan(
            TenantModel.sk == TenantModel.SORT_KEY, attributes_to_get=["tenant_id", "sk"]
        )
    }
    return sorted(ids | {PLATFORM_TENANT})


def checkpoint_all(runtime: Runtime) -> dict[str, Any]:
    """The scheduled job: flush this process's sink, then checkpoint every tenant whose chains moved."""
    runtime.audit.flush()
    made, failed = [], []
    for tenant_id in _all_tenant_ids():
        try:
            if checkpoint_tenant(runtime, tenant_id):
                made.append(tenant_id)
        except Exception as exc:  # noqa: BLE001 (one broken tenant must not stop the others)
            failed.append({"tenant_id": tenant_id, "error": type(exc).__name__})
    return {"checkpointed": made, "failed": failed}


def run_schedule(runtime: Runtime, *, budget_seconds: float = 600.0) -> dict[str, Any]:
    """The audit schedule (a Lambda on an EventBridge rate; ``openkcm audit checkpoint`` by hand):
    checkpoint every tenant whose chains moved, then archive what is older than the retention period
    (archive first, ``expire_at`` after). Stops starting new tenants when the budget is spent."""
    import time as _time

    deadline = _time.monotonic() + budget_seconds
    runtime.audit.flush()
    cutoff = runtime.clock.now() - timedelta(days=runtime.settings.audit_retention_days)
    report: dict[str, Any] = {"checkpointed": [], "archived": [], "failed": [], "unfinished": []}
    for tenant_id in _all_tenant_ids():
        if _time.monotonic() > deadline:
            report["unfinished"].append(tenant_id)
            continue
        try:
            if checkpoint_tenant(runtime, tenant_id):
                report["checkpointed"].append(tenant_id)
            result = archive_tenant(
                tenant_id, archive_store(runtime), signer(runtime), before=cutoff, clock=runtime.clock
            )
            if result.get("archived_links"):
                report["archived"].append({k: result[k] for k in ("tenant_id", "segment", "archived_links")})
        except Exception as exc:  # noqa: BLE001 (one broken tenant must not stop the others)
            log.warning("audit schedule failed for a tenant: %s", type(exc).__name__)
            report["failed"].append({"tenant_id": tenant_id, "error": type(exc).__name__})
    return report


def verify_tenant(runtime: Runtime, tenant_id: str) -> dict[str, Any]:
    """Verify archive + live chains + checkpoints. ``message`` is "N records, chain intact through
    checkpoint C" or names the first missing/altered/reordered/inserted record or forged checkpoint."""
    runtime.audit.flush()
    return verify_tenant_chain(tenant_id, signer(runtime), archive_store(runtime), authenticator=runtime.root)


verify = verify_tenant  # the name the CMK API route looks up


def archive(
    runtime: Runtime,
    tenant_id: str,
    *,
    before: datetime | None = None,
    expire_after: timedelta = timedelta(0),
) -> dict[str, Any]:
    """Checkpoint, then archive links older than ``before`` (default: the retention period) and only
    then let DynamoDB expire them."""
    runtime.audit.flush()
    checkpoint_tenant(runtime, tenant_id)
    cutoff = before or runtime.clock.now() - timedelta(days=runtime.settings.audit_retention_days)
    return archive_tenant(
        tenant_id,
        archive_store(runtime),
        signer(runtime),
        before=cutoff,
        clock=runtime.clock,
        expire_after=expire_after,
    )


# ---- reading ---------------------------------------------------------------------------------------
def _as_time(value: datetime | date | str | None, *, end: bool = False) -> datetime:
    if value is None or value == "":
        raise InvalidRequest("a time range needs both ends")
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value) if "T" in value else date.fromisoformat(value)
        except ValueError:
            raise InvalidRequest(f"{value!r} is not an ISO 8601 date or time") from None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    start = datetime.combine(value, time.min, tzinfo=UTC)
    try:
        return start + timedelta(days=1) if end else start  # a date as the end includes that whole day
    except OverflowError:
        raise InvalidRequest(f"{value} is out of range") from None


def query_events(
    runtime: Runtime,
    tenant_id: str,
    since: datetime | date | str,
    until: datetime | date | str,
    kinds: list[str] | set[str] | None = None,
    limit: int = 100,
    next_token: str | None = None,
) -> tuple[list[dict[str, Any]], str | None]:
    """A page of a tenant's events with ``since <= time < until`` (a date as ``until`` includes that day)."""
    start, end = _as_time(since), _as_time(until, end=True)
    if end <= start:
        raise InvalidRequest("until must be after since")
    runtime.audit.flush()
    kinds_wanted = set(kinds) if kinds else None
    return read_page(
        tenant_id, since=start, until=end, kinds=kinds_wanted, limit=limit, next_token=next_token
    )


def usage(runtime: Runtime, tenant_id: str, days: int = 30) -> dict[str, Any]:
    """Dashboard figures: operations per day, per operation, services connected with last seen."""
    if not 1 <= days <= 366:
        raise InvalidRequest("days must be 1..366", field="days")
    runtime.audit.flush()
    until_day = runtime.clock.now().date()
    since_day = until_day - timedelta(days=days - 1)
    summary = summarize_usage(usage_counts(tenant_id, since_day, until_day), since_day, until_day)
    return {"tenant_id": tenant_id, "days": days, **summary}


# ---- records a writer without a WAL could only log ------------------------------------------------
_EVENT_FIELDS = frozenset(f.name for f in dataclasses.fields(AuditEvent))


# What may precede the sink's JSON in an exported log line: a level, a timestamp, a request id (Lambda's
# own format is "[ERROR]<tab>time<tab>request id<tab>message"). Anything else (words: a message that merely
# quotes such text, which a client may have sent) is not a line the sink wrote.
_LOG_PREFIX = re.compile(
    r"^(?:(?:\[[A-Z]+\]|[A-Z]+|\d{4}-\d{2}-\d{2}[T ][0-9:.,]+(?:Z|[+-]\d{2}:?\d{2})?|\d{10,16}"
    r"|[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})\s+){0,4}"
)


def _unstored_record(line: str) -> dict[str, Any] | None:
    """The record of an ``UNSTORED_EVENT`` log line: the sink's JSON as the whole message, alone or as a
    log formatter's ``message`` (the Lambda's JSON logs), after at most an export's level, time and request
    id."""
    text = line.strip()
    text = text[_LOG_PREFIX.match(text).end() :]  # type: ignore[union-attr]  (matches, if only "")
    for _ in range(2):
        if not text.startswith("{"):
            return None
        try:
            data = json.loads(text)
        except ValueError:
            return None
        if not isinstance(data, dict):
            return None
        if data.get("event") == UNSTORED_EVENT:
            record = data.get("record")
            return record if isinstance(record, dict) else None
        message = data.get("message")
        text = message.strip() if isinstance(message, str) else ""
    return None


def ingest_unstored(runtime: Runtime, lines: Iterable[str]) -> dict[str, int]:
    """Chain the records a Lambda logged because it could not store them (``UNSTORED_EVENT``), each with
    its own id and time, unless the trail already holds it (the Lambda may have stored it on a later
    invocation): running it twice over the same log adds nothing. The ingesting writer chains and MACs
    them, so they are as trustworthy as the log export they came from: take it from the Lambdas' own log
    groups. Only lines whose whole message is the sink's JSON count (a message quoting such text does
    not); nothing proves a line was written by the sink itself."""
    counts = {"ingested": 0, "already_stored": 0, "unreadable": 0}
    runtime.audit.flush()
    for line in lines:
        if UNSTORED_EVENT not in line:
            continue
        record = _unstored_record(line)
        try:
            event = AuditEvent(**{k: v for k, v in (record or {}).items() if k in _EVENT_FIELDS})
            at = datetime.fromisoformat(event.time)
        except (InvalidRequest, TypeError, ValueError):
            counts["unreadable"] += 1
            continue
        window = iter_events(event.tenant_id, since=at, until=at + timedelta(milliseconds=1))
        if any(e.get("event_id") == event.event_id for e in window):
            counts["already_stored"] += 1
            continue
        runtime.audit.record(event)
        counts["ingested"] += 1
    return counts


# ---- compliance report -----------------------------------------------------------------------------
def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


_HISTORY_FIELDS = (
    "time",
    "operation",
    "actor",
    "actor_role",
    "source",
    "result",
    "reason",
    "l1_ref",
    "l2_version",
)
_ROTATION_FIELDS = ("time", "operation", "actor", "source", "result", "l2_version")
_CERTIFICATE_FIELDS = ("time", "operation", "actor", "object_id", "result", "details")
_REFUSAL_FIELDS = (
    "time",
    "kind",
    "operation",
    "result",
    "reason",
    "actor",
    "actor_role",
    "source",
    "client_address",
    "object_id",
)


Listed = list[tuple[tuple[str, str], dict[str, Any]]]  # events a report section lists, by (time, event id)


class _PeriodTally:
    """The report's view of a period, built in one pass over its events as they are read. Why: a busy KMIP
    tenant writes millions of records a month; holding them all (and sorting them) took memory that grows
    with the trail and ~3 us per record. Only sums and the few events the report lists are kept."""

    def __init__(self, start: datetime, end: datetime) -> None:
        self.records = 0
        # the events each section lists, with their (time, event id) to sort them by at the end
        self.history: Listed = []  # configuration and lifecycle
        self.rotations: Listed = []
        self.certificates: Listed = []
        self.refusals: Listed = []
        self.services: dict[tuple[str, str], dict[str, Any]] = {}
        self.per_day: dict[str, int] = {}
        day = start.date()
        while datetime.combine(day, time.min, tzinfo=UTC) < end and len(self.per_day) < 3660:
            self.per_day[day.isoformat()] = 0
            day += timedelta(days=1)

    def add(self, e: dict[str, Any]) -> None:
        self.records += 1
        kind, operation, when = e.get("kind"), str(e.get("operation") or ""), str(e.get("time") or "")
        order = (when, str(e.get("event_id") or ""))
        if kind == "operation":
            self._count_use(e, order)
            if when[:10] in self.per_day:
                self.per_day[when[:10]] += 1
        elif kind in ("config", "lifecycle"):
            self.history.append((order, {k: e.get(k) for k in _HISTORY_FIELDS}))
        lowered = operation.lower()
        if "rotat" in lowered:
            self.rotations.append((order, {k: e.get(k) for k in _ROTATION_FIELDS}))
        if "certificate" in lowered or lowered.startswith("pki"):
            self.certificates.append((order, {k: e.get(k) for k in _CERTIFICATE_FIELDS}))
        if e.get("result") != "success" or kind == "security":
            self.refusals.append((order, {k: e.get(k) for k in _REFUSAL_FIELDS}))

    def _count_use(self, e: dict[str, Any], order: tuple[str, str]) -> None:
        when = order[0]
        service = e.get("actor_role") or e.get("actor") or "-"
        key = e.get("object_id") or (f"L2 v{e['l2_version']}" if e.get("l2_version") else "-")
        row = self.services.get((service, key))
        if row is None:
            row = self.services[(service, key)] = {
                "service": service,
                "key": key,
                "l1_ref": e.get("l1_ref") or "",
                "operations": 0,
                "denied": 0,
                "by_operation": defaultdict(int),
                "last_used": "",
                "_first": order,  # l1_ref is the one of the earliest use, as when events came in order
            }
        elif order < row["_first"]:
            row["_first"], row["l1_ref"] = order, e.get("l1_ref") or ""
        row["operations"] += 1
        row["denied"] += e.get("result") != "success"
        row["by_operation"][e.get("operation")] += 1
        row["last_used"] = max(row["last_used"], when)

    def services_keys(self) -> list[dict[str, Any]]:
        rows = []
        for row in self.services.values():
            row.pop("_first", None)
            row["by_operation"] = dict(sorted(row["by_operation"].items()))
            rows.append(row)
        return sorted(rows, key=lambda r: (r["service"], r["key"]))


def _in_order(rows: Listed) -> list[dict[str, Any]]:
    """The listed events by (time, event id), as a sorted read of the trail gives them."""
    return [row for _, row in sorted(rows, key=lambda pair: pair[0])]


def _key_configuration(runtime: Runtime, tenant: TenantModel, history: Listed) -> dict[str, Any]:
    versions = [
        {
            "version": int(r.l2_version),
            "parent_kind": r.parent_kind,
            "parent_ref": r.parent_ref,
            "state": r.state,
            "created_at": _iso(r.created_at),
            "retired_at": _iso(r.retired_at),
            "destroyed_at": _iso(r.destroyed_at),
        }
        for r in runtime.keyring.records(tenant.tenant_id)
    ]
    return {
        "mode": tenant.key_mode,
        "l1_key_ref": tenant.l1_key_ref,
        "l1_state": tenant.l1_state,
        "status": tenant.status,
        "current_l2_version": int(tenant.current_l2_version or 0),
        "rotation_period_days": int(tenant.rotation_period_days or 0),
        "created_at": _iso(tenant.created_at),
        "l2_versions": sorted(versions, key=lambda v: v["version"]),
        "history": _in_order(history),
    }


def _rotations(
    runtime: Runtime, config: dict[str, Any], done: Listed, start: datetime, end: datetime
) -> dict[str, Any]:
    policy = config["rotation_period_days"]
    versions = config["l2_versions"]
    created = sorted(datetime.fromisoformat(v["created_at"]) for v in versions if v["created_at"])
    gaps = [(b - a).total_seconds() / 86400 for a, b in pairwise(created)]
    age = (runtime.clock.now() - created[-1]).total_seconds() / 86400 if created else None
    rotated = [
        v
        for v in versions
        if v["version"] > 1 and v["created_at"] and start <= datetime.fromisoformat(v["created_at"]) < end
    ]
    return {
        "policy_days": policy,
        "rotations_in_period": len(rotated),
        "l2_versions_created_in_period": [v["version"] for v in rotated],
        "events": _in_order(done),
        "longest_interval_days": round(max(gaps), 2) if gaps else None,
        "current_key_age_days": round(age, 2) if age is not None else None,
        "compliant": bool(policy) and age is not None and age <= policy and all(g <= policy for g in gaps),
    }


def _certificates(tenant_id: str, audit: Listed, start: datetime, end: datetime) -> dict[str, Any]:
    issued, revoked = [], []
    for cert in CertificateModel.query(tenant_id, CertificateModel.sk.startswith("CERT#")):
        row = {
            "serial": cert.serial,
            "service": cert.service_id,
            "subject": cert.subject,
            "issued_at": _iso(cert.issued_at),
            "not_after": _iso(cert.not_after),
            "revoked_at": _iso(cert.revoked_at),
            "revoked_reason": cert.revoked_reason,
        }
        if cert.issued_at and start <= cert.issued_at < end:
            issued.append(row)
        if cert.revoked_at and start <= cert.revoked_at < end:
            revoked.append(row)
    return {"issued": issued, "revoked": revoked, "events": _in_order(audit)}


def _refusals(listed: Listed) -> dict[str, Any]:
    rows = _in_order(listed)
    by_reason: dict[str, int] = defaultdict(int)
    for r in rows:
        by_reason[r["reason"] or r["operation"]] += 1
    return {
        "count": len(rows),
        "security_events": sum(r["kind"] == "security" for r in rows),
        "by_reason": dict(sorted(by_reason.items())),
        "events": rows,
    }


def compliance_report(
    runtime: Runtime,
    tenant_id: str,
    since: datetime | date | str | None = None,
    until: datetime | date | str | None = None,
    fmt: str = "json",
) -> dict[str, Any] | str:
    """Per tenant and period: key configuration and its history, services x keys, rotations versus policy,
    certificates issued and revoked, refusals and security events, chain verification, operations per day.
    Without a period: the last 30 days up to and including today."""
    if fmt not in ("json", "html"):
        raise InvalidRequest("format must be json or html", field="format")
    today = runtime.clock.now().date()
    until = until if until not in (None, "") else today
    since = since if since not in (None, "") else today - timedelta(days=29)
    start, end = _as_time(since), _as_time(until, end=True)
    if end <= start or end - start > timedelta(days=3660):
        raise InvalidRequest("the period must be positive and at most 10 years")
    tenant = runtime.tenants.get(tenant_id)
    runtime.audit.flush()
    tally = _PeriodTally(start, end)
    for event in iter_events(tenant_id, since=start, until=end, ordered=False):
        tally.add(event)
    config = _key_configuration(runtime, tenant, tally.history)
    report = {
        "tenant_id": tenant_id,
        "account_id": tenant.account_id,
        "name": tenant.name,
        "period": {"from": start.isoformat(), "to": end.isoformat()},
        "generated_at": runtime.clock.now().isoformat(),
        "records_in_period": tally.records,
        "key_configuration": config,
        "services_keys": tally.services_keys(),
        "rotations": _rotations(runtime, config, tally.rotations, start, end),
        "certificates": _certificates(tenant_id, tally.certificates, start, end),
        "refusals_and_security": _refusals(tally.refusals),
        "chain_verification": verify_tenant_chain(
            tenant_id, signer(runtime), archive_store(runtime), authenticator=runtime.root
        ),
        "operations_per_day": [{"day": d, "count": c} for d, c in tally.per_day.items()],
    }
    return render_html(report) if fmt == "html" else report


# ---- HTML ------------------------------------------------------------------------------------------
def _chart(per_day: list[dict[str, Any]]) -> str:
    width, height, pad = 720, 220, 36
    peak = max((d["count"] for d in per_day), default=0) or 1
    slot = (width - 2 * pad) / max(1, len(per_day))
    bars, labels = [], []
    step = max(1, len(per_day) // 10)
    for i, d in enumerate(per_day):
        h = (height - 2 * pad) * d["count"] / peak
        x = pad + i * slot
        bars.append(
            f'<rect x="{x + slot * 0.1:.1f}" y="{height - pad - h:.1f}" width="{slot * 0.8:.1f}" '
            f'height="{h:.1f}" fill="#2f6fb0"><title>{html.escape(d["day"])}: {d["count"]}</title></rect>'
        )
        if i % step == 0:
            labels.append(
                f'<text x="{x + slot / 2:.1f}" y="{height - pad + 14}" font-size="10" '
                f'text-anchor="middle">{html.escape(d["day"][5:])}</text>'
            )
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" role="img" aria-label="Operations per day" '
        f'viewBox="0 0 {width} {height}" width="{width}" height="{height}">'
        f'<line x1="{pad}" y1="{height - pad}" x2="{width - pad}" y2="{height - pad}" stroke="#555"/>'
        f'<text x="{pad}" y="{pad - 10}" font-size="11">max {peak} / day</text>'
        + "".join(bars)
        + "".join(labels)
        + "</svg>"
    )


def _table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    if not rows:
        return "<p class='none'>None in this period.</p>"
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_text(r.get(c)))}</td>" for c in columns) + "</tr>" for r in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, dict):
        return ", ".join(f"{k}: {v}" for k, v in value.items())
    return str(value)


def render_html(report: dict[str, Any]) -> str:
    e = html.escape
    config, rot, certs = report["key_configuration"], report["rotations"], report["certificates"]
    refusals, verification = report["refusals_and_security"], report["chain_verification"]
    status = "intact" if verification["intact"] else "PROBLEM"
    summary = [
        ("Key mode", config["mode"]),
        ("L1 key", config["l1_key_ref"] or "internal root key"),
        ("L1 state", config["l1_state"]),
        ("Tenant status", config["status"]),
        ("Current L2 version", config["current_l2_version"]),
        ("Rotation policy", f"{config['rotation_period_days']} days"),
    ]
    summary_rows = "".join(f"<tr><th>{e(k)}</th><td>{e(str(v))}</td></tr>" for k, v in summary)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>OpenKCM compliance report: {e(report["tenant_id"])}</title>
<style>
body{{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:2rem;color:#1b1b1b;max-width:1100px}}
h1{{font-size:1.5rem}} h2{{font-size:1.15rem;border-bottom:1px solid #ccc;padding-bottom:.2rem;margin-top:2rem}}
table{{border-collapse:collapse;width:100%;font-size:.85rem;margin:.5rem 0}}
th,td{{border:1px solid #ddd;padding:.25rem .4rem;text-align:left;vertical-align:top}} th{{background:#f3f5f8}}
.ok{{color:#0a6b2d;font-weight:600}} .bad{{color:#a40e0e;font-weight:600}} .none{{color:#666}}
@media print{{body{{margin:0}} h2{{page-break-after:avoid}} table{{page-break-inside:auto}}}}
</style></head><body>
<h1>Compliance report — tenant {e(report["tenant_id"])}</h1>
<p>Account {e(report["account_id"])} · period {e(report["period"]["from"])} to {e(report["period"]["to"])} ·
generated {e(report["generated_at"])} · {report["records_in_period"]} audit records in the period.</p>

<section id="key_configuration"><h2>Key configuration and its history</h2>
<table>{summary_rows}</table>
<h3>L2 key versions</h3>{_table(config["l2_versions"], ["version", "parent_kind", "parent_ref", "state", "created_at", "retired_at", "destroyed_at"])}
<h3>Changes (who, when)</h3>{_table(config["history"], ["time", "operation", "actor", "actor_role", "source", "result", "l1_ref", "l2_version"])}
</section>

<section id="services_keys"><h2>Services and the keys they use</h2>
{_table(report["services_keys"], ["service", "key", "l1_ref", "operations", "denied", "by_operation", "last_used"])}
</section>

<section id="rotations"><h2>Rotations versus policy</h2>
<p>Policy: every {rot["policy_days"]} days · rotations in period: {rot["rotations_in_period"]} ·
current key age: {e(str(rot["current_key_age_days"]))} days · longest interval: {e(str(rot["longest_interval_days"]))} days ·
<span class="{"ok" if rot["compliant"] else "bad"}">{"within policy" if rot["compliant"] else "outside policy"}</span></p>
{_table(rot["events"], ["time", "operation", "actor", "source", "result", "l2_version"])}
</section>

<section id="certificates"><h2>Certificates issued and revoked</h2>
<h3>Issued</h3>{_table(certs["issued"], ["serial", "service", "subject", "issued_at", "not_after"])}
<h3>Revoked</h3>{_table(certs["revoked"], ["serial", "service", "revoked_at", "revoked_reason"])}
<h3>Certificate events</h3>{_table(certs["events"], ["time", "operation", "actor", "object_id", "result"])}
</section>

<section id="refusals_and_security"><h2>Refusals and security events</h2>
<p>{refusals["count"]} refused or failed operations, {refusals["security_events"]} security events.</p>
{_table(refusals["events"], ["time", "kind", "operation", "result", "reason", "actor", "actor_role", "source", "client_address"])}
</section>

<section id="chain_verification"><h2>Audit chain verification</h2>
<p class="{"ok" if verification["intact"] else "bad"}">{e(status)}: {e(verification["message"])}</p>
<p>{verification["records"]} records in {verification["links"]} links from {verification["writers"]} writers;
{verification["unconfirmed_records"]} not yet checkpointed; archive: {verification["archive"]["segments"]} segments.</p>
{_table(verification["problems"][:20], ["kind", "message"])}
</section>

<section id="operations_per_day"><h2>Operations per day</h2>
{_chart(report["operations_per_day"])}
</section>
</body></html>
"""
