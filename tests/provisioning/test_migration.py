"""CSEK -> CMK migration (seed 002) under load: a provisioned, platform-managed tenant moves to its own L1
key (AWS KMS on moto) and back through the keystores' one change-parent operation
(``openkcm.ops.keystores.link_l1_key`` / ``return_to_platform``) while a serving keyring keeps opening and
sealing objects; a migration to a broken key rolls back and the tenant stays on its previous key. Not one
request fails and every object stays readable."""

from __future__ import annotations

import os
import threading
import time

import boto3
import pytest

from openkcm.errors import KeyUnavailable
from openkcm.ops import events, keystores, provisioning, rotation
from openkcm.ops.runtime import build_runtime
from openkcm.storage import ManagedObjectModel, TenantKeyModel, TenantModel

from .conftest import marketplace_event, seal_objects

ACCOUNT, TENANT = "acme-corp-12345", "acme-corp-12345"


class Load:
    """What the KMIP server does for the tenant: Get (open stored objects) and Create (seal new ones),
    through its own keyring subscribed to the in-process bus."""

    def __init__(self, rt, materials: dict[str, bytes], threads: int = 2) -> None:
        self.worker = build_runtime(rt.settings, clock=rt.clock)
        self._drop = events.subscribe_keyring(self.worker.keyring)
        self.materials = materials
        self.failures: list[str] = []
        self.counts = {"open": 0, "seal": 0}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(i,)) for i in range(threads)]

    def __enter__(self) -> Load:  # noqa: PYI034
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(10)
        self._drop()
        self.worker.close()

    def _run(self, seed: int) -> None:
        keyring, n = self.worker.keyring, 0
        while not self._stop.is_set():
            n += 1
            time.sleep(0.005)
            try:
                if n % 4 == 0 and self.counts["seal"] < 40:
                    object_id = f"{TENANT}.{seed:02d}{n:06d}" + "0" * 24
                    material = os.urandom(32)
                    version, blob = keyring.seal_object(TENANT, object_id, material)
                    now = self.worker.clock.now()
                    ManagedObjectModel(
                        TENANT,
                        object_id,
                        object_type="SYMMETRIC_KEY",
                        wrapped=blob,
                        l2_version=version,
                        created_at=now,
                        updated_at=now,
                    ).save()
                    with self._lock:
                        self.materials[object_id] = material
                    self.counts["seal"] += 1
                else:
                    with self._lock:
                        ids = list(self.materials)
                    object_id = ids[(n * 5 + seed) % len(ids)]
                    item = ManagedObjectModel.get(TENANT, object_id, consistent_read=True)
                    if (
                        keyring.open_object(TENANT, object_id, int(item.l2_version), item.wrapped)
                        != self.materials[object_id]
                    ):
                        self.failures.append(f"wrong material for {object_id}")
                    self.counts["open"] += 1
            except Exception as exc:  # noqa: BLE001 - every failed request counts
                self.failures.append(f"{type(exc).__name__}: {exc}")


def parents(tenant_id: str) -> set[tuple[str, str]]:
    return {
        (r.parent_kind, r.parent_ref)
        for r in TenantKeyModel.query(tenant_id, TenantKeyModel.sk.startswith("L2#"))
    }


def assert_all_readable(rt, materials: dict[str, bytes]) -> None:
    fresh = build_runtime(rt.settings, clock=rt.clock)
    try:
        for item in ManagedObjectModel.of_tenant(TENANT):
            assert (
                fresh.keyring.open_object(TENANT, item.object_id, int(item.l2_version), item.wrapped)
                == materials[item.object_id]
            )
    finally:
        fresh.close()


@pytest.fixture
def migrating(rt):
    provisioning.process_event(rt, marketplace_event())  # CSEK: platform-managed, Ready
    materials = seal_objects(rt, TENANT, 20)
    rotation.rotate_tenant(rt, TENANT)  # two retained versions: both must move (DECISIONS 3)
    materials |= seal_objects(rt, TENANT, 5)
    store = keystores.create_keystore(
        rt, ACCOUNT, "aws-kms", "acme KMS", {"region": "us-east-1"}, {}, "alice"
    )
    return materials, store


def test_csek_to_cmk_and_back_under_load_with_a_rollback(rt, migrating):
    materials, store = migrating
    kms = boto3.client("kms", region_name="us-east-1")
    good_key, broken_key = kms.create_key()["KeyMetadata"], kms.create_key()["KeyMetadata"]
    good, broken = good_key["Arn"], broken_key["Arn"]
    kms.disable_key(KeyId=broken_key["KeyId"])  # moto's DisableKey takes the key id
    progress: list[dict] = []

    with Load(rt, materials) as load:
        time.sleep(0.2)
        # Forth: platform-managed -> BYOK (the keystores' change-parent operation, under load).
        [result] = keystores.link_l1_key(
            rt, ACCOUNT, store.keystore_id, good, [TENANT], "alice", progress=progress.append
        )
        assert result["ok"] and result["versions_rewrapped"] == 2
        l1_ref = f"l1:{store.keystore_id}/{good}"
        assert parents(TENANT) == {("l1", l1_ref)}
        time.sleep(0.2)
        # Rollback: moving to a disabled key fails validation; the tenant stays on the key it had.
        [failed] = keystores.link_l1_key(
            rt, ACCOUNT, store.keystore_id, broken, [TENANT], "alice", progress=progress.append
        )
        assert not failed["ok"] and failed["error"]
        tenant = TenantModel.get(TENANT, "TENANT")
        assert (tenant.key_mode, tenant.l1_key_ref) == ("byok", l1_ref) and parents(TENANT) == {
            ("l1", l1_ref)
        }
        # Rotation keeps working under the customer's key; the root key rotation leaves BYOK tenants alone.
        version = rotation.rotate_tenant(rt, TENANT)
        assert rt.keyring.record(TENANT, version).parent_ref == l1_ref
        rotation.rewrap_tenant(rt, TENANT)
        assert rotation.rotate_root(rt)["l2_rewrapped"] == 0
        time.sleep(0.2)
        # Back: BYOK -> platform-managed.
        back = keystores.return_to_platform(rt, TENANT, "alice", progress=progress.append)
        assert back["ok"] and back["key_mode"] == "platform-managed"
        assert parents(TENANT) == {("root", rt.root.ref)}
        time.sleep(0.2)

    assert load.failures == [] and load.counts["open"] > 30 and load.counts["seal"] > 5
    phases = [p["phase"] for p in progress]
    assert (
        phases.count("done") == 2 and phases.count("rolled_back") == 1
    )  # the user sees progress and outcome
    assert rotation.rewrap_tenant(rt, TENANT).complete
    assert_all_readable(rt, materials)
    # After the way back, the customer's KMS key is no longer needed: disabling it changes nothing.
    kms.disable_key(KeyId=good_key["KeyId"])
    assert_all_readable(rt, materials)


def test_cmk_tenant_fails_closed_when_its_l1_key_is_gone_after_migration(rt, migrating, clock):
    _, store = migrating
    kms = boto3.client("kms", region_name="us-east-1")
    key = kms.create_key()["KeyMetadata"]
    [result] = keystores.link_l1_key(rt, ACCOUNT, store.keystore_id, key["Arn"], [TENANT], "alice")
    assert result["ok"]
    kms.disable_key(KeyId=key["KeyId"])
    fresh = build_runtime(rt.settings, clock=rt.clock)  # a process with nothing cached
    item = next(iter(ManagedObjectModel.of_tenant(TENANT)))
    with pytest.raises(KeyUnavailable):  # fails closed: every retained version moved to L1
        fresh.keyring.open_object(TENANT, item.object_id, int(item.l2_version), item.wrapped)
    fresh.close()
