"""Scheduled rotation: due tenants get a new L2 version and a key_rotation event; objects are re-wrapped to
the newest version in bounded, resumable batches (a crash midway loses nothing); old versions retire but
stay unwrappable; the root key rotates with every platform-managed L2 version re-wrapped under it; and
requests keep succeeding throughout."""

from __future__ import annotations

import json
import os
import threading
import time

import boto3
import pytest

from functions.rotate import handler as rotate_handler
from openkcm.domain.envelope import open_sealed
from openkcm.domain.hierarchy import object_binding
from openkcm.errors import IntegrityFailure
from openkcm.ops import events, rotation
from openkcm.ops.runtime import build_runtime
from openkcm.storage import ManagedObjectModel, TenantKeyModel

from .conftest import seal_objects

DAY = 86400


@pytest.fixture
def tenant(rt):
    from openkcm.ops.tenants import create_platform_tenant

    return create_platform_tenant(rt, "acme-corp-12345", tenant_id="tenant-a", actor="test", source="cli")


def stored_objects(tenant_id: str) -> list[ManagedObjectModel]:
    return list(ManagedObjectModel.of_tenant(tenant_id))


def assert_each_blob_opens_only_under_newest(rt, tenant_id: str, materials: dict[str, bytes]) -> None:
    """DECISIONS 19: after the re-wrap, a scan of the stored blobs shows each opens only under the newest
    L2 version (and yields the original material)."""
    newest = int(rt.tenants.get(tenant_id).current_l2_version)
    keys = {v: rt.keyring.version(tenant_id, v).material for v in range(1, newest + 1)}
    for item in stored_objects(tenant_id):
        assert item.l2_version == newest
        for version, key in keys.items():
            aad = object_binding(tenant_id, item.object_id, version)
            if version == newest:
                assert open_sealed(key, item.wrapped, aad) == materials[item.object_id]
            else:
                with pytest.raises(IntegrityFailure):
                    open_sealed(key, item.wrapped, aad)


def test_due_tenant_is_rotated_rewrapped_and_old_version_retired(rt, clock, tenant):
    materials = seal_objects(rt, "tenant-a", 25)
    report = rotation.run_schedule(rt)
    assert report.rotated == [] and report.errors == []  # 0 days old: not due
    clock.advance(91 * DAY)
    report = rotation.run_schedule(rt, batch_size=7)
    assert report.rotated == ["tenant-a"] and report.rewrapped == {"tenant-a": 25}
    assert report.retired == {"tenant-a": [1]} and report.errors == []
    assert_each_blob_opens_only_under_newest(rt, "tenant-a", materials)
    old = rt.keyring.record("tenant-a", 1)
    assert old.state == "retired" and old.wrapped  # kept, still unwrappable
    assert len(rt.keyring.version("tenant-a", 1).material) == 32
    assert rotation.run_schedule(rt).rotated == []  # the new version is fresh


def test_key_rotation_event_reaches_eventbridge_and_the_in_process_bus(rt, tenant):
    sqs, bridge = boto3.client("sqs"), boto3.client("events")
    url = sqs.create_queue(QueueName=f"{rt.settings.table_prefix}-events")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    bridge.put_rule(
        Name="rotations",
        EventBusName=rt.settings.event_bus_name,
        EventPattern=json.dumps({"source": ["openkcm"], "detail-type": ["key_rotation"]}),
    )
    bridge.put_targets(
        Rule="rotations", EventBusName=rt.settings.event_bus_name, Targets=[{"Id": "q", "Arn": arn}]
    )
    seen = []
    unsubscribe = events.LOCAL_BUS.subscribe(seen.append)
    worker = build_runtime(rt.settings, clock=rt.clock)  # another "KMIP worker" with its own cache
    drop = events.subscribe_keyring(worker.keyring)
    try:
        before = worker.keyring.current("tenant-a").version
        rotation.rotate_tenant(rt, "tenant-a")
        assert worker.keyring.current("tenant-a").version == before + 1  # dropped at once, no 5 s wait
    finally:
        unsubscribe()
        drop()
        worker.close()
    assert [(e.type, e.tenant_id) for e in seen] == [("key_rotation", "tenant-a")]
    message = sqs.receive_message(QueueUrl=url, WaitTimeSeconds=2)["Messages"][0]
    detail = json.loads(message["Body"])["detail"]
    assert detail["event"] == "key_rotation" and detail["tenant_id"] == "tenant-a"
    assert detail["level"] == "L2_internal" and detail["effective_time"].endswith("Z")
    assert events.publisher(rt).failures == 0


class Crash(RuntimeError):
    pass


def test_crash_midway_through_rewrap_then_next_run_completes(rt, clock, tenant):
    materials = seal_objects(rt, "tenant-a", 30)
    rotation.rotate_tenant(rt, "tenant-a")
    written = []

    def crash_after_eleven(object_id: str) -> None:
        written.append(object_id)
        if len(written) == 11:
            raise Crash()

    with pytest.raises(Crash):
        rotation.rewrap_tenant(rt, "tenant-a", batch_size=4, after_write=crash_after_eleven)
    versions = sorted(int(i.l2_version) for i in stored_objects("tenant-a"))
    assert versions == [1] * 19 + [2] * 11
    # Mid-way, every object still opens (old ones under the kept version 1).
    fresh = build_runtime(rt.settings, clock=rt.clock)
    for item in stored_objects("tenant-a"):
        assert (
            fresh.keyring.open_object("tenant-a", item.object_id, int(item.l2_version), item.wrapped)
            == materials[item.object_id]
        )
    fresh.close()
    assert rt.keyring.record("tenant-a", 1).state == "active"  # not retired while referenced
    report = rotation.run_schedule(rt, batch_size=4)  # the next scheduled run continues
    assert report.rewrapped == {"tenant-a": 19} and report.retired == {"tenant-a": [1]}
    assert_each_blob_opens_only_under_newest(rt, "tenant-a", materials)


def test_rewrap_is_bounded_per_run(rt, tenant):
    seal_objects(rt, "tenant-a", 12)
    rotation.rotate_tenant(rt, "tenant-a")
    first = rotation.rewrap_tenant(rt, "tenant-a", batch_size=5, max_batches=1)
    assert (first.moved, first.complete) == (5, False)
    second = rotation.rewrap_tenant(rt, "tenant-a", batch_size=5)
    assert (second.moved, second.complete) == (7, True)


def test_root_rotation_rewraps_every_platform_managed_l2(rt, clock, tenant):
    from openkcm.ops.tenants import create_platform_tenant

    create_platform_tenant(rt, "beta-corp-67890", tenant_id="tenant-b", actor="test")
    materials = seal_objects(rt, "tenant-a", 5)
    rotation.rotate_tenant(rt, "tenant-a")  # two versions to move for tenant-a
    result = rotation.rotate_root(rt)
    assert result == {"root_version": 2, "l2_rewrapped": 3}
    for tenant_id in ("tenant-a", "tenant-b"):
        for record in TenantKeyModel.query(tenant_id, TenantKeyModel.sk.startswith("L2#")):
            assert record.parent_ref == "root:v2" and rt.root.blob_version(record.wrapped) == 2
    # Proof that nothing needs root v1 any more: remove it and read everything in a fresh process.
    os.remove(rt.settings.data_dir / "keys" / "root-key-v0001.bin")
    fresh = build_runtime(rt.settings, clock=rt.clock)
    for item in stored_objects("tenant-a"):
        assert (
            fresh.keyring.open_object("tenant-a", item.object_id, int(item.l2_version), item.wrapped)
            == materials[item.object_id]
        )
    fresh.close()
    assert rotation.run_schedule(rt).root_rewrapped == 0  # nothing left


def test_rotation_lambda_handler_runs_the_schedule_and_root_action(rt, clock, tenant, monkeypatch):
    seal_objects(rt, "tenant-a", 3)
    clock.advance(100 * DAY)
    reply = rotate_handler.handler(
        {"source": "aws.events", "detail-type": "Scheduled Event", "detail": {}}, None, runtime=rt
    )
    assert reply["rotated"] == ["tenant-a"] and reply["rewrapped"] == {"tenant-a": 3}
    reply = rotate_handler.handler({"detail": {"action": "rotate-root"}}, None, runtime=rt)
    assert reply["root"]["root_version"] == 2


def test_zero_failed_requests_while_rotating_and_rewrapping(rt, clock, tenant):
    """Domain-level load: threads keep sealing new objects and opening stored ones (what KMIP Create and
    Get do) while the tenant is rotated three times and re-wrapped; not one request may fail."""
    materials = seal_objects(rt, "tenant-a", 30)
    lock = threading.Lock()
    stop = threading.Event()
    failures: list[str] = []
    counts = {"open": 0, "seal": 0}
    worker = build_runtime(rt.settings, clock=rt.clock)  # the serving process, with its own cache
    drop = events.subscribe_keyring(worker.keyring)

    def load(seed: int) -> None:
        n = 0
        while not stop.is_set():
            n += 1
            time.sleep(0.005)  # bounded load: the machine is shared
            try:
                if n % 3 == 0 and counts["seal"] < 60:
                    object_id = f"tenant-a.{seed:02d}{n:08d}" + "0" * 22
                    material = os.urandom(32)
                    version, blob = worker.keyring.seal_object("tenant-a", object_id, material)
                    now = worker.clock.now()
                    ManagedObjectModel(
                        "tenant-a",
                        object_id,
                        object_type="SYMMETRIC_KEY",
                        wrapped=blob,
                        l2_version=version,
                        created_at=now,
                        updated_at=now,
                    ).save()
                    with lock:
                        materials[object_id] = material
                    counts["seal"] += 1
                else:
                    with lock:
                        object_id = list(materials)[(n * 7 + seed) % len(materials)]
                    item = ManagedObjectModel.get("tenant-a", object_id, consistent_read=True)
                    got = worker.keyring.open_object(
                        "tenant-a", object_id, int(item.l2_version), item.wrapped
                    )
                    if got != materials[object_id]:
                        failures.append(f"wrong material for {object_id}")
                    counts["open"] += 1
            except Exception as exc:  # noqa: BLE001 - any failure of a "request" counts
                failures.append(f"{type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=load, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    try:
        for _ in range(3):
            time.sleep(0.3)
            rotation.rotate_tenant(rt, "tenant-a")
            rotation.rewrap_tenant(rt, "tenant-a", batch_size=10)
        time.sleep(0.3)
    finally:
        stop.set()
        for t in threads:
            t.join(10)
        drop()
        worker.close()
    assert failures == [] and counts["open"] > 50 and counts["seal"] >= 20
    result = rotation.rewrap_tenant(rt, "tenant-a")  # objects sealed during the last rotation
    assert result.complete
    assert_each_blob_opens_only_under_newest(rt, "tenant-a", materials)
