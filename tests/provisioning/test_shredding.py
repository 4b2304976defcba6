"""Deletion and crypto-shredding: a deleted tenant is refused at once; after the retention period every L2
version is destroyed, the tenant's objects can no longer be opened by anyone, the audit trail stays, and a
signed tombstone states the destroy time and when the last backup with wrapped material expires."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import pytest

from openkcm.errors import KeyUnavailable, TenantDisabled
from openkcm.ops import provisioning, rotation
from openkcm.ops.notifications import list_tenant_notifications
from openkcm.ops.runtime import build_runtime
from openkcm.storage import ManagedObjectModel, TenantKeyModel, TenantModel
from openkcm.storage.models import TombstoneModel

from .conftest import marketplace_event, seal_objects

DAY = 86400


def audit_operations(tenant_id: str) -> list[str]:
    from openkcm.domain.audit import read_events

    return [e["operation"] for e in read_events(tenant_id, since="2000-01-01T00:00:00+00:00")]


def test_deleted_tenant_is_shredded_after_retention(rt, clock):
    provisioning.process_event(rt, marketplace_event())
    tenant_id = "acme-corp-12345"
    materials = seal_objects(rt, tenant_id, 5)
    rotation.rotate_tenant(rt, tenant_id)  # two versions: both must go
    provisioning.process_event(rt, marketplace_event("tenant_deleted", tenant=tenant_id))
    assert TenantModel.get(tenant_id, "TENANT").status == "Deleted"
    with pytest.raises(TenantDisabled):
        rt.tenants.require_usable(tenant_id)

    clock.advance(6 * DAY)
    assert rotation.run_schedule(rt).shredded == []  # retention (7 days) not over: still recoverable
    assert all(r.state != "destroyed" for r in rt.keyring.records(tenant_id))

    clock.advance(1 * DAY + 1)
    report = rotation.run_schedule(rt)
    assert report.shredded == [tenant_id] and report.errors == []
    records = list(TenantKeyModel.query(tenant_id, TenantKeyModel.sk.startswith("L2#")))
    assert [(r.state, r.wrapped) for r in records] == [("destroyed", None), ("destroyed", None)]
    fresh = build_runtime(rt.settings, clock=rt.clock)  # nobody, not even a fresh process with the root key
    for item in ManagedObjectModel.of_tenant(tenant_id):
        assert item.wrapped is not None  # the blob is still stored ...
        with pytest.raises(KeyUnavailable):  # ... and can never be opened again
            fresh.keyring.open_object(tenant_id, item.object_id, int(item.l2_version), item.wrapped)
    fresh.close()
    assert len(materials) == 5

    stone = rotation.verify_tombstone(rt, tenant_id)
    assert stone["signature_valid"] and stone["l2_versions_destroyed"] == [1, 2]
    destroyed = datetime.fromisoformat(stone["destroyed_at"])
    expires = datetime.fromisoformat(stone["last_backup_with_wrapped_material_expires_at"])
    assert destroyed == clock.now() and expires - destroyed == timedelta(days=35)
    # The audit trail is kept, and says what happened.
    assert {"CreateTenant", "DeleteTenant", "CryptoShred"} <= set(audit_operations(tenant_id))
    assert "tenant_shredded" in [n["kind"] for n in list_tenant_notifications(tenant_id)]
    assert rotation.run_schedule(rt).shredded == []  # done once


def test_tampered_tombstone_fails_verification(rt, clock, monkeypatch):
    monkeypatch.setattr(rt.settings, "shred_retention_days", 0)  # 0 is allowed: shred on the next run
    provisioning.process_event(rt, marketplace_event())
    provisioning.process_event(rt, marketplace_event("service_disabled"))
    assert rotation.run_schedule(rt).shredded == ["acme-corp-12345"]
    stone = TombstoneModel.get("acme-corp-12345", "TOMBSTONE")
    statement = json.loads(stone.statement_json)
    statement["destroyed_at"] = "2030-01-01T00:00:00+00:00"
    stone.update(
        actions=[
            TombstoneModel.statement_json.set(json.dumps(statement, sort_keys=True, separators=(",", ":")))
        ]
    )
    assert rotation.verify_tombstone(rt, "acme-corp-12345")["signature_valid"] is False


def test_shredded_tenant_id_cannot_be_provisioned_again(rt, monkeypatch):
    monkeypatch.setattr(rt.settings, "shred_retention_days", 0)
    provisioning.process_event(rt, marketplace_event())
    provisioning.process_event(rt, marketplace_event("service_disabled"))
    rotation.run_schedule(rt)
    with pytest.raises(Exception) as info:
        provisioning.process_event(rt, marketplace_event())
    assert getattr(info.value, "code", "") == "already_exists"


def test_delete_with_explicit_retention_and_repeat_keeps_first_time(rt, clock):
    provisioning.process_event(rt, marketplace_event())
    first = provisioning.delete_tenant(
        rt, "acme-corp-12345", "acme-corp-12345", reason="api", retention_days=2
    )
    clock.advance(DAY)
    again = provisioning.delete_tenant(
        rt, "acme-corp-12345", "acme-corp-12345", reason="api", retention_days=0
    )
    assert again["shred_after"] == first["shred_after"]
    clock.advance(DAY + 1)
    assert rotation.run_schedule(rt).shredded == ["acme-corp-12345"]
    with pytest.raises(Exception) as info:  # another customer's tenant: indistinguishable from missing
        provisioning.delete_tenant(rt, "acme-corp-12345", "beta-corp-67890", reason="api")
    assert getattr(info.value, "http_status", 0) == 404


def test_a_restore_racing_the_shred_and_a_restore_after_it_are_refused(rt, monkeypatch):
    """A re-subscription between the shred's status check and the destruction of the keys must not hand
    back a Ready tenant whose keys are then destroyed; nor may a shredded tenant be 'restored'."""
    from openkcm.errors import WrongState
    from openkcm.storage.models import ProvisioningModel

    provisioning.process_event(rt, marketplace_event(customer="race-corp"))
    provisioning.delete_tenant(rt, "race-corp", "race-corp", reason="unsubscribed", retention_days=0)
    destroy_all = rt.keyring.destroy_all
    refused = []

    def resubscribe_first(tenant_id):
        try:
            provisioning._undelete(rt, ProvisioningModel.get(tenant_id, ProvisioningModel.SORT_KEY))
        except WrongState as exc:
            refused.append(exc.message)
        return destroy_all(tenant_id)

    monkeypatch.setattr(rt.keyring, "destroy_all", resubscribe_first)
    rotation.shred_tenant(rt, "race-corp")
    assert refused and "crypto-shredded" in refused[0]
    assert TenantModel.get("race-corp", "TENANT").status == "Deleted"
    monkeypatch.setattr(rt.keyring, "destroy_all", destroy_all)
    with pytest.raises(WrongState):
        provisioning._undelete(rt, ProvisioningModel.get("race-corp", ProvisioningModel.SORT_KEY))
    # and the other order: a restore that lands first makes the shred stand down, keys intact
    provisioning.process_event(rt, marketplace_event(customer="back-corp"))
    provisioning.delete_tenant(rt, "back-corp", "back-corp", reason="unsubscribed", retention_days=0)
    provisioning._undelete(rt, ProvisioningModel.get("back-corp", ProvisioningModel.SORT_KEY))
    with pytest.raises(Exception):  # noqa: B017 (not deleted any more, or restored meanwhile)
        rotation.shred_tenant(rt, "back-corp")
    assert all(r.state != "destroyed" for r in rt.keyring.records("back-corp"))
