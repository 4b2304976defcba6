"""Failures injected at every provisioning step (before its effect, and after its effect but before it was
recorded) followed by a retry: the tenant ends Ready and consistent, never half made, and its status
showed Failed with the reason and the attempt count in between."""

from __future__ import annotations

import os

import pytest

from openkcm.ops import provisioning
from openkcm.ops.notifications import list_tenant_notifications
from openkcm.storage import TenantKeyModel, TenantModel
from openkcm.storage.models import TrustEntryModel

from .conftest import marketplace_event


class Injected(RuntimeError):
    pass


def fail_at(step: str):
    def hook(current: str) -> None:
        if current == step:
            raise Injected(step)

    return hook


def assert_consistent(rt, tenant_id: str) -> None:
    tenant = TenantModel.get(tenant_id, "TENANT")
    assert tenant.status == "Ready" and tenant.status_reason is None
    assert tenant.current_l2_version == 1 and tenant.rotation_period_days == 90
    versions = list(TenantKeyModel.query(tenant_id, TenantKeyModel.sk.startswith("L2#")))
    assert [(v.l2_version, v.parent_kind, v.state) for v in versions] == [(1, "root", "active")]
    trust = TrustEntryModel.get(tenant_id, "TRUST")
    assert trust.spiffe_prefix == f"spiffe://{rt.settings.trust_domain}/tenant/{tenant_id}/service/"
    status = provisioning.provisioning_status(tenant_id)
    assert status["steps_done"] == sorted(provisioning.PROVISION_STEPS) and status["last_error"] is None
    material = os.urandom(32)
    version, blob = rt.keyring.seal_object(tenant_id, f"{tenant_id}.x", material)
    assert rt.keyring.open_object(tenant_id, f"{tenant_id}.x", version, blob) == material
    kinds = [n["kind"] for n in list_tenant_notifications(tenant_id)]
    assert kinds.count("provisioning_ready") == 1


@pytest.mark.parametrize("step", provisioning.PROVISION_STEPS)
def test_failure_before_each_step_then_retry(rt, step):
    event = marketplace_event(event_id=f"evt-before-{step}")
    with pytest.raises(Injected):
        provisioning.process_event(rt, event, before_step=fail_at(step))
    status = provisioning.provisioning_status("acme-corp-12345")
    assert status["status"] == "Failed" and status["attempts"] == 1
    assert f"step {step} failed" in status["reason"] and "attempt 1" in status["reason"]
    if step != "record":  # before the record exists, the PROVISION item is where the status lives
        assert TenantModel.get("acme-corp-12345", "TENANT").status == "Failed"
    # The queue retries the same event id: the failed attempt left no idempotency record behind.
    result = provisioning.process_event(rt, event)
    assert result == {"tenant_id": "acme-corp-12345", "status": "Ready", "attempts": 2, "resumed": True}
    assert provisioning.provisioning_status("acme-corp-12345")["retries"] == 1
    assert_consistent(rt, "acme-corp-12345")
    assert "provisioning_failed" in [n["kind"] for n in list_tenant_notifications("acme-corp-12345")]


@pytest.mark.parametrize("step", provisioning.PROVISION_STEPS)
def test_crash_after_each_step_before_it_was_recorded_then_retry(rt, step):
    event = marketplace_event(event_id=f"evt-after-{step}")
    with pytest.raises(Injected):
        provisioning.process_event(rt, event, after_step=fail_at(step))
    provisioning.process_event(rt, event)
    assert_consistent(rt, "acme-corp-12345")


def test_local_queue_retries_with_backoff_until_ready(rt):
    calls = []

    def flaky(runtime, message):
        calls.append(1)
        hook = fail_at("l2_key") if len(calls) < 3 else None
        return provisioning.process_event(runtime, message, before_step=hook)

    queue = provisioning.LocalProvisioningQueue(rt, base_delay=0.05, worker=flaky)
    try:
        queue.put(marketplace_event(customer="omega-1"))
        assert queue.wait_idle(20)
    finally:
        queue.stop()
    assert len(calls) == 3 and not queue.dead_letters
    assert provisioning.provisioning_status("omega-1")["attempts"] == 3
    assert_consistent(rt, "omega-1")


def test_poison_message_is_dead_lettered(rt):
    queue = provisioning.LocalProvisioningQueue(
        rt, base_delay=0.01, max_attempts=3, worker=lambda r, m: (_ for _ in ()).throw(Injected("x"))
    )
    try:
        queue.put(marketplace_event(customer="omega-2"))
        assert queue.wait_idle(20)
    finally:
        queue.stop()
    assert len(queue.dead_letters) == 1


def test_service_disabled_then_enabled_within_retention_restores(rt):
    provisioning.process_event(rt, marketplace_event())
    provisioning.process_event(rt, marketplace_event("service_disabled"))
    assert TenantModel.get("acme-corp-12345", "TENANT").status == "Deleted"
    provisioning.process_event(rt, marketplace_event())
    assert TenantModel.get("acme-corp-12345", "TENANT").status == "Ready"
    assert provisioning.provisioning_status("acme-corp-12345")["status"] == "Ready"


class Killed(BaseException):
    """Stands for SIGKILL: nothing of ours (nor Powertools) gets to clean up."""


def test_worker_killed_midway_is_resumed_once_its_in_progress_record_expires(rt):
    import time

    from aws_lambda_powertools.utilities.idempotency.exceptions import IdempotencyAlreadyInProgressError

    event = marketplace_event(event_id="evt-killed")

    def kill_after_trust(step: str) -> None:
        if step == "trust_domain":
            raise Killed()

    budget = 5.0  # generous, so a loaded CI box still tries the duplicate inside the budget
    started = time.monotonic()
    with pytest.raises(Killed):
        provisioning.process_event(
            rt, event, context=provisioning._WorkerContext(budget_seconds=budget), after_step=kill_after_trust
        )
    assert TenantModel.get("acme-corp-12345", "TENANT").status == "Provisioning"  # shows where it stopped
    with pytest.raises(IdempotencyAlreadyInProgressError):  # a duplicate while the worker "still runs"
        provisioning.process_event(rt, event)
    # the dead worker's in-progress record expires with its (Lambda) time budget
    time.sleep(max(0.0, started + budget + 0.3 - time.monotonic()))
    assert provisioning.process_event(rt, event)["status"] == "Ready"
    assert_consistent(rt, "acme-corp-12345")
