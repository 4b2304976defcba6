"""Concurrent writers — threads sharing a sink, several sinks in one process, and separate processes —
leave writer chains that verify and count every record; checkpoints taken while they write stay valid."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from openkcm.domain.audit import ChainedAuditSink
from openkcm.ops import audit
from tests.audit.helpers import event

SCRIPT = Path(__file__).with_name("writer_process.py")


@pytest.mark.slow
def test_threads_and_processes_leave_chains_that_verify(runtime, tenant_factory, tmp_path: Path):
    tenants = [tenant_factory().tenant_id, tenant_factory().tenant_id]
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                str(SCRIPT),
                "write",
                runtime.settings.table_prefix,
                tenants[i % 2],
                "20",
                str(tmp_path / "shared-wal"),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=dict(os.environ, OPENKCM_TEST_ROOT_KEYS=str(runtime.settings.data_dir / "keys")),
        )
        for i in range(3)
    ]
    shared = ChainedAuditSink(
        wal_dir=tmp_path / "wal", batch_events=5, flush_interval=0.02, authenticator=runtime.root
    )
    own = [
        ChainedAuditSink(batch_events=3, authenticator=runtime.root) for _ in range(2)
    ]  # no WAL: synchronous writers
    errors: list[BaseException] = []

    def write(sink: ChainedAuditSink, offset: int) -> None:
        try:
            for n in range(25):
                sink.record(event(tenants[n % 2], offset + n), sync=n % 5 == 4)
            sink.sync()
        except BaseException as exc:  # noqa: BLE001 (reported below)
            errors.append(exc)

    def checkpoint_while_writing() -> None:
        try:
            for _ in range(3):
                for tenant_id in tenants:
                    audit.checkpoint_tenant(runtime, tenant_id)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(shared, 1000 * i)) for i in range(4)]
    threads += [threading.Thread(target=write, args=(sink, 9000 + 100 * i)) for i, sink in enumerate(own)]
    threads.append(threading.Thread(target=checkpoint_while_writing))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    for proc in procs:
        _out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    shared.close()
    assert not errors, errors
    total = 0
    for tenant_id in tenants:
        audit.checkpoint_tenant(runtime, tenant_id)
        result = audit.verify_tenant(runtime, tenant_id)
        assert result["intact"], result["problems"]
        assert result["unconfirmed_records"] == 0
        assert result["writers"] >= 4  # creation writer, shared sink, two own sinks (+ processes)
        total += result["records"]
    # 2 creations + 4 threads x 25 + 2 sinks x 25 + 3 processes x 20
    assert total == 2 + 100 + 50 + 60
