"""Crashes and retries around provisioning and crypto-shredding end in the state a single clean run gives:
a delivery that could not be queued can be delivered again, and a shred that died after its tombstone is
finished (audited, notified, marked) by the next scheduled run."""

from __future__ import annotations

import pytest

from openkcm.domain.audit import read_events
from openkcm.ops import provisioning, rotation
from openkcm.storage.models import ProvisioningModel, TombstoneModel

from .conftest import marketplace_event, signed

TENANT = "acme-corp-12345"


class Boom(RuntimeError):
    """Stands for a crash or an outage at a chosen point."""


def test_a_delivery_that_could_not_be_queued_is_accepted_when_the_marketplace_retries(rt, secret, clock):
    headers, raw = signed(secret, marketplace_event(), clock.timestamp())
    queued: list[dict] = []

    def enqueue(message: dict) -> None:
        if not queued:
            queued.append({})
            raise Boom("SQS throttled")
        queued.append(message)

    with pytest.raises(Boom):
        provisioning.accept_webhook(rt, headers, raw, enqueue)
    status, _ = provisioning.accept_webhook(rt, headers, raw, enqueue)
    assert status == 202 and len(queued) == 2
    status, reply = provisioning.accept_webhook(rt, headers, raw, enqueue)  # a real replay is still one
    assert status == 401 and reply["error"] == "unauthenticated"


def test_a_shred_that_died_after_its_tombstone_is_finished_by_the_next_run(rt, monkeypatch):
    provisioning.process_event(rt, marketplace_event())
    provisioning.delete_tenant(rt, TENANT, "acme-corp-12345", reason="x", retention_days=0)
    real_save = TombstoneModel.save
    crashed: list[int] = []

    def save_then_die(self, *args, **kwargs):
        saved = real_save(self, *args, **kwargs)
        if not crashed:
            crashed.append(1)
            raise Boom("killed after the tombstone")
        return saved

    monkeypatch.setattr(TombstoneModel, "save", save_then_die)
    first = rotation.run_schedule(rt)
    assert first.errors and not first.shredded
    second = rotation.run_schedule(rt)
    assert second.shredded == [TENANT]
    assert ProvisioningModel.get(TENANT, ProvisioningModel.SORT_KEY).shredded_at is not None
    assert rotation.shred_due(rt) == []
    operations = [e["operation"] for e in read_events(TENANT, since="2000-01-01T00:00:00+00:00")]
    assert operations.count("CryptoShred") == 1
    assert rotation.run_schedule(rt).shredded == []  # done: nothing left to retry


def test_two_deliveries_provisioning_one_tenant_at_once_leave_it_ready(rt):
    """Another event id for the same customer runs to the end while this one is between two steps."""
    from openkcm.storage import TenantModel

    interleaved: list[int] = []

    def other_delivery_runs(step: str) -> None:
        if step == "l2_key" and not interleaved:
            interleaved.append(1)
            provisioning.process_event(rt, marketplace_event(event_id="evt-A"))

    result = provisioning.process_event(
        rt, marketplace_event(event_id="evt-B"), before_step=other_delivery_runs
    )
    assert result["status"] == "Ready" and interleaved
    tenant = TenantModel.get(TENANT, TenantModel.SORT_KEY)
    assert tenant.status == "Ready" and int(tenant.current_l2_version) == 1
    failures = [e for e in read_events(TENANT, since="2000-01-01T00:00:00+00:00") if e["result"] != "success"]
    assert failures == []
    assert provisioning.process_event(rt, marketplace_event(event_id="evt-B"))["status"] == "Ready"


EARLIER, LATER = "2026-01-15T10:00:00Z", "2026-01-15T11:00:00Z"  # the fixtures' deletions: 10:30


def _status() -> str:
    from openkcm.storage import TenantModel

    return TenantModel.get(TENANT, TenantModel.SORT_KEY).status


def _fail_at(step_name: str):
    def hook(step: str) -> None:
        if step == step_name:
            raise Boom(f"died before {step}")

    return hook


def test_an_enable_from_before_the_unsubscribe_does_not_undo_it(rt):
    """The queue retries an enable that failed half way, after the customer unsubscribed."""
    enable = marketplace_event(event_id="evt-1", timestamp=EARLIER)
    with pytest.raises(Boom):
        provisioning.process_event(rt, enable, before_step=_fail_at("l2_key"))
    provisioning.process_event(rt, marketplace_event("service_disabled", event_id="evt-2"))
    assert _status() == "Deleted"
    assert provisioning.process_event(rt, enable)["status"] == "Deleted"  # stale: ignored
    assert _status() == "Deleted"
    assert ProvisioningModel.get(TENANT, ProvisioningModel.SORT_KEY).deleted_at is not None  # to be shredded


def test_a_new_enable_of_a_half_made_deleted_tenant_finishes_it_before_calling_it_ready(rt):
    from openkcm.storage.models import TrustEntryModel

    with pytest.raises(Boom):
        provisioning.process_event(rt, marketplace_event(timestamp=EARLIER), before_step=_fail_at("l2_key"))
    provisioning.process_event(rt, marketplace_event("service_disabled"))
    assert provisioning.process_event(rt, marketplace_event(timestamp=LATER))["status"] == "Ready"
    assert _status() == "Ready"
    assert rt.keyring.current(TENANT) is not None  # the L2 key the half-made tenant never had
    assert TrustEntryModel.get(TENANT, "TRUST") is not None


def test_an_unsubscribe_during_provisioning_wins(rt):
    enable = marketplace_event(event_id="evt-1")
    unsubscribed: list[int] = []

    def unsubscribe_before_ready(step: str) -> None:
        if step == "ready" and not unsubscribed:
            unsubscribed.append(1)
            provisioning.process_event(rt, marketplace_event("service_disabled", event_id="evt-2"))

    # Final, not a failure: the queue must not retry this enable into a restore (same-second times here).
    result = provisioning.process_event(rt, enable, before_step=unsubscribe_before_ready)
    assert result["status"] == "Deleted" and result["ignored"] == "deleted while it was provisioned"
    assert _status() == "Deleted"
    records = read_events(TENANT, since="2000-01-01T00:00:00+00:00")
    assert [e["operation"] for e in records if e["result"] != "success"] == []  # no provisioning failure
    assert "CreateTenant" not in [e["operation"] for e in records]


def test_a_restore_that_died_half_way_is_finished_by_the_next_delivery(rt, monkeypatch):
    provisioning.process_event(rt, marketplace_event(timestamp=EARLIER))
    provisioning.process_event(rt, marketplace_event("service_disabled"))
    real = provisioning._set_ready_unless_deleted
    died: list[int] = []

    def die_before_ready(runtime, tenant_id: str) -> bool:
        if not died:
            died.append(1)
            raise Boom("killed during the restore")
        return real(runtime, tenant_id)

    monkeypatch.setattr(provisioning, "_set_ready_unless_deleted", die_before_ready)
    resubscribe = marketplace_event(event_id="evt-resub", timestamp=LATER)
    with pytest.raises(Boom):
        provisioning.process_event(rt, resubscribe)
    assert provisioning.process_event(rt, resubscribe)["status"] == "Ready"  # the queue's retry
    assert _status() == "Ready"
    operations = [e["operation"] for e in read_events(TENANT, since="2000-01-01T00:00:00+00:00")]
    assert "RestoreTenant" in operations
    assert rotation.shred_due(rt) == []


# ---- a second review: ordering between marketplace events and the CMK API ---------------------------------
def test_a_late_unsubscribe_does_not_undo_a_later_enable(rt):
    provisioning.process_event(rt, marketplace_event(event_id="e1", timestamp=EARLIER))
    provisioning.process_event(rt, marketplace_event(event_id="e3", timestamp=LATER))
    result = provisioning.process_event(rt, marketplace_event("service_disabled", event_id="e2"))  # 10:30
    assert _status() == "Ready" and result["deleted"][0]["ignored"] == "the deletion predates an enable"


def test_an_api_delete_still_being_recorded_is_not_taken_for_a_restore(rt):
    """The API route sets Deleted before it records the deletion: in between, or if that write failed, an
    enable (here an old one) must not "finish a restore" that never began."""
    provisioning.process_event(rt, marketplace_event(event_id="e1", timestamp=EARLIER))
    rt.tenants.set_status(TENANT, "Deleted", "deleted through the API")
    provisioning.process_event(rt, marketplace_event(event_id="e0", timestamp="2020-01-01T00:00:00Z"))
    assert _status() == "Deleted"


def test_a_delete_during_a_restore_wins(rt, monkeypatch):
    provisioning.process_event(rt, marketplace_event(event_id="e1", timestamp=EARLIER))
    provisioning.process_event(rt, marketplace_event("service_disabled", event_id="e2"))
    real = rt.audit.record
    fired: list[int] = []

    def unsubscribe_again_after_the_restore_record(event, **kwargs):
        real(event, **kwargs)
        if event.operation == "RestoreTenant" and not fired:
            fired.append(1)
            provisioning.delete_tenant(rt, TENANT, TENANT, reason="service_disabled")

    monkeypatch.setattr(rt.audit, "record", unsubscribe_again_after_the_restore_record)
    provisioning.process_event(rt, marketplace_event(event_id="e3", timestamp=LATER))
    assert fired and _status() == "Deleted"
    assert ProvisioningModel.get(TENANT, ProvisioningModel.SORT_KEY).deleted_at is not None
    operations = [e["operation"] for e in read_events(TENANT, since="2000-01-01T00:00:00+00:00")]
    assert operations.count("DeleteTenant") == 2  # the second deletion is in the trail too


def test_an_api_delete_is_not_compared_with_the_marketplace_clock(rt, clock):
    from datetime import timedelta

    provisioning.process_event(rt, marketplace_event(event_id="e1", timestamp=EARLIER))
    provisioning.delete_tenant(rt, TENANT, TENANT, reason="deleted through the API")  # our clock only
    behind = (clock.now() - timedelta(seconds=30)).isoformat()  # the marketplace's clock runs behind
    assert (
        provisioning.process_event(rt, marketplace_event(event_id="e2", timestamp=behind))["status"]
        == "Ready"
    )
    assert _status() == "Ready"
