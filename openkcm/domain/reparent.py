"""Changing a tenant's parent key: THE one operation for platform-managed <-> BYOK <-> HYOK and for moving
from one L1 key to another (DECISIONS 2 and 3). The CMK API exposes it, the CSEK->CMK migration runs it
under load; nobody else re-implements it.

    validate     the new parent answers: connection test, key check, and a real wrap/unwrap round trip of
                 a random test value — within a total budget (30 s by default), each call with its own
                 timeout cut to what is left of the budget
    re-wrap      EVERY retained L2 version of the tenant (not only the current one: otherwise disabling
                 L1 would not cut off old objects, the whole point of HYOK), each new blob verified by
                 unwrapping it again under the new parent before anything is written
    switch       one DynamoDB transaction writes all re-wrapped versions (each conditioned on its record
                 version) and the tenant record (key mode, L1 state and reference, epoch + 1, conditioned
                 on the current L2 version and the record version): all or nothing
    roll back    any failure before or in the switch leaves every stored blob and the tenant's key mode
                 as they were — data stays readable throughout. Only the L1 status records the failure
                 (Error with the reason) when the tenant had no working L1 before.

Progress is reported through a callback: ``progress({"tenant_id", "phase", "done", "total", "message"})``
with phases validate / rewrap / switch / done / rolled_back.
"""

from __future__ import annotations

import hmac
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pynamodb.connection import Connection
from pynamodb.transactions import TransactWrite

from openkcm.clock import SYSTEM_CLOCK, Clock
from openkcm.domain.audit import AuditEvent, AuditSink
from openkcm.domain.hierarchy import PARENT_L1, PARENT_ROOT, TenantKeyring, l2_context
from openkcm.domain.keystores.base import KeystoreConnector, KeystoreError, KeystoreTimeout, audit_safe
from openkcm.domain.tenants import READY, Tenants
from openkcm.domain.wrapping import WrappingKey
from openkcm.errors import ConcurrentUpdate, IntegrityFailure, InvalidRequest, OpenKCMError, WrongState
from openkcm.storage import ConditionFailed, TenantKeyModel, TenantModel
from openkcm.storage.models import condition_guard

Progress = Callable[[dict[str, Any]], None]
log = logging.getLogger("openkcm.reparent")

# Key modes and L1 states of a tenant record.
PLATFORM, BYOK, HYOK = "platform-managed", "byok", "hyok"
L1_INACTIVE, L1_ACTIVE, L1_ERROR = "Inactive", "Active", "Error"
MAX_VERSIONS_PER_SWITCH = 99  # DynamoDB transactions hold 100 items: the versions plus the tenant record


@dataclass(frozen=True)
class ParentChangeResult:
    tenant_id: str
    ok: bool
    key_mode: str
    l1_state: str
    l1_key_ref: str | None
    versions_rewrapped: int = 0
    epoch: int = 0
    error: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class Deadline:
    """A total budget that per-call timeouts are cut to."""

    def __init__(self, seconds: float, per_call: float) -> None:
        self._end = time.monotonic() + seconds
        self._per_call = per_call

    def remaining(self) -> float:
        return self._end - time.monotonic()

    def call_timeout(self) -> float:
        left = self.remaining()
        if left <= 0:
            raise KeystoreTimeout("the validation budget ran out", fix="Check the keystore's latency and retry.")
        return min(self._per_call, left)


def _timed(parent: WrappingKey, deadline: Deadline) -> dict[str, Any]:
    return {"timeout": deadline.call_timeout()} if isinstance(parent, KeystoreConnector) else {}


def validate_parent(parent: WrappingKey, tenant_id: str, deadline: Deadline) -> list[dict[str, Any]]:
    """Connection test, key check and a real round trip of a random value. Returns the passed checks;
    raises the first failure (a typed error with ``fix``)."""
    checks: list[dict[str, Any]] = []
    if isinstance(parent, KeystoreConnector):
        parent.test_connection(timeout=deadline.call_timeout())
        checks.append({"name": "connection", "ok": True, "message": "keystore reachable, credentials accepted"})
        info = parent.check_key(timeout=deadline.call_timeout())
        checks.append({"name": "key", "ok": True, "message": f"key {info.key_id or info.key_ref} is usable"})
    probe = os.urandom(32)
    context = {"tenant_id": tenant_id, "purpose": "openkcm-l1-validation", "nonce": os.urandom(8).hex()}
    blob = parent.wrap(probe, context, **_timed(parent, deadline))
    back = parent.unwrap(blob, context, **_timed(parent, deadline))
    if not hmac.compare_digest(back, probe):
        raise IntegrityFailure("the keystore returned a different value than it wrapped")
    checks.append({"name": "round_trip", "ok": True, "message": "wrapped and unwrapped a random test value"})
    return checks


class ParentChange:
    """Runs the change-parent operation for one tenant at a time."""

    def __init__(
        self,
        keyring: TenantKeyring,
        tenants: Tenants,
        audit: AuditSink,
        *,
        clock: Clock = SYSTEM_CLOCK,
        budget_seconds: float = 30.0,
        call_timeout: float = 10.0,
    ) -> None:
        self._keyring = keyring
        self._tenants = tenants
        self._audit = audit
        self._clock = clock
        self._budget = budget_seconds
        self._call_timeout = call_timeout

    def run(
        self,
        tenant_id: str,
        new_parent: WrappingKey,
        *,
        key_mode: str,
        actor: str,
        source: str = "api",
        progress: Progress | None = None,
    ) -> ParentChangeResult:
        if key_mode not in (PLATFORM, BYOK, HYOK):
            raise InvalidRequest("key mode must be platform-managed, byok or hyok")
        parent_kind = PARENT_ROOT if key_mode == PLATFORM else PARENT_L1
        l1_key_ref = None if key_mode == PLATFORM else new_parent.ref
        self._audit.ensure_writable()  # fail closed before touching anything
        tenant = self._tenants.get(tenant_id)
        if tenant.status != READY:
            raise WrongState(f"tenant is {tenant.status}; only a Ready tenant can change its parent key")

        def report(phase: str, done: int = 0, total: int = 0, message: str = "") -> None:
            if progress is None:
                return
            try:
                progress({"tenant_id": tenant_id, "phase": phase, "done": done, "total": total, "message": message})
            except Exception:  # noqa: BLE001 - a broken progress listener never decides the outcome
                log.warning("progress callback failed", extra={"tenant_id": tenant_id, "phase": phase})

        previous_ref = tenant.l1_key_ref or self._keyring.root.ref
        deadline = Deadline(self._budget, self._call_timeout)
        try:
            report("validate", message="testing the new parent key")
            validate_parent(new_parent, tenant_id, deadline)
            records = [r for r in self._keyring.records(tenant_id) if r.state != "destroyed" and r.wrapped]
            if len(records) > MAX_VERSIONS_PER_SWITCH:
                raise InvalidRequest(f"tenant holds {len(records)} L2 versions; at most {MAX_VERSIONS_PER_SWITCH} switch at once")
            rewrapped = self._rewrap(tenant_id, records, new_parent, report)
            report("switch", len(rewrapped), len(rewrapped), "switching atomically")
            epoch = self._switch_with_retry(tenant, rewrapped, new_parent, parent_kind, key_mode, l1_key_ref)
        except OpenKCMError as exc:
            return self._rolled_back(tenant, exc, l1_key_ref, key_mode, previous_ref, actor, source, report)
        self._keyring.invalidate(tenant_id)
        self._audit.record(
            AuditEvent(
                tenant_id=tenant_id,
                account_id=tenant.account_id,
                source=source,
                operation="ChangeParentKey",
                kind="lifecycle",
                actor=actor,
                l1_ref=audit_safe(new_parent.ref),
                l2_version=int(tenant.current_l2_version),
                details={
                    "from": audit_safe(previous_ref),
                    "to": audit_safe(new_parent.ref),
                    "key_mode": key_mode,
                    "versions_rewrapped": str(len(rewrapped)),
                },
            )
        )
        report("done", len(rewrapped), len(rewrapped), f"{len(rewrapped)} L2 versions now under {new_parent.ref}")
        return ParentChangeResult(
            tenant_id, True, key_mode, L1_INACTIVE if key_mode == PLATFORM else L1_ACTIVE, l1_key_ref, len(rewrapped), epoch
        )

    # ---- steps ---------------------------------------------------------------------------------
    def _rewrap(
        self, tenant_id: str, records: list[TenantKeyModel], parent: WrappingKey, report: Callable[..., None]
    ) -> list[tuple[TenantKeyModel, bytes]]:
        out = []
        total = len(records)
        for index, record in enumerate(records):
            version = int(record.l2_version)
            context = l2_context(tenant_id, version)
            # Through the keyring: its cache (and grace) serve a version whose old parent is briefly away.
            material = self._keyring.version(tenant_id, version).material
            call = {"timeout": self._call_timeout} if isinstance(parent, KeystoreConnector) else {}
            blob = parent.wrap(material, context, **call)
            if not hmac.compare_digest(parent.unwrap(blob, context, **call), material):
                raise IntegrityFailure("the new parent did not return the L2 version it wrapped")
            out.append((record, blob))
            report("rewrap", index + 1, total, f"L2 version {version} re-wrapped")
        return out

    def _switch_with_retry(
        self,
        tenant: TenantModel,
        rewrapped: list[tuple[TenantKeyModel, bytes]],
        parent: WrappingKey,
        parent_kind: str,
        key_mode: str,
        l1_key_ref: str | None,
    ) -> int:
        """The switch, retried once when only the tenant record moved meanwhile (a health probe noting the L1
        state, an epoch bump) while its L2 versions are exactly the ones re-wrapped. Anything else — a new
        version, a version re-wrapped by someone else — is a real conflict: roll back."""
        try:
            return self._switch(tenant, rewrapped, parent, parent_kind, key_mode, l1_key_ref)
        except ConcurrentUpdate:
            fresh = self._tenants.get(tenant.tenant_id)
            if fresh.status != READY or int(fresh.current_l2_version) != int(tenant.current_l2_version):
                raise
            now = {r.sk: (r.version, bytes(r.wrapped or b"")) for r in self._keyring.records(tenant.tenant_id)}
            for record, _ in rewrapped:
                if now.get(record.sk) != (record.version, bytes(record.wrapped or b"")):
                    raise
            return self._switch(fresh, rewrapped, parent, parent_kind, key_mode, l1_key_ref)

    def _switch(
        self,
        tenant: TenantModel,
        rewrapped: list[tuple[TenantKeyModel, bytes]],
        parent: WrappingKey,
        parent_kind: str,
        key_mode: str,
        l1_key_ref: str | None,
    ) -> int:
        now = self._clock.now()
        tenant_actions = [
            TenantModel.key_mode.set(key_mode),
            TenantModel.l1_state.set(L1_INACTIVE if key_mode == PLATFORM else L1_ACTIVE),
            TenantModel.l1_reason.remove(),
            TenantModel.l1_key_ref.set(l1_key_ref) if l1_key_ref else TenantModel.l1_key_ref.remove(),
            TenantModel.epoch.add(1),
            TenantModel.updated_at.set(now),
        ]
        try:
            with condition_guard(), TransactWrite(connection=Connection(region=TenantModel.Meta.region)) as tx:
                for record, blob in rewrapped:
                    tx.update(
                        record,
                        actions=[
                            TenantKeyModel.wrapped.set(blob),
                            TenantKeyModel.parent_kind.set(parent_kind),
                            TenantKeyModel.parent_ref.set(parent.ref),
                        ],
                        condition=TenantKeyModel.state != "destroyed",
                    )
                tx.update(
                    tenant,
                    actions=tenant_actions,
                    condition=TenantModel.current_l2_version == int(tenant.current_l2_version),
                )
        except ConditionFailed:
            raise ConcurrentUpdate(
                "the tenant's keys changed while its parent key was being changed (a rotation?); retry"
            ) from None
        return int(tenant.epoch) + 1  # the transaction added one; the local model does not know

    def _rolled_back(
        self,
        tenant: TenantModel,
        exc: OpenKCMError,
        attempted_ref: str | None,
        key_mode: str,
        previous_ref: str,
        actor: str,
        source: str,
        report: Callable[..., None],
    ) -> ParentChangeResult:
        reason = f"{exc.code}: {exc.message}"[:500]
        fix = getattr(exc, "fix", "")
        fresh = self._tenants.get(tenant.tenant_id)
        state = str(fresh.l1_state)
        # The previous parent stays in force. Only a tenant without a working L1 shows the failure as its
        # L1 state; one that is Active on another L1 keeps it (the failed attempt is in the audit trail).
        if key_mode != PLATFORM and state != L1_ACTIVE:
            try:
                with condition_guard():
                    fresh.update(
                        actions=[
                            TenantModel.l1_state.set(L1_ERROR),
                            TenantModel.l1_reason.set(f"linking {attempted_ref} failed: {reason}"[:1000]),
                            TenantModel.updated_at.set(self._clock.now()),
                        ]
                    )
                state = L1_ERROR
            except ConditionFailed:
                pass
        self._audit.record(
            AuditEvent(
                tenant_id=tenant.tenant_id,
                account_id=tenant.account_id,
                source=source,
                operation="ChangeParentKey",
                kind="lifecycle",
                result="failure",
                actor=actor,
                reason=audit_safe(reason),
                l1_ref=audit_safe(attempted_ref or ""),
                details={"from": audit_safe(previous_ref), "key_mode": key_mode, "rolled_back": "true"},
            )
        )
        report("rolled_back", message=reason)
        error = exc.to_dict()
        if fix:
            error["fix"] = fix
        return ParentChangeResult(
            tenant.tenant_id,
            False,
            str(fresh.key_mode),
            state,
            fresh.l1_key_ref,
            0,
            int(fresh.epoch),
            error,
        )


__all__ = ["KeystoreError", "ParentChange", "ParentChangeResult", "validate_parent"]
