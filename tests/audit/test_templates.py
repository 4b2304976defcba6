"""The KMIP hot path keeps records through an EventTemplate (constant fields encoded once) instead of an
AuditEvent: both must give byte-identical records, refuse the same input, and leave a trail that
verifies. Also the pieces that make links cheap (the digest-list encoding inside link hashes, compact
links.wal lines) against their reference encodings."""

from __future__ import annotations

import hashlib
import json
import os
from datetime import date
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from openkcm.domain.audit import ChainedAuditSink, EventTemplate, usage_counts
from openkcm.domain.audit.chain import Link, link_hash
from openkcm.domain.audit.events import canonical, encode_record
from openkcm.domain.audit.sink import _chunks
from openkcm.errors import AuditUnavailable, InvalidRequest
from openkcm.ops import audit
from tests.audit.helpers import events_of, items

text = st.text(max_size=40)


@settings(max_examples=300, deadline=None)
@given(
    tenant=st.text(min_size=1, max_size=20),
    actor=text,
    role=text,
    address=text,
    operation=st.text(min_size=1, max_size=20),
    result=st.sampled_from(["success", "denied", "failure"]),
    kind=st.sampled_from(["operation", "config", "lifecycle"]),
    object_id=text,
    reason=text,
    l1_ref=text,
    l2_version=st.integers(min_value=0, max_value=10**9),
    request_id=text,
)
def test_template_encoding_is_the_canonical_record(
    tenant, actor, role, address, operation, result, kind, object_id, reason, l1_ref, l2_version, request_id
):
    try:
        template = EventTemplate(
            tenant_id=tenant, source="kmip", actor=actor, actor_role=role, client_address=address
        )
    except InvalidRequest:
        return  # refused like an AuditEvent (the constructor builds one)
    try:
        event = template.event(
            operation,
            result=result,
            kind=kind,
            object_id=object_id,
            reason=reason,
            l1_ref=l1_ref,
            l2_version=l2_version,
            request_id=request_id,
        )
    except InvalidRequest:  # the template's own check refuses it too
        with pytest.raises(InvalidRequest):
            EventTemplate.check(operation, result, kind, object_id, reason, l2_version, request_id)
        return
    EventTemplate.check(operation, result, kind, object_id, reason, l2_version, request_id)
    record = event.to_record()
    record["time"] = "2026-11-29T13:40:18.455635+00:00"
    line = template.encode(
        record["event_id"],
        record["time"],
        operation,
        result,
        kind,
        object_id,
        reason,
        l1_ref,
        l2_version,
        request_id,
    )
    assert line == encode_record(record) == canonical(record)


def test_template_refuses_what_an_event_refuses():
    with pytest.raises(InvalidRequest):
        EventTemplate(tenant_id="t", source="kmip", actor="-----BEGIN PRIVATE KEY-----")
    with pytest.raises(InvalidRequest):
        EventTemplate(tenant_id="", source="kmip")
    check = EventTemplate.check
    ok = ("Get", "success", "operation", "uid-1", "", 1, "req-1")
    check(*ok)
    for position, bad in [
        (0, ""),  # no operation
        (1, "maybe"),  # result outside the schema
        (2, "gossip"),  # kind outside the schema
        (3, "ab" * 60 + "Z9" * 10),  # a long mixed base64-like run: looks like key material
        (4, "see -----BEGIN CERTIFICATE-----"),
        (5, True),  # l2_version must be an int, not a bool
        (6, "x" * 600),  # over the field bound
        (3, b"bytes"),  # not text
    ]:
        args = list(ok)
        args[position] = bad
        with pytest.raises(InvalidRequest):
            check(*args)


def test_record_from_keeps_the_same_record_as_record(runtime, tenant_factory, tmp_path: Path):
    tid = tenant_factory().tenant_id
    sink = ChainedAuditSink(wal_dir=tmp_path / "wal", flush_interval=3600, authenticator=runtime.root)
    sink.set_wal_fsync(False)
    template = EventTemplate(
        tenant_id=tid, source="kmip", actor='CN="svc" é', actor_role="mongo", client_address="10.0.0.1:5"
    )
    try:
        for n in range(3):
            sink.record_from(template, "Get", object_id=f"uid-{n}", request_id=f"r-{n}", sync=False)
            sink.record(template.event("Get", object_id=f"uid-{n}", request_id=f"r-{n}"), sync=False)
        sink.record_from(template, "Encrypt", result="failure", reason="bad IV", l2_version=0)
        sink.sync()
        lines = (sink.wal_dir / "events.wal").read_bytes().splitlines()
        assert len(lines) == 7
        records = [json.loads(line) for line in lines]
        for line, record in zip(lines, records, strict=True):
            assert canonical(record) == line  # each WAL line is the canonical encoding
        for fast, slow in zip(records[0:6:2], records[1:6:2], strict=True):
            differ = {k for k in fast if fast[k] != slow[k]}
            assert differ == {"event_id", "time"}, differ
        assert records[6]["result"] == "failure" and records[6]["reason"] == "bad IV"
        sink.flush()
    finally:
        sink.close()
    stored = [e for item in items(tid) for e in events_of(item)]
    mine = {r["event_id"] for r in records}
    assert [e for e in stored if e["event_id"] in mine] == records  # in order, as written
    audit.checkpoint_tenant(runtime, tid)
    result = audit.verify_tenant(runtime, tid)
    assert result["intact"] and result["records"] == len(stored), result
    rows = usage_counts(tid, date(2000, 1, 1), date(2100, 1, 1))
    usage = {(u["operation"], u["service"]): u["count"] for u in rows}
    assert usage == {("Get", "mongo"): 6}  # the failure is not usage


def test_record_from_fails_closed_past_the_bound(tmp_path: Path, aws_endpoint):
    sink = ChainedAuditSink(wal_dir=tmp_path / "wal", flush_interval=3600, max_pending=3)
    template = EventTemplate(tenant_id="t-bound", source="kmip")
    try:
        for n in range(3):
            sink.record_from(template, "Get", request_id=str(n), sync=False)
        with pytest.raises(AuditUnavailable):
            sink.record_from(template, "Get", request_id="3")
        assert sink.backlog() == 3
    finally:
        sink._pending.clear()  # nothing to store: the test tenant has no tables behind it
        sink.close()


def test_security_events_from_a_template_reach_the_listener(tmp_path: Path, aws_endpoint):
    seen = []
    sink = ChainedAuditSink(wal_dir=tmp_path / "wal", flush_interval=3600, on_security_event=seen.append)
    try:
        template = EventTemplate(tenant_id="t-sec", source="kmip", actor="CN=a")
        sink.record_from(template, "Get", result="denied", kind="security", reason="cross-tenant refusal")
        assert [e.reason for e in sink._security] == ["cross-tenant refusal"]
    finally:
        sink._pending.clear()
        sink._security.clear()
        sink.close()


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    digests=st.lists(st.one_of(st.text(max_size=70), st.just(hashlib.sha256(b"x").hexdigest())), max_size=6)
)
def test_link_hash_encodes_digests_as_the_canonical_encoder_does(digests):
    reference = hashlib.sha256(
        ("0" * 64).encode() + canonical({"tenant": 't"é', "writer": "w-1", "seq": 7, "digests": digests})
    ).hexdigest()
    assert link_hash("0" * 64, 't"é', "w-1", 7, digests) == reference


def test_links_wal_lines_round_trip_and_old_lines_still_read():
    events = [
        {"event_id": f"e{n}", "kind": "operation", "time": "2026-11-29T00:00:00+00:00"} for n in range(3)
    ]
    lines = [canonical(e) for e in events]
    digests = [hashlib.sha256(line).hexdigest() for line in lines]
    link = Link.build("t", "w-1", 1, "0" * 64, None, lines=lines, digests=digests)
    link.mac = "ab" * 32
    line = link.to_wal_bytes()
    assert b"event_id" not in line  # packed, not the events' JSON
    back = Link.from_wal(line)
    assert (back.hash, back.prev_hash, back.seq, back.mac, back.events, back.digests) == (
        link.hash,
        link.prev_hash,
        1,
        link.mac,
        events,
        digests,
    )
    assert back.packed() == link.packed()
    old = {k: getattr(link, k) for k in ("tenant_id", "writer", "seq", "prev_hash", "hash", "mac")}
    old.update(events=events, digests=digests)
    assert Link.from_wal(json.dumps(old).encode()).events == events
    for torn in [line[:-10], b'{"seq": 1}', b"[1]", line.replace(b'"events_z":"', b'"events_z":"!!')]:
        with pytest.raises((ValueError, TypeError, KeyError)):
            Link.from_wal(torn)


def _chunks_reference(entries, most, max_bytes):
    chunks, current, size = [], [], 0
    for entry in entries:
        cost = len(entry[1]) + 70
        if current and (len(current) >= most or size + cost > max_bytes):
            chunks.append(current)
            current, size = [], 0
        current.append(entry)
        size += cost
    if current:
        chunks.append(current)
    return chunks


@settings(max_examples=300, deadline=None)
@given(
    sizes=st.lists(st.integers(min_value=0, max_value=300), max_size=40),
    most=st.integers(min_value=1, max_value=12),
    max_bytes=st.integers(min_value=1, max_value=2000),
)
def test_links_are_cut_by_count_and_bytes(sizes, most, max_bytes):
    entries = [("t", b"x" * size) for size in sizes]
    assert _chunks(entries, most, max_bytes) == _chunks_reference(entries, most, max_bytes)


def test_system_clock_iso_time_is_datetime_isoformat():
    from datetime import UTC, datetime

    from openkcm.clock import SYSTEM_CLOCK

    before = datetime.now(UTC)
    text = SYSTEM_CLOCK.iso_now()
    after = datetime.now(UTC)
    parsed = datetime.fromisoformat(text)
    assert before <= parsed <= after
    assert text == parsed.isoformat(timespec="microseconds")


def test_replay_skips_a_damaged_record_and_keeps_the_others(tmp_path: Path, aws_endpoint):
    first = ChainedAuditSink(wal_dir=tmp_path / "wal", flush_interval=3600)
    template = EventTemplate(tenant_id="t-replay", source="kmip")
    first.record_from(template, "Get", request_id="kept", sync=True)
    slot = first.wal_dir
    first._events_wal.close()  # a crash: no flush, the WAL stays on disk
    first._events_wal = None
    os.close(first._lock_fd)
    first._lock_fd = None
    with open(slot / "events.wal", "ab") as handle:
        handle.write(b'{"event_id":"damaged","v":1}\n')  # parses, but is no record
    second = ChainedAuditSink(wal_dir=tmp_path / "wal", flush_interval=3600)
    try:
        assert second.wal_dir == slot
        assert [json.loads(entry[1])["request_id"] for entry in second._pending] == ["kept"]
        assert second.backlog() == 1
    finally:
        second._pending.clear()
        second.close()
