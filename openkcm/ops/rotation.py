"""Scheduled key maintenance (issue 6): L2 rotation, re-wrap of objects, retirement, root-key rotation and
crypto-shredding. :func:`run_schedule` is what the EventBridge schedule (and locally the same schedule
expression, and ``openkcm rotate run``) calls; every part of it is safe to interrupt and run again.

- **Rotate**: every Ready tenant whose current L2 version is older than its ``rotation_period_days``
  gets a new version (``keyring.rotate``: epoch bump) and a ``key_rotation`` event (seed 004).
- **Re-wrap**: objects sealed under an older L2 version are resealed under the newest, in bounded
  batches, each object with one conditional write on its version attribute. Nothing is kept between
  runs: the next run's query finds exactly the objects that are left, so a crash loses nothing. A
  conflicting write (the KMIP server changed the object meanwhile) is simply picked up again.
- **Retire**: once no object references an older version it is marked ``retired``: kept and still
  unwrappable (DECISIONS 3), never used to seal.
- **Root**: after ``root.rotate()`` (or, in AWS, a new KMS key ARN appended to the configuration),
  every platform-managed L2 version wrapped by an older root version is re-wrapped under the newest.
- **Shred**: tenants deleted more than ``shred_retention_days`` ago lose every L2 version
  (``keyring.destroy_all``); the audit trail stays, and a signed tombstone records the destroy time and
  when the last table backup holding wrapped material expires (DECISIONS 8: PITR keeps 35 days).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from openkcm.domain.audit import AuditEvent, CheckpointSigner
from openkcm.domain.hierarchy import PARENT_ROOT
from openkcm.domain.tenants import PLATFORM_TENANT, READY
from openkcm.errors import (
    ConcurrentUpdate,
    IntegrityFailure,
    KeyUnavailable,
    NotFound,
    OpenKCMError,
    WrongState,
)
from openkcm.ops import events, notifications
from openkcm.ops.audit import signer as audit_signer
from openkcm.ops.runtime import Runtime
from openkcm.storage import ConditionFailed, ManagedObjectModel, TenantKeyModel, TenantModel
from openkcm.storage.models import ProvisioningModel, TombstoneModel, condition_guard

log = logging.getLogger(__name__)

BACKUP_RETENTION_DAYS = 35  # DynamoDB point-in-time recovery window (DECISIONS 8)
ObjectHook = Callable[[str], None]


@dataclass
class RewrapResult:
    tenant_id: str
    target_version: int
    moved: int = 0
    conflicts: int = 0
    failed: int = 0
    complete: bool = False


@dataclass
class ScheduleReport:
    rotated: list[str] = field(default_factory=list)
    rewrapped: dict[str, int] = field(default_factory=dict)
    pending: list[str] = field(default_factory=list)
    retired: dict[str, list[int]] = field(default_factory=dict)
    root_rewrapped: int = 0
    shredded: list[str] = field(default_factory=list)
    l1_probe: str = "absent"
    errors: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


# ---- tenants -------------------------------------------------------------------------------------------
def all_tenants() -> list[TenantModel]:
    return list(TenantModel.scan(TenantModel.sk == TenantModel.SORT_KEY))


def rotation_due(runtime: Runtime, tenant: TenantModel) -> bool:
    if tenant.status != READY or not tenant.current_l2_version:
        return False
    current = runtime.keyring.record(tenant.tenant_id, int(tenant.current_l2_version))
    age = runtime.clock.now() - current.created_at
    return age >= timedelta(days=float(tenant.rotation_period_days))


def rotate_tenant(runtime: Runtime, tenant_id: str, *, actor: str = "rotation-schedule") -> int:
    """New L2 version under the current parent; old versions stay for unwrapping."""
    runtime.audit.ensure_writable()
    tenant = runtime.tenants.require_usable(tenant_id)
    version = runtime.keyring.rotate(tenant_id)
    level = "L2_internal" if tenant.key_mode == "platform-managed" else "L2"
    runtime.audit.record(
        AuditEvent(
            tenant_id=tenant_id,
            source="rotate",
            operation="RotateL2",
            kind="lifecycle",
            actor=actor,
            account_id=tenant.account_id,
            l2_version=version,
        )
    )
    events.publish(runtime, events.KEY_ROTATION, tenant_id, level=level, l2_version=version)
    return version


# ---- re-wrap -------------------------------------------------------------------------------------------
def rewrap_tenant(
    runtime: Runtime,
    tenant_id: str,
    *,
    batch_size: int | None = None,
    max_batches: int = 50,
    deadline: float | None = None,
    after_write: ObjectHook | None = None,
) -> RewrapResult:
    """Move objects sealed under older L2 versions to the newest, ``batch_size`` per query, at most
    ``max_batches`` batches or until ``deadline`` (``time.monotonic()``). ``after_write`` is called after
    each object's write (tests inject crashes there)."""
    batch_size = batch_size or runtime.settings.rewrap_batch_size
    target = int(runtime.tenants.get(tenant_id).current_l2_version)
    runtime.keyring.invalidate(tenant_id)  # seal under the newest version even if another process rotated
    result = RewrapResult(tenant_id, target)
    for _ in range(max_batches):
        if deadline is not None and time.monotonic() > deadline:
            return result
        batch = list(
            ManagedObjectModel.of_tenant(
                tenant_id,
                filter_condition=(ManagedObjectModel.l2_version < target)
                & ManagedObjectModel.wrapped.exists(),
                limit=batch_size,
            )
        )
        if not batch:
            result.complete = True
            return result
        progressed = 0
        for item in batch:
            outcome = _rewrap_object(runtime, item, target)
            if outcome == "moved":
                result.moved += 1
                progressed += 1
                if after_write:
                    after_write(item.object_id)
            elif outcome == "conflict":
                result.conflicts += 1
            else:
                result.failed += 1
        if not progressed and result.failed:
            return result  # only objects that cannot be opened are left; do not spin on them
    return result


def _rewrap_object(runtime: Runtime, item: ManagedObjectModel, target: int) -> str:
    old = int(item.l2_version)
    try:
        version, blob = runtime.keyring.reseal_object(item.tenant_id, item.object_id, old, item.wrapped)
    except (IntegrityFailure, KeyUnavailable) as exc:
        log.warning("object %s of %s cannot be re-wrapped: %s", item.object_id, item.tenant_id, exc.code)
        return "failed"
    if version < target:
        return "conflict"  # our view of the current version is stale; the next batch re-reads it
    try:
        with condition_guard():
            # VersionAttribute adds "version = <read version>": a concurrent change wins and we retry.
            item.update(
                actions=[
                    ManagedObjectModel.wrapped.set(blob),
                    ManagedObjectModel.l2_version.set(version),
                    ManagedObjectModel.updated_at.set(runtime.clock.now()),
                ],
                condition=ManagedObjectModel.l2_version == old,
            )
    except ConditionFailed:
        return "conflict"
    return "moved"


def referenced_versions(tenant_id: str) -> set[int]:
    return {
        int(i.l2_version)
        for i in ManagedObjectModel.of_tenant(tenant_id, attributes_to_get=["l2_version", "object_id"])
    }


def retire_unreferenced(runtime: Runtime, tenant_id: str) -> list[int]:
    """Mark older versions that no object references any more as ``retired`` (still unwrappable)."""
    tenant = runtime.tenants.get(tenant_id)
    current = int(tenant.current_l2_version)
    in_use = referenced_versions(tenant_id)
    retired = []
    for record in runtime.keyring.records(tenant_id):
        version = int(record.l2_version)
        if version >= current or version in in_use or record.state != "active":
            continue
        try:
            with condition_guard():
                record.update(
                    actions=[
                        TenantKeyModel.state.set("retired"),
                        TenantKeyModel.retired_at.set(runtime.clock.now()),
                    ],
                    condition=TenantKeyModel.state == "active",
                )
            retired.append(version)
        except ConditionFailed:
            continue
    return retired


# ---- root key ------------------------------------------------------------------------------------------
def rewrap_root_children(runtime: Runtime, tenant_id: str) -> int:
    """Re-wrap this tenant's root-wrapped L2 versions under the newest root version."""
    moved = 0
    current = runtime.root.current_version
    for record in runtime.keyring.records(tenant_id):
        if record.parent_kind != PARENT_ROOT or record.wrapped is None:
            continue
        if runtime.root.blob_version(record.wrapped) >= current:
            continue
        for _ in range(3):
            try:
                moved += runtime.keyring.rewrap_version(
                    tenant_id, int(record.l2_version), runtime.root, PARENT_ROOT
                )
                break
            except ConcurrentUpdate:
                continue
    return moved


def rotate_root(runtime: Runtime, *, actor: str = "operator") -> dict[str, Any]:
    """New root key version, then every platform-managed L2 version re-wrapped under it."""
    runtime.audit.ensure_writable()
    version = runtime.root.rotate()
    moved = sum(rewrap_root_children(runtime, t.tenant_id) for t in all_tenants())
    runtime.audit.record(
        AuditEvent(
            tenant_id=PLATFORM_TENANT,
            source="rotate",
            operation="RotateRootKey",
            kind="lifecycle",
            actor=actor,
            l1_ref=runtime.root.ref,
            details={"root_version": str(version), "l2_rewrapped": str(moved)},
        )
    )
    return {"root_version": version, "l2_rewrapped": moved}


# ---- crypto-shredding ----------------------------------------------------------------------------------
def tombstone_signer(runtime: Runtime) -> CheckpointSigner:
    """Tombstones are signed with the audit signing key, the one that signs audit checkpoints (embedded
    default: a P-256 key file, 0600, in ``<data_dir>/audit``; AWS: the KMS signing key of the audit)."""
    return audit_signer(runtime)


def _canonical(statement: dict[str, Any]) -> bytes:
    return json.dumps(statement, sort_keys=True, separators=(",", ":")).encode()


def shred_tenant(runtime: Runtime, tenant_id: str, *, actor: str = "rotation-schedule") -> dict[str, Any]:
    """Destroy every L2 version of a deleted tenant, keep the audit trail, write a signed tombstone.
    Idempotent: a second run finds the versions destroyed and the tombstone written."""
    tenant = runtime.tenants.get(tenant_id)
    if tenant.status != "Deleted":
        raise OpenKCMError("only a deleted tenant can be crypto-shredded")
    runtime.audit.ensure_writable()
    _claim_shred(runtime, tenant_id)
    destroyed = runtime.keyring.destroy_all(tenant_id)
    versions = sorted(int(r.l2_version) for r in runtime.keyring.records(tenant_id))
    now = runtime.clock.now()
    try:
        earlier = verify_tombstone(runtime, tenant_id)  # an earlier run wrote the tombstone
    except NotFound:
        pass
    else:
        return _finish_shred(runtime, tenant, earlier, len(destroyed), actor)
    statement = {
        "type": "openkcm/crypto-shred-tombstone",
        "tenant_id": tenant_id,
        "account_id": tenant.account_id,
        "key_mode": tenant.key_mode,
        "l2_versions_destroyed": versions,
        "destroyed_at": now.isoformat(),
        "last_backup_with_wrapped_material_expires_at": (
            now + timedelta(days=BACKUP_RETENTION_DAYS)
        ).isoformat(),
        "statement": (
            "Every L2 version of this tenant was destroyed at destroyed_at. Table backups (point-in-time "
            "recovery) keep wrapped copies until the stated expiry"
            + (
                ", unwrappable only with the platform root key."
                if tenant.key_mode == "platform-managed"
                else "; deleting the customer's L1 key ends them at once."
            )
        ),
    }
    signer = tombstone_signer(runtime)
    message = _canonical(statement)
    stone = TombstoneModel(
        tenant_id,
        statement_json=message.decode(),
        signature=base64.b64encode(signer.sign(hashlib.sha256(message).digest())).decode(),
        algorithm=signer.algorithm,
        key_id=signer.key_id,
        created_at=now,
    )
    try:
        with condition_guard():
            stone.save(condition=TombstoneModel.tenant_id.does_not_exist())
    except ConditionFailed:
        return _finish_shred(runtime, tenant, verify_tombstone(runtime, tenant_id), len(destroyed), actor)
    return _finish_shred(runtime, tenant, {**statement, "signature_valid": True}, len(destroyed), actor)


def _finish_shred(
    runtime: Runtime, tenant: TenantModel, statement: dict[str, Any], newly_destroyed: int, actor: str
) -> dict[str, Any]:
    """After the tombstone: the audit record, the customer's notice, then ``shredded_at`` (which ends the
    schedule's retries). A run that died after the tombstone is finished by the next one; one that died
    between the record and ``shredded_at`` leaves the record twice, never none."""
    tenant_id = tenant.tenant_id
    try:
        progress: ProvisioningModel | None = ProvisioningModel.get(tenant_id, ProvisioningModel.SORT_KEY)
    except ProvisioningModel.DoesNotExist:
        progress = None
    if progress is not None and progress.shredded_at is not None:
        return statement  # finished before
    versions = statement.get("l2_versions_destroyed") or []
    destroyed_at = str(statement.get("destroyed_at", ""))
    runtime.audit.record(
        AuditEvent(
            tenant_id=tenant_id,
            source="rotate",
            operation="CryptoShred",
            kind="lifecycle",
            actor=actor,
            account_id=tenant.account_id,
            details={"versions": ",".join(map(str, versions)), "newly_destroyed": str(newly_destroyed)},
        )
    )
    notifications.notify(
        runtime,
        tenant_id=tenant_id,
        customer=tenant.account_id,
        kind=notifications.SHREDDED,
        subject=f"OpenKCM tenant {tenant_id} was crypto-shredded",
        message=f"Every key of tenant {tenant_id} was destroyed at {destroyed_at}. Backups holding wrapped "
        f"material expire by {statement.get('last_backup_with_wrapped_material_expires_at')}.",
    )
    if progress is not None:
        try:
            when = datetime.fromisoformat(destroyed_at)
        except ValueError:
            when = runtime.clock.now()
        with contextlib.suppress(ConditionFailed), condition_guard():
            progress.update(
                actions=[ProvisioningModel.shredded_at.set(when)],
                condition=ProvisioningModel.shredded_at.does_not_exist(),
            )
    return statement


def verify_tombstone(runtime: Runtime, tenant_id: str) -> dict[str, Any]:
    try:
        stone = TombstoneModel.get(tenant_id, TombstoneModel.SORT_KEY)
    except TombstoneModel.DoesNotExist:
        raise NotFound("no tombstone for this tenant") from None
    digest = hashlib.sha256(stone.statement_json.encode()).digest()
    valid = tombstone_signer(runtime).verify(digest, base64.b64decode(stone.signature), stone.key_id)
    return {
        **json.loads(stone.statement_json),
        "signature_valid": valid,
        "algorithm": stone.algorithm,
        "key_id": stone.key_id,
    }


def _claim_shred(runtime: Runtime, tenant_id: str) -> None:
    """Mark the shred as started, on the condition that the tenant is still deleted: a restore (which
    removes ``deleted_at`` on the condition that no shred started) and a shred exclude each other, so a
    re-subscription never gets a tenant whose keys are being destroyed."""
    try:
        progress = ProvisioningModel.get(tenant_id, ProvisioningModel.SORT_KEY)
    except ProvisioningModel.DoesNotExist:
        return  # deleted before deletion records existed: nothing can restore it
    try:
        with condition_guard():
            progress.update(
                actions=[ProvisioningModel.shred_started_at.set(runtime.clock.now())],
                condition=ProvisioningModel.deleted_at.exists(),
            )
    except ConditionFailed:
        raise WrongState("the tenant was restored meanwhile; it is not crypto-shredded") from None


def shred_due(runtime: Runtime) -> list[str]:
    now = runtime.clock.now()
    due = []
    for item in ProvisioningModel.scan(ProvisioningModel.sk == ProvisioningModel.SORT_KEY):
        if item.shred_after is not None and item.shredded_at is None and item.shred_after <= now:
            due.append(item.tenant_id)
    return due


# ---- the schedule --------------------------------------------------------------------------------------
def probe_l1(runtime: Runtime) -> str:
    """Seed 002 REQ-016: the keystores' L1 health probe runs on this schedule when it exists."""
    try:
        from openkcm.ops import keystores
    except ImportError:
        return "absent"
    probe = getattr(keystores, "probe_l1_health", None)
    if probe is None:
        return "absent"
    result = probe(runtime)
    return f"ran ({len(result)} linked tenants)" if isinstance(result, list) else "ran"


def run_schedule(
    runtime: Runtime,
    *,
    budget_seconds: float = 600.0,
    batch_size: int | None = None,
    tenant_ids: list[str] | None = None,
) -> ScheduleReport:
    """One scheduled run. Bounded by ``budget_seconds``; whatever is left is picked up next time."""
    deadline = time.monotonic() + budget_seconds
    report = ScheduleReport()
    try:
        report.l1_probe = probe_l1(runtime)
    except Exception as exc:  # noqa: BLE001 - reported; the rest of the schedule still runs
        report.errors.append(f"l1 probe: {type(exc).__name__}")
    tenants = all_tenants()
    if tenant_ids is not None:
        tenants = [t for t in tenants if t.tenant_id in set(tenant_ids)]
    for tenant in tenants:
        if time.monotonic() > deadline:
            break
        tid = tenant.tenant_id
        try:
            if rotation_due(runtime, tenant):
                rotate_tenant(runtime, tid)
                report.rotated.append(tid)
            if tenant.status == READY:
                result = rewrap_tenant(runtime, tid, batch_size=batch_size, deadline=deadline)
                if result.moved:
                    report.rewrapped[tid] = result.moved
                if result.complete:
                    retired = retire_unreferenced(runtime, tid)
                    if retired:
                        report.retired[tid] = retired
                else:
                    report.pending.append(tid)
            report.root_rewrapped += rewrap_root_children(runtime, tid)
        except OpenKCMError as exc:
            report.errors.append(f"{tid}: {exc.code}")
        except Exception as exc:
            log.exception("scheduled maintenance of %s failed", tid)
            report.errors.append(f"{tid}: {type(exc).__name__}")
    for tid in shred_due(runtime):
        if time.monotonic() > deadline:
            break
        try:
            shred_tenant(runtime, tid)
            report.shredded.append(tid)
        except Exception as exc:  # noqa: BLE001 - reported; retried on the next run
            report.errors.append(f"shred {tid}: {type(exc).__name__}")
    return report
