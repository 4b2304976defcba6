"""The key hierarchy against real tables: L2 versions, sealing L3 material, rotation, caching, shredding."""

from __future__ import annotations

import os

import pytest

from openkcm.clock import ManualClock
from openkcm.domain.hierarchy import TenantKeyring, derive_l4, l2_context
from openkcm.domain.wrapping import WrappingKey
from openkcm.errors import IntegrityFailure, KeyUnavailable
from openkcm.storage import TenantKeyModel


def test_new_tenant_gets_a_wrapped_l2_version_one(runtime, tenant_factory):
    tenant = tenant_factory(tenant_id="tenant-a")
    assert tenant.status == "Ready" and tenant.current_l2_version == 1
    record = runtime.keyring.record("tenant-a", 1)
    assert record.parent_kind == "root" and record.parent_ref == "root:v1"
    key = runtime.keyring.current("tenant-a")
    assert len(key.material) == 32 and key.material not in record.wrapped
    assert runtime.keyring.create_first_version("tenant-a") == 1  # idempotent


def test_objects_survive_rotation_and_reseal_to_newest(runtime, tenant_factory):
    tenant_factory(tenant_id="tenant-a")
    material = os.urandom(32)
    v1, blob = runtime.keyring.seal_object("tenant-a", "obj-1", material)
    assert v1 == 1 and material not in blob
    assert runtime.keyring.rotate("tenant-a") == 2
    assert runtime.keyring.open_object("tenant-a", "obj-1", 1, blob) == material  # old data stays readable
    v2, blob2 = runtime.keyring.reseal_object("tenant-a", "obj-1", 1, blob)
    assert v2 == 2 and runtime.keyring.open_object("tenant-a", "obj-1", 2, blob2) == material
    with pytest.raises(IntegrityFailure):
        runtime.keyring.open_object("tenant-a", "obj-1", 1, blob2)  # opens only under the newest L2


def test_blob_moved_to_another_tenant_or_object_fails(runtime, tenant_factory):
    tenant_factory(tenant_id="tenant-a")
    tenant_factory(tenant_id="tenant-b")
    version, blob = runtime.keyring.seal_object("tenant-a", "obj-1", b"k" * 32)
    with pytest.raises(IntegrityFailure):
        runtime.keyring.open_object("tenant-a", "obj-2", version, blob)
    with pytest.raises(IntegrityFailure):
        runtime.keyring.open_object("tenant-b", "obj-1", version, blob)


def test_wrapped_l2_is_bound_to_tenant_and_version(runtime, tenant_factory):
    tenant_factory(tenant_id="tenant-a")
    record = runtime.keyring.record("tenant-a", 1)
    with pytest.raises(IntegrityFailure):
        runtime.root.unwrap(record.wrapped, l2_context("tenant-b", 1))
    with pytest.raises(IntegrityFailure):
        runtime.root.unwrap(record.wrapped, l2_context("tenant-a", 2))


def test_other_workers_see_rotation_within_the_epoch_poll(runtime, tenant_factory):
    tenant_factory(tenant_id="tenant-a")
    clock = ManualClock()
    worker = TenantKeyring(runtime.root, clock=clock, cache_ttl=60, epoch_poll=5)
    assert worker.current("tenant-a").version == 1
    runtime.keyring.rotate("tenant-a")  # another process rotates
    assert worker.current("tenant-a").version == 1  # cached until the next epoch poll
    clock.advance(5.1)
    assert worker.current("tenant-a").version == 2


class _Switchable(WrappingKey):
    """A parent whose backend can be taken away, as an unreachable keystore would be."""

    def __init__(self, inner: WrappingKey) -> None:
        self.inner, self.reachable = inner, True

    @property
    def ref(self) -> str:
        return "l1:switchable"

    def wrap(self, plaintext, context):
        return self.inner.wrap(plaintext, context)

    def unwrap(self, blob, context):
        if not self.reachable:
            raise KeyUnavailable("keystore unreachable")
        return self.inner.unwrap(blob, context)


def test_grace_period_then_fail_closed(runtime, tenant_factory):
    tenant_factory(tenant_id="tenant-a")
    parent = _Switchable(runtime.root)
    record = runtime.keyring.record("tenant-a", 1)
    record.update(actions=[TenantKeyModel.parent_kind.set("l1"), TenantKeyModel.parent_ref.set(parent.ref)])
    clock = ManualClock()
    worker = TenantKeyring(runtime.root, resolve_l1=lambda t, ref: parent, clock=clock, cache_ttl=60, grace=300)
    assert worker.current("tenant-a").version == 1
    parent.reachable = False
    clock.advance(200)  # past the cache TTL, inside the grace period
    assert worker.current("tenant-a").version == 1
    clock.advance(200)  # 400 s since the last unwrap: beyond TTL + grace
    with pytest.raises(KeyUnavailable):
        worker.current("tenant-a")
    parent.reachable = True
    assert worker.current("tenant-a").version == 1  # recovers when the store is back


def test_crypto_shredding_makes_objects_unrecoverable(runtime, tenant_factory):
    tenant_factory(tenant_id="tenant-a")
    version, blob = runtime.keyring.seal_object("tenant-a", "obj-1", b"k" * 32)
    runtime.keyring.rotate("tenant-a")
    assert sorted(runtime.keyring.destroy_all("tenant-a")) == [1, 2]
    for record in runtime.keyring.records("tenant-a"):
        assert record.state == "destroyed" and record.wrapped is None
    with pytest.raises(KeyUnavailable):
        runtime.keyring.open_object("tenant-a", "obj-1", version, blob)


def test_l4_derivation_is_deterministic_and_context_bound():
    l3 = os.urandom(32)
    assert derive_l4(l3, b"record-1") == derive_l4(l3, b"record-1")
    assert derive_l4(l3, b"record-1") != derive_l4(l3, b"record-2")
    assert len(derive_l4(l3, b"x", length=16)) == 16
