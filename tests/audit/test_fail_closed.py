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


def test_a_record_a_lambda_could_not_store_is_logged_once_and_ingested_once(
    runtime, tenant_factory, monkeypatch, caplog, capsys, tmp_path: Path
):
    """Between the probe and the write the store can fail after the operation acted: the record then
    lives only in that Lambda's memory. It also goes to the log, once, and `openkcm audit ingest-log`
    chains it from a log export (as a log formatter wraps it, after the export's timestamp)."""
    import json
    import logging

    from openkcm.cli import main
    from openkcm.domain.audit import UNSTORED_EVENT, chain, read_events

    tenant_id = tenant_factory().tenant_id
    sink = ChainedAuditSink(authenticator=runtime.root)  # no WAL: a Lambda's sink
    caplog.set_level(logging.ERROR)
    with monkeypatch.context() as outage:
        outage.setattr(chain.Link, "store", lambda self: (_ for _ in ()).throw(OSError("store down")))
        with pytest.raises(AuditUnavailable):
            sink.record(event(tenant_id, 1, source="api", operation="RotateL2", kind="lifecycle"))
        with pytest.raises(AuditUnavailable):
            sink.flush()  # the next invocation of the same container retries: nothing logged twice
    logged = [r.getMessage() for r in caplog.records if UNSTORED_EVENT in r.getMessage()]
    assert len(logged) == 1
    record = json.loads(logged[0])["record"]
    assert record["tenant_id"] == tenant_id and record["operation"] == "RotateL2"
    assert record["event_id"] not in {e["event_id"] for e in read_events(tenant_id)}
    # The container is gone; the record is in the log export only.
    wrapped = json.dumps({"level": "ERROR", "message": logged[0], "service": "openkcm-cmk-api"})
    export = tmp_path / "cmk-api.log"
    export.write_text(f"2026-11-29T18:00:00.000Z {wrapped}\nsomething else\n", encoding="utf-8")
    monkeypatch.setenv("OPENKCM_TABLE_PREFIX", runtime.settings.table_prefix)
    command = ["audit", "ingest-log", str(export), "--data-dir", str(runtime.settings.data_dir)]
    assert main(command) == 0
    assert json.loads(capsys.readouterr().out) == {"ingested": 1, "already_stored": 0, "unreadable": 0}
    [stored] = [e for e in read_events(tenant_id) if e["event_id"] == record["event_id"]]
    assert stored == record  # the same record: its id, time, actor and chain fields
    assert main(command) == 0  # run twice over the same log: nothing added
    assert json.loads(capsys.readouterr().out) == {"ingested": 0, "already_stored": 1, "unreadable": 0}
    # A message that only quotes such text (a client's value in a log line) is not a line the sink wrote.
    quoted = json.dumps({"event": UNSTORED_EVENT, "record": {**record, "event_id": "e" * 32}})
    export.write_text(f"[WARNING] rejected field value: {quoted}\n", encoding="utf-8")
    assert main(command) == 1  # the operator is told something carried the marker and was not taken
    assert json.loads(capsys.readouterr().out) == {"ingested": 0, "already_stored": 0, "unreadable": 1}
    audit.checkpoint_tenant(runtime, tenant_id)
    assert audit.verify_tenant(runtime, tenant_id)["intact"]
