"""How the WAL-mode sink packs events into link items: compressed, sized under DynamoDB's item limit,
written only when a link is full or the oldest event has waited long enough, and replayable from a WAL
file that was moved aside while its events were being linked."""

from __future__ import annotations

import multiprocessing
import os
import time
from pathlib import Path

import pytest

from openkcm.domain.audit import ChainedAuditSink
from openkcm.domain.audit import sink as sink_module
from openkcm.domain.audit.events import new_event_id
from openkcm.ops import audit
from tests.audit.helpers import event, events_of, items


def _stored(tenant_id: str, writer: str) -> list[dict]:
    links = sorted((i for i in items(tenant_id) if i["writer"] == writer), key=lambda i: i["sk"])
    return [e for item in links for e in events_of(item)]


def test_items_stay_under_the_size_limit_when_events_barely_compress(
    runtime, tenant_factory, tmp_path, monkeypatch
):
    tenant = tenant_factory()
    monkeypatch.setattr(sink_module, "MAX_ITEM_BYTES", 1_500)
    sink = ChainedAuditSink(wal_dir=tmp_path / "wal", flush_interval=3600, authenticator=runtime.root)
    for n in range(40):  # a random 64-character reason per event: ~50 bytes that do not compress
        sink.record(event(tenant.tenant_id, n, reason=os.urandom(24).hex()[:47] + " x"), sync=False)
    sink.sync()
    sink.flush()
    sink.close()
    links = [i for i in items(tenant.tenant_id) if i["writer"] == sink.writer_id]
    assert len(links) > 1, "40 incompressible events cannot fit one 1,500-byte item"
    for item in links:
        assert len(bytes(item["events_z"])) + len(bytes(item["digests_bin"])) <= 1_500
    assert [e["object_id"] for e in _stored(tenant.tenant_id, sink.writer_id)] == [
        f"obj-{n}" for n in range(40)
    ]
    assert audit.verify_tenant(runtime, tenant.tenant_id)["intact"]


def test_one_item_packs_many_events_compressed(runtime, tenant_factory, tmp_path):
    tenant = tenant_factory()
    sink = ChainedAuditSink(wal_dir=tmp_path / "wal", flush_interval=3600, authenticator=runtime.root)
    for n in range(2000):
        sink.record(event(tenant.tenant_id, n), sync=False)
    sink.sync()
    sink.flush()
    sink.close()
    links = [i for i in items(tenant.tenant_id) if i["writer"] == sink.writer_id]
    assert len(links) == 1 and int(links[0]["event_count"]) == 2000
    raw = sum(len(str(e)) for e in events_of(links[0]))
    assert len(bytes(links[0]["events_z"])) * 5 < raw  # compressed well below the JSON it holds
    assert audit.verify_tenant(runtime, tenant.tenant_id)["intact"]


def test_links_wait_for_the_max_delay_then_are_written(runtime, tenant_factory, tmp_path):
    tenant = tenant_factory()
    sink = ChainedAuditSink(
        wal_dir=tmp_path / "wal", flush_interval=0.05, flush_max_delay=1.5, authenticator=runtime.root
    )
    try:
        started = time.monotonic()
        for n in range(3):
            sink.record(event(tenant.tenant_id, n))
        time.sleep(0.5)
        if time.monotonic() - started < 1.4:  # (a stalled box may have passed the delay already)
            assert sink.stats["stored_events"] == 0, "written before a full link or the max delay"
        deadline = time.monotonic() + 20
        while sink.stats["stored_events"] < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert sink.stats["stored_events"] == 3
    finally:
        sink.close()


def test_a_full_link_is_written_without_waiting(runtime, tenant_factory, tmp_path):
    tenant = tenant_factory()
    sink = ChainedAuditSink(
        wal_dir=tmp_path / "wal",
        batch_events=10,
        flush_interval=0.05,
        flush_max_delay=3600,
        authenticator=runtime.root,
    )
    try:
        for n in range(10):
            sink.record(event(tenant.tenant_id, n))
        deadline = time.monotonic() + 20
        while sink.stats["stored_events"] < 10 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert sink.stats["stored_events"] == 10
    finally:
        sink.close()


def test_events_in_a_retired_wal_file_are_replayed(runtime, tenant_factory, tmp_path: Path):
    """A process that died after moving its events file aside, before links.wal held them."""
    tenant = tenant_factory()
    wal = tmp_path / "wal"
    first = ChainedAuditSink(wal_dir=wal, flush_interval=3600, authenticator=runtime.root)
    ids = []
    for n in range(5):
        e = event(tenant.tenant_id, n)
        ids.append(e.event_id)
        first.record(e)
    with first._lock:
        first._retire_events_wal()
    for n in range(5, 8):
        e = event(tenant.tenant_id, n)
        ids.append(e.event_id)
        first.record(e)
    assert list(first.wal_dir.glob("events-retired-*.wal"))
    os.close(first._lock_fd)  # the process is gone: its slot is free, nothing was flushed
    first._lock_fd = None
    first._stop.set()

    second = ChainedAuditSink(wal_dir=wal, flush_interval=3600, authenticator=runtime.root)
    assert second.wal_dir == first.wal_dir and second.stats["replayed_events"] == 8
    assert not list(second.wal_dir.glob("events-retired-*.wal"))
    second.flush()
    second.close()
    assert [e["event_id"] for e in _stored(tenant.tenant_id, second.writer_id)] == ids


def _child_event_id(queue) -> None:
    queue.put(new_event_id())


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork only")
def test_forked_workers_draw_their_own_event_id_prefix():
    queue = multiprocessing.get_context("fork").Queue()
    process = multiprocessing.get_context("fork").Process(target=_child_event_id, args=(queue,))
    process.start()
    child = queue.get(timeout=30)
    process.join(30)
    mine = new_event_id()
    assert len(child) == len(mine) == 32
    assert child[:16] != mine[:16]


@pytest.mark.parametrize(
    "fields",
    [
        {},
        {"details": {"zeta": "1", "alpha": "ünïcödé", "mid": 'quote " and \\ backslash'}},
        {"reason": "naïve — text", "object_id": "ключ-1", "l2_version": 7, "l1_ref": "arn:aws:kms:x"},
    ],
)
def test_the_hot_path_encoding_is_the_canonical_one(fields):
    """The sink encodes records without sorting keys again; the digests verification recomputes use
    ``canonical``. Both must give the same bytes, or every chain would read as altered."""
    from openkcm.domain.audit.events import canonical, encode_record

    record = event("t-1", 1, **fields).to_record()
    record["time"] = "2026-11-29T12:00:00.000000+00:00"
    record["l1_ref"] = record["l1_ref"] or "root:v2"
    assert encode_record(record) == canonical(record)
    assert list(record) == sorted(record)


def test_fsync_mode_sync_covers_a_file_moved_aside_by_the_flusher(
    runtime, tenant_factory, tmp_path, monkeypatch
):
    """A record still buffered when the flusher moves the events file aside must be fsync'd by the next
    sync() (in the moved file), not only later with its link."""
    tenant = tenant_factory()
    sink = ChainedAuditSink(wal_dir=tmp_path / "wal", flush_interval=3600, authenticator=runtime.root)
    synced: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(sink_module.os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd))[1])
    try:
        sink.record(event(tenant.tenant_id, 1), sync=False)
        with sink._lock:
            sink._retire_events_wal()
        moved = sink._retired[-1][0].fileno()
        sink.sync()
        assert moved in synced, "the moved-aside file holding the record was not fsync'd"
    finally:
        sink.close()


def test_a_failed_links_wal_write_loses_nothing(runtime, tenant_factory, tmp_path, monkeypatch):
    tenant = tenant_factory()
    sink = ChainedAuditSink(wal_dir=tmp_path / "wal", flush_interval=3600, authenticator=runtime.root)
    ids = []
    for n in range(5):
        e = event(tenant.tenant_id, n)
        ids.append(e.event_id)
        sink.record(e)
    real = ChainedAuditSink._append_links

    def disk_full(self, links):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ChainedAuditSink, "_append_links", disk_full)
    with pytest.raises(OSError):
        sink.flush()
    assert sink.backlog() == 5 and list(sink.wal_dir.glob("events-retired-*.wal"))
    monkeypatch.setattr(ChainedAuditSink, "_append_links", real)
    sink.record(event(tenant.tenant_id, 5))
    sink.flush()
    sink.close()
    stored = _stored(tenant.tenant_id, sink.writer_id)
    assert [e["object_id"] for e in stored] == [f"obj-{n}" for n in range(6)]
    first = min(int(i["seq"]) for i in items(tenant.tenant_id) if i["writer"] == sink.writer_id)
    assert first == 1 and audit.verify_tenant(runtime, tenant.tenant_id)["intact"]


def test_links_in_the_earlier_json_format_still_read_and_verify(runtime, tenant_factory, tmp_path):
    """Trails written before the compressed item format (a local stack's data directory) stay readable."""
    import json

    from tests.audit.helpers import put

    tenant = tenant_factory()
    sink = ChainedAuditSink(wal_dir=tmp_path / "wal", flush_interval=3600, authenticator=runtime.root)
    for n in range(4):
        sink.record(event(tenant.tenant_id, n))
    sink.flush()
    sink.close()
    for item in [i for i in items(tenant.tenant_id) if i["writer"] == sink.writer_id]:
        events = events_of(item)
        legacy = {k: v for k, v in item.items() if k not in ("events_z", "digests_bin")}
        legacy["events_json"] = json.dumps(events)
        legacy["digests"] = [
            bytes(item["digests_bin"])[i : i + 32].hex() for i in range(0, len(events) * 32, 32)
        ]
        put(legacy)
    assert all("events_z" not in i for i in items(tenant.tenant_id) if i["writer"] == sink.writer_id)
    assert audit.verify_tenant(runtime, tenant.tenant_id)["intact"]
    from openkcm.domain.audit import read_events

    assert {f"obj-{n}" for n in range(4)} <= {e["object_id"] for e in read_events(tenant.tenant_id)}


def test_replay_keeps_one_copy_of_an_event_found_twice(runtime, tenant_factory, tmp_path: Path):
    """A crash during an earlier replay can leave an event both in the rewritten events.wal and in a
    moved-aside file that was not deleted yet: it is stored once."""
    tenant = tenant_factory()
    wal = tmp_path / "wal"
    first = ChainedAuditSink(wal_dir=wal, flush_interval=3600, authenticator=runtime.root)
    e = event(tenant.tenant_id, 1)
    first.record(e)
    slot = first.wal_dir
    line = (slot / "events.wal").read_bytes()
    (slot / "events-retired-000000000001.wal").write_bytes(line)  # the same event, twice on disk
    os.close(first._lock_fd)
    first._lock_fd = None
    first._stop.set()

    second = ChainedAuditSink(wal_dir=wal, flush_interval=3600, authenticator=runtime.root)
    assert second.stats["replayed_events"] == 1
    second.flush()
    second.close()
    assert [x["event_id"] for x in _stored(tenant.tenant_id, second.writer_id)] == [e.event_id]
