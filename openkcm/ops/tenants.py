"""Tenant use cases shared by the CLI, the CMK API and provisioning."""

from __future__ import annotations

from openkcm.domain.audit import AuditEvent
from openkcm.domain.tenants import READY
from openkcm.ops.runtime import Runtime
from openkcm.storage import TenantModel


def create_platform_tenant(
    runtime: Runtime,
    account_id: str,
    *,
    tenant_id: str | None = None,
    name: str = "",
    region: str = "",
    actor: str,
    source: str = "cli",
) -> TenantModel:
    """Create a tenant whose L2 key (version 1) is wrapped by the internal root key, and mark it Ready."""
    runtime.audit.ensure_writable()
    tenant = runtime.tenants.create(account_id, name=name, region=region, tenant_id=tenant_id)
    version = runtime.keyring.create_first_version(tenant.tenant_id)
    tenant = runtime.tenants.set_status(tenant.tenant_id, READY)
    runtime.audit.record(
        AuditEvent(
            tenant_id=tenant.tenant_id,
            account_id=account_id,
            source=source,
            operation="CreateTenant",
            kind="lifecycle",
            actor=actor,
            l2_version=version,
            l1_ref=runtime.root.ref,
        )
    )
    return tenant
