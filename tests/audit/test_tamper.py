"""Verification names the first deleted, altered, reordered or inserted record and a forged checkpoint.
The tests edit stored items directly with boto3, as an operator with write access to the table could."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from openkcm.domain.audit import ChainedAuditSink
from openkcm.ops import audit
from tests.audit.helpers import event, events_of, items, put, table, with_events


@pytest.fixture
def trail(runtime, tenant_factory, tmp_path: Path):
    """A tenant with 3 links of 10 events each from a batching writer, plus its creation record from the
    runtime's own writer, all covered by checkpoint 1."""
    tenant = tenant_factory()
    sink = ChainedAuditSink(
        wal_dir=tmp_path / "wal", batch_events=10, flush_interval=3600, authenticator=runtime.root
    )
    for n in range(30):
        sink.record(event(tenant.tenant_id, n), sync=False)
    sink.sync()
    sink.flush()
    sink.close()
    assert audit.checkpoint_tenant(runtime, tenant.tenant_id)["seq"] == 1
    links = sorted(
        (i for i in items(tenant.tenant_id) if i["writer"] == sink.writer_id), key=lambda i: i["sk"]
    )
    assert [int(i["event_count"]) for i in links] == [10, 10, 10]
    return tenant.tenant_id, links


def first_problem(runtime, tenant_id: str) -> dict:
    result = audit.verify_tenant(runtime, tenant_id)
    assert not result["intact"], result
    assert result["message"].startswith(result["problems"][0]["kind"])
    return result["problems"][0]


def test_intact_trail_says_records_and_checkpoint(runtime, trail):
    tenant_id, _ = trail
    result = audit.verify_tenant(runtime, tenant_id)
    assert result["intact"], result["problems"]
    assert result["message"] == "31 records, chain intact through checkpoint 1"
    assert result["writers"] == 2 and result["unconfirmed_records"] == 0


def test_deleted_link_is_named_missing(runtime, trail):
    tenant_id, links = trail
    table().delete_item(Key={"tenant_id": tenant_id, "sk": links[1]["sk"]})
    problem = first_problem(runtime, tenant_id)
    assert problem["kind"] == "missing" and problem["seq"] == 2 and problem["writer"] == links[1]["writer"]


def test_deleted_newest_link_is_caught_by_the_checkpoint(runtime, trail):
    tenant_id, links = trail
    table().delete_item(Key={"tenant_id": tenant_id, "sk": links[2]["sk"]})
    problem = first_problem(runtime, tenant_id)
    assert problem["kind"] == "missing" and problem["seq"] == 3 and problem["checkpoint"] == 1


def test_deleted_single_record_inside_a_link(runtime, trail):
    tenant_id, links = trail
    item = links[0]
    events = events_of(item)
    del events[4]
    put(with_events(item, events, event_count=9))
    problem = first_problem(runtime, tenant_id)
    assert problem["kind"] == "missing" and problem["seq"] == 1 and problem["position"] == 4


def test_modified_record_is_named_altered(runtime, trail):
    tenant_id, links = trail
    item = links[1]
    events = events_of(item)
    victim = events[3]
    events[3] = {**victim, "result": "denied", "reason": "edited"}
    put(with_events(item, events))
    problem = first_problem(runtime, tenant_id)
    assert problem["kind"] == "altered" and problem["event_id"] == victim["event_id"] and problem["seq"] == 2


def test_modified_record_with_recomputed_hashes_is_caught(runtime, trail):
    """A careful forger recomputes the digest and the link hash: the writer's MAC no longer matches (the
    MAC key is wrapped by the root key, which table access does not give)."""
    from openkcm.domain.audit import Link

    tenant_id, links = trail
    item = links[0]
    events = events_of(item)
    events[0] = {**events[0], "actor": "CN=somebody-else"}
    forged = Link.build(tenant_id, item["writer"], 1, item["prev_hash"], events)
    put(with_events(item, events, digests=forged.digests, hash=forged.hash))
    problem = first_problem(runtime, tenant_id)
    assert (problem["kind"], problem["seq"]) == ("altered", 1) and "MAC" in problem["message"]


def test_well_formed_forged_link_after_the_checkpoint_is_named_inserted(runtime, trail):
    """Table access is enough to compute hashes, not MACs: a forged link appended to a writer's chain
    after the last checkpoint is named, and the checkpointer refuses to sign over it."""
    from openkcm.domain.audit import ChainBroken, Link
    from openkcm.domain.audit.chain import link_sk

    tenant_id, links = trail
    last = links[2]
    events = [{**events_of(last)[0], "event_id": "e" * 32, "operation": "Destroy"}]
    forged = Link.build(tenant_id, last["writer"], 4, last["hash"], events)
    put(
        with_events(
            last,
            events,
            sk=link_sk(last["writer"], 4),
            seq=4,
            prev_hash=last["hash"],
            hash=forged.hash,
            digests=forged.digests,
            event_count=1,
        )
    )
    problem = first_problem(runtime, tenant_id)
    assert (problem["kind"], problem["seq"]) == ("inserted", 4)
    with pytest.raises(ChainBroken):
        audit.checkpoint_tenant(runtime, tenant_id)


def test_forged_writer_without_a_key_record_is_named_inserted(runtime, trail):
    from openkcm.domain.audit import Link
    from openkcm.domain.audit.chain import link_sk

    tenant_id, links = trail
    events = [{**events_of(links[0])[0], "event_id": "d" * 32}]
    forged = Link.build(tenant_id, "ghost-1-abcdef12", 1, "0" * 64, events)
    put(
        with_events(
            links[0],
            events,
            sk=link_sk("ghost-1-abcdef12", 1),
            writer="ghost-1-abcdef12",
            seq=1,
            prev_hash="0" * 64,
            hash=forged.hash,
            digests=forged.digests,
            event_count=1,
            mac="f" * 64,
        )
    )
    problem = first_problem(runtime, tenant_id)
    assert problem["kind"] == "inserted" and problem["writer"] == "ghost-1-abcdef12"


def test_reordered_records_inside_a_link(runtime, trail):
    tenant_id, links = trail
    item = links[2]
    events = events_of(item)
    events[5], events[6] = events[6], events[5]
    put(with_events(item, events))
    problem = first_problem(runtime, tenant_id)
    assert (
        problem["kind"] == "reordered"
        and problem["seq"] == 3
        and problem["event_id"] == events[5]["event_id"]
    )


def test_swapped_links_are_named_reordered(runtime, trail):
    tenant_id, links = trail
    first, second = links[0], links[1]
    put({**{k: v for k, v in second.items() if k != "sk"}, "sk": first["sk"]})
    put({**{k: v for k, v in first.items() if k != "sk"}, "sk": second["sk"]})
    problem = first_problem(runtime, tenant_id)
    assert problem["kind"] == "reordered" and problem["seq"] in (1, 2)
    result = audit.verify_tenant(runtime, tenant_id)
    assert {(p["kind"], p["seq"]) for p in result["problems"][:2]} == {("reordered", 1), ("reordered", 2)}


def test_inserted_record_is_named(runtime, trail):
    tenant_id, links = trail
    item = links[1]
    events = events_of(item)
    fake = {**events[2], "event_id": "f" * 32, "operation": "Destroy", "object_id": "obj-fake"}
    events.insert(3, fake)
    put(with_events(item, events, event_count=11))
    problem = first_problem(runtime, tenant_id)
    assert problem["kind"] == "inserted" and problem["event_id"] == "f" * 32


def test_inserted_item_off_the_chain_positions(runtime, trail):
    tenant_id, links = trail
    put({**links[0], "sk": links[0]["sk"] + "x"})
    problem = first_problem(runtime, tenant_id)
    assert problem["kind"] == "inserted"


def test_forged_checkpoint_edit_is_detected(runtime, trail):
    """The forger hides a deleted tail by editing the checkpoint's head: the signature no longer holds."""
    tenant_id, links = trail
    table().delete_item(Key={"tenant_id": tenant_id, "sk": links[2]["sk"]})
    (cp,) = items(tenant_id, "C#")
    body = json.loads(cp["body_json"])
    body["heads"][links[2]["writer"]] = [2, links[1]["hash"]]
    put({**cp, "body_json": json.dumps(body)})
    problem = first_problem(runtime, tenant_id)
    assert problem["kind"] == "forged_checkpoint" and problem["checkpoint"] == 1


def test_checkpoint_signed_with_another_key_is_forged(runtime, trail):
    import hashlib

    from openkcm.domain.audit.events import canonical

    tenant_id, _ = trail
    (cp,) = items(tenant_id, "C#")
    body = json.loads(cp["body_json"])
    body["events"] = 1
    digest = hashlib.sha256(canonical(body)).digest()
    signature = ec.generate_private_key(ec.SECP256R1()).sign(digest, ec.ECDSA(hashes.SHA256()))
    put({**cp, "body_json": json.dumps(body), "signature": base64.b64encode(signature).decode()})
    problem = first_problem(runtime, tenant_id)
    assert problem["kind"] == "forged_checkpoint"


def test_deleted_checkpoint_is_named(runtime, trail):
    tenant_id, _ = trail
    assert audit.checkpoint_tenant(runtime, tenant_id, force=True)["seq"] == 2
    table().delete_item(Key={"tenant_id": tenant_id, "sk": "C#000000000001"})
    problem = first_problem(runtime, tenant_id)
    assert problem["kind"] == "missing_checkpoint" and problem["checkpoint"] == 1


def test_checkpointer_refuses_to_sign_a_broken_chain(runtime, trail):
    from openkcm.domain.audit import ChainBroken

    tenant_id, _ = trail
    sink = ChainedAuditSink(authenticator=runtime.root)
    sink.record(event(tenant_id, 99))
    writer_items = [i for i in items(tenant_id) if i["writer"] == sink.writer_id]
    item = writer_items[0]
    events = events_of(item)
    events[0]["operation"] = "Destroy"
    put(with_events(item, events))
    with pytest.raises(ChainBroken):
        audit.checkpoint_tenant(runtime, tenant_id)


def test_tampered_heads_cache_makes_the_checkpointer_refuse(runtime, trail):
    """The unsigned heads cache only speeds up checkpointing; editing it cannot get anything signed."""
    from openkcm.domain.audit import ChainBroken

    tenant_id, _ = trail
    runtime.audit.record(event(tenant_id, 77))  # the runtime's writer moves past checkpoint 1
    (cache,) = items(tenant_id, "H#")
    body = json.loads(cache["body_json"])
    writer = runtime.audit.writer_id
    body["heads"][writer] = [body["heads"][writer][0], "0" * 64]
    put({**cache, "body_json": json.dumps(body)})
    with pytest.raises(ChainBroken):
        audit.checkpoint_tenant(runtime, tenant_id)
    assert audit.verify_tenant(runtime, tenant_id)["intact"]  # verification never reads the cache
