"""Storage on moto: round trips, lost-update protection, tenant-scoped queries."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from openkcm.domain.tenants import Tenants
from openkcm.errors import AlreadyExists, ConcurrentUpdate, InvalidRequest, NotFound
from openkcm.storage import ConditionFailed, ManagedObjectModel, TenantModel
from openkcm.storage.models import condition_guard

NOW = datetime(2026, 1, 15, tzinfo=UTC)


def _object(tenant_id: str, object_id: str, name: str) -> ManagedObjectModel:
    return ManagedObjectModel(
        tenant_id, object_id, object_type="SYMMETRIC_KEY", wrapped=b"\x01" + b"w" * 40, names=[name],
        attributes_json='{"Cryptographic Length": 256}', created_at=NOW, updated_at=NOW,
    )


def test_tenant_round_trip_and_account_listing(runtime):
    tenants = runtime.tenants
    a = tenants.create("acme-corp-12345", name="ACME prod", region="eu-west-1", tenant_id="acme-prod")
    tenants.create("acme-corp-12345", tenant_id="acme-dev")
    tenants.create("other-corp", tenant_id="other-prod")
    got = tenants.get("acme-prod")
    assert (got.account_id, got.name, got.region, got.status) == ("acme-corp-12345", "ACME prod", "eu-west-1", "Provisioning")
    assert got.created_at == a.created_at
    assert sorted(t.tenant_id for t in tenants.list_for_account("acme-corp-12345")) == ["acme-dev", "acme-prod"]
    with pytest.raises(AlreadyExists):
        tenants.create("acme-corp-12345", tenant_id="acme-prod")
    with pytest.raises(NotFound):
        tenants.get_in_account("other-corp", "acme-prod")  # another account's tenant looks missing
    with pytest.raises(InvalidRequest):
        tenants.create("acme-corp-12345", tenant_id="Bad_ID")


def test_concurrent_update_is_detected_not_lost(runtime):
    runtime.tenants.create("acme", tenant_id="tenant-a")
    first = TenantModel.get("tenant-a", "TENANT")
    second = TenantModel.get("tenant-a", "TENANT")
    first.name = "renamed by first"
    first.save()
    second.name = "renamed by second"
    with pytest.raises(ConditionFailed), condition_guard():
        second.save()
    assert TenantModel.get("tenant-a", "TENANT").name == "renamed by first"


def test_set_status_reports_conflict_as_domain_error(runtime, monkeypatch):
    runtime.tenants.create("acme", tenant_id="tenant-a")
    stale = TenantModel.get("tenant-a", "TENANT")
    runtime.tenants.set_status("tenant-a", "Ready")
    monkeypatch.setattr(Tenants, "get", lambda self, tenant_id: stale)
    with pytest.raises(ConcurrentUpdate):
        runtime.tenants.set_status("tenant-a", "Disabled")


def test_epoch_bumps_are_never_lost_under_contention(runtime):
    import threading

    runtime.tenants.create("acme", tenant_id="tenant-a")
    threads = [threading.Thread(target=runtime.tenants.bump_epoch, args=("tenant-a", 50)) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert TenantModel.get("tenant-a", "TENANT").epoch == 6


def test_a_query_for_tenant_a_never_returns_an_item_of_b(runtime):
    for tenant in ("tenant-a", "tenant-b"):
        for i in range(3):
            _object(tenant, f"{i}", name="shared-name").save()
    items = list(ManagedObjectModel.query("tenant-a"))
    assert len(items) == 3 and {i.tenant_id for i in items} == {"tenant-a"}
    named = list(ManagedObjectModel.query("tenant-a", filter_condition=ManagedObjectModel.names.contains("shared-name")))
    assert {i.tenant_id for i in named} == {"tenant-a"}
    # the same object id under another tenant is another item
    assert ManagedObjectModel.get("tenant-b", "1").tenant_id == "tenant-b"
    with pytest.raises(ManagedObjectModel.DoesNotExist):
        ManagedObjectModel.get("tenant-a", "99")


def test_binary_material_round_trips_exactly(runtime):
    blob = bytes(range(256))
    item = _object("tenant-a", "obj", "n")
    item.wrapped = blob
    item.save()
    assert ManagedObjectModel.get("tenant-a", "obj").wrapped == blob
