"""A KMIP state change racing a rotation's re-wrap of the same object succeeds (the writes commute);
a race with a real change of state or attributes is still refused."""

from __future__ import annotations

import pytest

from openkcm.domain.objects import ObjectStore
from openkcm.errors import ConcurrentUpdate
from openkcm.ops import rotation


def test_activate_after_a_concurrent_rewrap_succeeds(runtime, tenant_factory):
    tenant_factory(tenant_id="tenant-a")
    store = ObjectStore(runtime.keyring)
    created = store.create("tenant-a", object_type="SYMMETRIC_KEY", material=b"k" * 32, attributes={})
    stale = store.get("tenant-a", created.object_id)
    runtime.keyring.rotate("tenant-a")
    rotation.rewrap_tenant(runtime, "tenant-a")  # bumps the item's version, moves only the material
    activated = store.update(stale, state="ACTIVE")
    assert activated.state == "ACTIVE" and activated.l2_version == 2
    fresh = ObjectStore(runtime.keyring).get("tenant-a", created.object_id)
    assert fresh.state == "ACTIVE" and fresh.l2_version == 2
    assert ObjectStore(runtime.keyring).material(fresh) == b"k" * 32


def test_a_real_conflict_is_still_refused(runtime, tenant_factory):
    tenant_factory(tenant_id="tenant-a")
    store = ObjectStore(runtime.keyring)
    created = store.create("tenant-a", object_type="SYMMETRIC_KEY", material=b"k" * 32, attributes={})
    stale = store.get("tenant-a", created.object_id)
    ObjectStore(runtime.keyring).update(stale, attributes={"Name": ["changed elsewhere"]})
    with pytest.raises(ConcurrentUpdate):
        store.update(stale, state="ACTIVE")
