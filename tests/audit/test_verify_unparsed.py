"""Verification and checkpoints prove intact links from their stored bytes, without parsing a record
(parsing and re-encoding every record cost ~9 us each, and held every record of a trail in memory); a link
whose bytes do not prove out is parsed and compared record by record, so problems are still named."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from openkcm.domain.audit import ChainedAuditSink, chain
from openkcm.domain.audit.chain import records_match
from openkcm.domain.audit.events import canonical
from openkcm.ops import audit
from tests.audit.helpers import event, events_of, items, put, with_events

# Text a record may carry that contains the separator between records (and quotes, escaped in JSON).
AWKWARD = ['a},{"b', '},{"account_id":', '},{"', 'x"},{"y', "},{", '\\"},{\\"']


@pytest.fixture
def no_record_parsing(monkeypatch):
    """Any attempt to decode a stored link's records fails the test."""

    def refuse(blob):
        raise AssertionError("a stored link's records were parsed")

    monkeypatch.setattr(chain, "unpack_events", refuse)


def write_trail(runtime, tenant_id: str, tmp_path: Path, count: int = 30, **fields) -> ChainedAuditSink:
    sink = ChainedAuditSink(
        wal_dir=tmp_path / "wal", batch_events=10, flush_interval=3600, authenticator=runtime.root
    )
    for n in range(count):
        awkward = AWKWARD[n % len(AWKWARD)]
        sink.record(event(tenant_id, n, object_id=f"obj{awkward}{n}", reason=awkward, **fields), sync=False)
    sink.sync()
    sink.flush()
    sink.close()
    return sink


def test_intact_trail_verifies_and_checkpoints_without_parsing_a_record(
    runtime, tenant_factory, tmp_path, no_record_parsing
):
    tenant_id = tenant_factory().tenant_id
    write_trail(runtime, tenant_id, tmp_path)
    assert audit.checkpoint_tenant(runtime, tenant_id)["seq"] == 1
    result = audit.verify_tenant(runtime, tenant_id)
    assert result["intact"], result["problems"]
    assert result["message"] == "31 records, chain intact through checkpoint 1"


def test_an_altered_record_is_still_named_when_its_link_no_longer_proves_out(
    runtime, tenant_factory, tmp_path
):
    tenant_id = tenant_factory().tenant_id
    sink = write_trail(runtime, tenant_id, tmp_path)
    assert audit.checkpoint_tenant(runtime, tenant_id)["seq"] == 1
    link = sorted((i for i in items(tenant_id) if i["writer"] == sink.writer_id), key=lambda i: i["sk"])[1]
    records = events_of(link)
    victim = records[4]["event_id"]
    records[4]["object_id"] = "someone-else's-key"
    put(with_events(link, records))
    result = audit.verify_tenant(runtime, tenant_id)
    assert not result["intact"]
    problem = result["problems"][0]
    assert problem["kind"] == "altered" and problem["event_id"] == victim and problem["seq"] == 2


def test_the_checkpointer_refuses_an_altered_record_in_an_unparsed_trail(runtime, tenant_factory, tmp_path):
    from openkcm.domain.audit import ChainBroken

    tenant_id = tenant_factory().tenant_id
    sink = write_trail(runtime, tenant_id, tmp_path)
    link = min((i for i in items(tenant_id) if i["writer"] == sink.writer_id), key=lambda i: i["sk"])
    records = events_of(link)
    records[0]["result"] = "failure"
    put(with_events(link, records))
    with pytest.raises(ChainBroken):
        audit.checkpoint_tenant(runtime, tenant_id)


def _packed(records: list[dict]) -> tuple[bytes, bytes]:
    lines = [canonical(r) for r in records]
    return b"[" + b",".join(lines) + b"]", b"".join(hashlib.sha256(line).digest() for line in lines)


def test_records_match_only_the_exact_bytes_that_were_hashed():
    records = [
        event(
            "t-1", n, object_id=f"o{AWKWARD[n % len(AWKWARD)]}", reason=AWKWARD[n % len(AWKWARD)]
        ).to_record()
        for n in range(12)
    ]
    events_json, digests = _packed(records)
    assert records_match(events_json, digests)
    assert not records_match(events_json.replace(b"o", b"0", 1), digests)  # one byte
    assert not records_match(events_json, digests[:-32])  # a digest dropped
    assert not records_match(events_json, digests + digests[:32])  # a digest added
    assert not records_match(events_json, digests[32:64] + digests[:32] + digests[64:])  # reordered
    dropped, _ = _packed(records[:-1])
    assert not records_match(dropped, digests)  # a record dropped
    assert not records_match(b"", digests) and not records_match(events_json, b"")
    # The same records in another encoding (an earlier format, or an editor's): not proved, parsed instead.
    assert not records_match(json.dumps(records).encode(), digests)


# ---- found by review: index attributes, the cap on problems, archive copies, odd record times ----------
def _one_record_links(runtime, tenant_id: str, tmp_path: Path, count: int, **fields) -> list[dict]:
    sink = ChainedAuditSink(
        wal_dir=tmp_path / "wal", batch_events=1, flush_interval=3600, authenticator=runtime.root
    )
    for n in range(count):
        sink.record(event(tenant_id, n, **fields), sync=False)
        sink.sync()
        sink.flush()
    sink.close()
    return sorted((i for i in items(tenant_id) if i["writer"] == sink.writer_id), key=lambda i: i["sk"])


@pytest.mark.parametrize(
    "edit",
    [
        {"last_time": "0000"},  # not a time: the readers' filter drops the link
        {"first_time": "2020-01-01T00:00:00.000000+00:00"},  # far before its records: never in a page's range
        {"kinds": ["config"]},  # a kind filter would skip the link
    ],
)
def test_index_attributes_that_would_hide_records_are_named(runtime, tenant_factory, tmp_path, edit):
    """first_time, last_time and kinds are not hashed, but readers find (and skip) links by them."""
    from openkcm.domain.audit import ChainBroken

    tenant_id = tenant_factory().tenant_id
    links = _one_record_links(runtime, tenant_id, tmp_path, 5)
    assert audit.checkpoint_tenant(runtime, tenant_id)["seq"] == 1
    put({**links[2], **edit})
    result = audit.verify_tenant(runtime, tenant_id)
    assert not result["intact"]
    problem = result["problems"][0]
    assert problem["kind"] == "altered" and problem["seq"] == 3 and "audit log" in problem["message"]
    more = _one_record_links(runtime, tenant_id, tmp_path / "more", 2)
    put({**more[0], **edit})
    with pytest.raises(ChainBroken):
        audit.checkpoint_tenant(runtime, tenant_id)  # a new link that misstates itself is never signed


def test_a_forged_checkpoint_is_named_however_many_records_were_altered(runtime, tenant_factory, tmp_path):
    tenant_id = tenant_factory().tenant_id
    links = _one_record_links(runtime, tenant_id, tmp_path, 60)
    assert audit.checkpoint_tenant(runtime, tenant_id)["seq"] == 1
    for link in links[:55]:
        records = events_of(link)
        records[0]["object_id"] = "x"
        put(with_events(link, records))
    (checkpoint,) = items(tenant_id, "C#")
    body = json.loads(checkpoint["body_json"])
    body["heads"][links[0]["writer"]] = [1, links[0]["hash"]]
    put({**checkpoint, "body_json": json.dumps(body)})
    kinds = {p["kind"] for p in audit.verify_tenant(runtime, tenant_id)["problems"]}
    assert {"altered", "forged_checkpoint"} <= kinds


def test_an_archived_link_edited_the_same_way_in_both_copies_is_not_said_to_differ(runtime, tenant_factory):
    from datetime import timedelta

    from tests.audit.test_archive_kms_events import _write, tamper_archived_link

    tenant_id = tenant_factory().tenant_id
    _write(runtime, tenant_id, 6)
    audit.archive(runtime, tenant_id, before=runtime.clock.now() + timedelta(seconds=1))
    link = tamper_archived_link(runtime, tenant_id)
    live = next(
        i for i in items(tenant_id) if i.get("writer") == link["writer"] and int(i["seq"]) == link["seq"]
    )
    put(with_events(live, link["events"]))
    problems = audit.verify_tenant(runtime, tenant_id)["problems"]
    assert "altered" in {p["kind"] for p in problems}
    assert not any("differs from its archived copy" in p["message"] for p in problems)


def test_a_record_whose_time_is_not_text_does_not_break_verification(runtime, tenant_factory, tmp_path):
    tenant_id = tenant_factory().tenant_id
    links = _one_record_links(runtime, tenant_id, tmp_path, 3)
    for link, field, value in ((links[0], "time", 5), (links[1], "object_id", "x")):
        records = events_of(link)
        records[0][field] = value
        put(with_events(link, records))
    result = audit.verify_tenant(runtime, tenant_id)
    assert not result["intact"] and result["problems"][0]["kind"] == "altered"
