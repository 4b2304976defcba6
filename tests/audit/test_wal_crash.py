"""A process SIGKILLed after record() returned but before its flush: the record is in the table after
the next process on the same WAL directory starts (replay), and the chain verifies."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from openkcm.domain.audit import ChainedAuditSink
from openkcm.ops import audit
from tests.audit.helpers import events_of, items
from tests.conftest import free_port

SCRIPT = Path(__file__).with_name("writer_process.py")


def _run_and_kill(mode: str, settings, tenant_id: str, wal: Path, env: dict[str, str]) -> list[str]:
    proc = subprocess.Popen(
        [sys.executable, str(SCRIPT), mode, settings.table_prefix, tenant_id, "12", str(wal)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        line = proc.stdout.readline()
        assert line.strip(), proc.stderr.read()
        ids = line.split()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL
    return ids


def _env(runtime) -> dict[str, str]:
    return dict(os.environ, OPENKCM_TEST_ROOT_KEYS=str(runtime.settings.data_dir / "keys"))


def _stored_ids(tenant_id: str) -> set[str]:
    return {e["event_id"] for item in items(tenant_id) for e in events_of(item)}


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["hang", "hang-os"])
def test_killed_before_flush_is_replayed(runtime, tenant_factory, tmp_path: Path, mode: str):
    tenant = tenant_factory()
    wal = tmp_path / "wal"
    ids = _run_and_kill(mode, runtime.settings, tenant.tenant_id, wal, _env(runtime))
    assert not set(ids) & _stored_ids(tenant.tenant_id)  # nothing reached the table before the kill
    sink = ChainedAuditSink(wal_dir=wal, flush_interval=3600, authenticator=runtime.root)  # same slot
    assert sink.stats["replayed_events"] == 12
    sink.flush()
    sink.close()
    assert set(ids) <= _stored_ids(tenant.tenant_id)
    audit.checkpoint_tenant(runtime, tenant.tenant_id)
    assert (
        audit.verify_tenant(runtime, tenant.tenant_id)["message"]
        == "13 records, chain intact through checkpoint 1"
    )


@pytest.mark.slow
def test_killed_after_linking_with_store_down_is_replayed_idempotently(
    runtime, tenant_factory, tmp_path: Path
):
    tenant = tenant_factory()
    wal = tmp_path / "wal"
    env = dict(_env(runtime), AWS_ENDPOINT_URL=f"http://127.0.0.1:{free_port()}", AWS_MAX_ATTEMPTS="1")
    ids = _run_and_kill("linked", runtime.settings, tenant.tenant_id, wal, env)
    slot = wal / "slot-000"
    assert (slot / "links.wal").read_text().count("\n") == 2  # 12 events in links of 7 + 5
    assert (slot / "events.wal").read_text() == ""
    # A torn last line (a write cut by the kill) must not merge with what the next process appends.
    with open(slot / "events.wal", "a") as handle:
        handle.write('{"event_id": "torn')
    for _ in range(2):  # replaying twice stores each link once
        sink = ChainedAuditSink(wal_dir=wal, flush_interval=3600, authenticator=runtime.root)
        sink.flush()
        sink.close()
    assert set(ids) <= _stored_ids(tenant.tenant_id)
    assert len(items(tenant.tenant_id)) == 3
    audit.checkpoint_tenant(runtime, tenant.tenant_id)
    result = audit.verify_tenant(runtime, tenant.tenant_id)
    assert result["intact"] and result["records"] == 13, result


def test_two_live_processes_never_share_a_wal_slot(tmp_path: Path, aws_endpoint):
    first = ChainedAuditSink(wal_dir=tmp_path / "wal", flush_interval=3600)
    second = ChainedAuditSink(wal_dir=tmp_path / "wal", flush_interval=3600)
    try:
        assert first.wal_dir != second.wal_dir
    finally:
        first.close()
        second.close()
