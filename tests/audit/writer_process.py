"""A separate writer process for the audit tests: ``python tests/audit/writer_process.py MODE PREFIX
TENANT COUNT [WAL_DIR]``. MODE ``hang`` records (fsync'd WAL, no flush) then waits to be killed;
``linked`` also cuts links into links.wal (the store is unreachable) then waits; ``write`` records and
exits cleanly (concurrency test)."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from openkcm.domain.audit import AuditEvent, ChainedAuditSink
from openkcm.domain.rootkey import LocalRootKey
from openkcm.storage import bind_tables


def main() -> None:
    mode, prefix, tenant, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    wal = Path(sys.argv[5]) if len(sys.argv) > 5 else None
    bind_tables(prefix, "us-east-1")
    # The root key of the test's data directory wraps this writer's link-MAC key, as build_runtime does.
    root = LocalRootKey(Path(os.environ["OPENKCM_TEST_ROOT_KEYS"]))
    sink = ChainedAuditSink(
        writer_id="proc",
        wal_dir=wal,
        batch_events=7,
        flush_interval=3600 if mode != "write" else 0.05,
        authenticator=root,
    )
    if mode.endswith("-os"):
        sink.set_wal_fsync(False)  # handed to the OS only: must still survive SIGKILL
        mode = mode[:-3]
    ids = []
    for n in range(count):
        event = AuditEvent(
            tenant_id=tenant,
            source="kmip",
            operation="Get",
            actor_role=f"svc-{mode}",
            object_id=f"obj-{n}",
            l1_ref="root:v1",
            l2_version=1,
        )
        sink.record(event)  # sync=True: fsync'd before it returns
        ids.append(event.event_id)
    if mode == "linked":
        sink.flush()  # links.wal written; the store (a closed port) refuses
    print(" ".join(ids), flush=True)
    if mode == "write":
        sink.close()
        return
    while True:
        time.sleep(1)


if __name__ == "__main__":
    main()
