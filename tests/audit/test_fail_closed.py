"""An unreachable audit store makes operations fail closed, with nothing half-done; the bound on a WAL
backlog is honoured and the backlog drains, chained, once the store is back."""

from __future__ import annotations

from pathlib import Path

import boto3
import pytest

from openkcm.domain.audit import ChainedAuditSink
from openkcm.errors import AuditUnavailable
from openkcm.ops import audit
from openkcm.ops.runtime import build_runtime
from openkcm.ops.tenants import create_platform_tenant
from openkcm.storage import AccountModel, TenantKeyModel, TenantModel, create_tables
from openkcm.storage.models import AuditBatchModel
from tests.audit.helpers import event


def _drop_audit_table() -> None:
    boto3.client("dynamodb", region_name="us-east-1").delete_table(TableName=AuditBatchModel.Meta.table_name)


def _nothing_stored() -> None:
    assert list(TenantModel.scan()) == []
    assert list(TenantKeyModel.scan()) == []
    assert list(AccountModel.scan()) == []


def test_tenant_creation_refused_when_the_audit_table_is_gone(runtime):
    _drop_audit_table()
    with pytest.raises(AuditUnavailable):
        create_platform_tenant(runtime, "acme-corp-12345", tenant_id="never-made", actor="test")
    _nothing_stored()


def test_wal_backlog_bound_fails_closed_then_drains(settings, tmp_path: Path):
    from openkcm.ops.runtime import build_root_key

    sink = ChainedAuditSink(
        wal_dir=tmp_path / "wal", max_pending=5, flush_interval=0.05, authenticator=build_root_key(settings)
    )
    runtime = build_runtime(settings, create=True, audit=sink)
    try:
        tenant = create_platform_tenant(runtime, "acme-corp-12345", actor="test")
        sink.flush()
        _drop_audit_table()
        for n in range(5):  # buffered in the WAL: still accepted
            sink.record(event(tenant.tenant_id, n))
        sink.flush()
        assert sink.backlog() == 5
        with pytest.raises(AuditUnavailable):
            create_platform_tenant(runtime, "acme-corp-12345", tenant_id="never-made", actor="test")
        assert TenantModel.count("never-made") == 0
        with pytest.raises(AuditUnavailable):
            sink.record(event(tenant.tenant_id, 99))
        create_tables()  # the store is back
        sink.flush()
        assert sink.backlog() == 0
        create_platform_tenant(runtime, "acme-corp-12345", tenant_id="made-later", actor="test")
    finally:
        runtime.close()
    # The creation record of the first tenant went with the dropped table; its 5 buffered events survived.
    runtime = build_runtime(settings)
    try:
        audit.checkpoint_tenant(runtime, tenant.tenant_id)
        result = audit.verify_tenant(runtime, tenant.tenant_id)
        assert result["records"] == 5, result
        assert result["problems"] and result["problems"][0]["kind"] == "missing"  # link 1 went with the table
        later = audit.verify_tenant(runtime, "made-later")
        assert later["intact"] and later["records"] == 1
    finally:
        runtime.close()


def test_max_pending_can_only_be_made_stricter(settings):
    from openkcm.config import Settings

    with pytest.raises(ValueError):
        ChainedAuditSink(max_pending=20_001)
    with pytest.raises(ValueError):
        Settings(audit_max_pending=50_000)
