"""Tenants and the accounts that own them.

Tenant ids are stable, URL- and SPIFFE-path-safe: lowercase letters, digits and inner hyphens,
3-63 characters (``t-`` plus 16 random base32 characters when OpenKCM chooses one). They appear as
``spiffe://<trust-domain>/tenant/<tenant-id>/service/<service-id>`` in client certificates.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
from collections.abc import Iterator

from openkcm.clock import SYSTEM_CLOCK, Clock
from openkcm.errors import AlreadyExists, ConcurrentUpdate, InvalidRequest, NotFound, TenantDisabled
from openkcm.storage import AccountModel, ConditionFailed, TenantModel
from openkcm.storage.models import condition_guard

ID_PATTERN = re.compile(r"^[a-z0-9](?:[a-z0-9-]{1,61}[a-z0-9])$")
ACCOUNT_PATTERN = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._-]{0,126}[A-Za-z0-9])?$")

# Status values of a tenant record.
PROVISIONING, READY, FAILED, DISABLED, DELETED = "Provisioning", "Ready", "Failed", "Disabled", "Deleted"
PLATFORM_TENANT = "_platform"  # audit partition for events that belong to no tenant
_DIGEST_ID = re.compile(r"c-[0-9a-f]{20}")


def new_tenant_id() -> str:
    return "t-" + base64.b32encode(os.urandom(10)).decode().lower()


def digest_tenant_id(customer: str) -> str:
    """A marketplace customer's tenant when its customer id is no valid tenant id, or when another account
    holds that id: ``c-`` + the first 20 hex digits of SHA-256 of the customer id exactly as sent."""
    return "c-" + hashlib.sha256(customer.encode()).hexdigest()[:20]


def is_digest_tenant_id(tenant_id: str) -> bool:
    """Ids of the :func:`digest_tenant_id` form are the marketplace's: no account may choose one."""
    return bool(_DIGEST_ID.fullmatch(tenant_id or ""))


def validate_tenant_id(tenant_id: str) -> str:
    if not ID_PATTERN.fullmatch(tenant_id or ""):
        raise InvalidRequest("tenant id must be 3-63 lowercase letters, digits or inner hyphens", field="tenant_id")
    return tenant_id


class Tenants:
    def __init__(self, clock: Clock = SYSTEM_CLOCK) -> None:
        self._clock = clock

    def ensure_account(self, account_id: str, name: str = "") -> AccountModel:
        if not ACCOUNT_PATTERN.fullmatch(account_id or ""):
            raise InvalidRequest("account id must be 1-128 letters, digits, '.', '_' or '-'", field="account_id")
        try:
            return AccountModel.get(account_id)
        except AccountModel.DoesNotExist:
            account = AccountModel(account_id, name=name or account_id, created_at=self._clock.now())
            try:
                with condition_guard():
                    account.save(condition=AccountModel.account_id.does_not_exist())
            except ConditionFailed:
                return AccountModel.get(account_id)
            return account

    def create(self, account_id: str, *, name: str = "", region: str = "", tenant_id: str | None = None) -> TenantModel:
        self.ensure_account(account_id)
        tenant_id = validate_tenant_id(tenant_id) if tenant_id else new_tenant_id()
        now = self._clock.now()
        tenant = TenantModel(
            tenant_id, account_id=account_id, name=name or tenant_id, region=region, created_at=now, updated_at=now
        )
        try:
            with condition_guard():
                tenant.save(condition=TenantModel.tenant_id.does_not_exist())
        except ConditionFailed:
            raise AlreadyExists(f"tenant {tenant_id} exists already", tenant_id=tenant_id) from None
        return tenant

    def get(self, tenant_id: str) -> TenantModel:
        try:
            return TenantModel.get(tenant_id, TenantModel.SORT_KEY)
        except TenantModel.DoesNotExist:
            raise NotFound("no such tenant") from None

    def get_in_account(self, account_id: str, tenant_id: str) -> TenantModel:
        """A tenant of another account is reported exactly like a missing one."""
        tenant = self.get(tenant_id)
        if tenant.account_id != account_id:
            raise NotFound("no such tenant")
        return tenant

    def list_for_account(self, account_id: str) -> Iterator[TenantModel]:
        return TenantModel.account_index.query(account_id)

    def require_usable(self, tenant_id: str) -> TenantModel:
        tenant = self.get(tenant_id)
        if tenant.status in (DISABLED, DELETED):
            raise TenantDisabled(f"tenant is {tenant.status.lower()}")
        return tenant

    def set_status(self, tenant_id: str, status: str, reason: str | None = None) -> TenantModel:
        tenant = self.get(tenant_id)
        actions = [
            TenantModel.status.set(status),
            TenantModel.updated_at.set(self._clock.now()),
            TenantModel.epoch.add(1),  # every worker drops its cached keys of this tenant
        ]
        actions.append(TenantModel.status_reason.set(reason) if reason else TenantModel.status_reason.remove())
        if status == DISABLED:
            actions.append(TenantModel.disabled_at.set(self._clock.now()))
        try:
            with condition_guard():
                tenant.update(actions=actions)
        except ConditionFailed:
            raise ConcurrentUpdate("tenant changed meanwhile; retry") from None
        return tenant

    def bump_epoch(self, tenant_id: str, attempts: int = 5) -> int:
        for _ in range(attempts):
            tenant = self.get(tenant_id)
            try:
                with condition_guard():
                    tenant.update(actions=[TenantModel.epoch.add(1)])
                return int(tenant.epoch)
            except ConditionFailed:
                continue  # the record moved under us; its new version needs the bump just the same
        raise ConcurrentUpdate("tenant record is too busy to bump its epoch; retry")
