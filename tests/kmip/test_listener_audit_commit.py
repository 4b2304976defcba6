"""Inline answers wait for their audit record: the listener holds the answers of one event-loop pass and
releases them after one audit sync (one WAL write to the OS, or one fsync in the pool). The client must
never hold an answer whose record is not yet in the WAL file."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from openkcm.protocol.tags import Op, Status
from tests.kmip.conftest import KmipConnection
from tests.kmip.test_listener_protocol import _warm_key, listener  # noqa: F401 (fixture)
from tests.kmip.wire import request, response, uid


def _gets_in_wal(server) -> int:
    wal = Path(server.core.services.audit.wal_dir) / "events.wal"
    return wal.read_bytes().count(b'"operation":"Get"')


@pytest.mark.parametrize("fsync", [True, False], ids=["fsync", "os-write"])
def test_every_answer_follows_its_record_into_the_wal(listener, settings, tenant_factory, bundle, fsync):  # noqa: F811
    settings.audit_wal_fsync = fsync
    settings.audit_flush_seconds = 60  # keep records in events.wal (no link written meanwhile)
    server = listener()
    tenant_factory(tenant_id="walfirst")
    with KmipConnection(server.port, bundle("walfirst")) as conn:
        key_id = _warm_key(conn)
        get = request((1, 2), (Op.GET, [uid(key_id)]))
        before = _gets_in_wal(server)
        for n in range(1, 41):  # 40 records of ~450 bytes: more than one 8 KB write buffer
            _, results = response(conn.call(get))
            assert results[0].status == Status.SUCCESS
            assert _gets_in_wal(server) >= before + n, f"answer {n} arrived before its audit record"


def test_concurrent_connections_all_answered_and_recorded(listener, settings, tenant_factory, bundle):  # noqa: F811
    settings.audit_wal_fsync = False
    settings.audit_flush_seconds = 60
    server = listener()
    tenant_factory(tenant_id="walmany")
    paths = bundle("walmany")
    with KmipConnection(server.port, paths) as conn:
        key_id = _warm_key(conn)
    before = _gets_in_wal(server)
    get = request((1, 2), (Op.GET, [uid(key_id)]))
    failures: list[str] = []
    barrier = threading.Barrier(6)

    def client() -> None:
        try:
            with KmipConnection(server.port, paths) as mine:
                barrier.wait(10)
                for _ in range(50):
                    _, results = response(mine.call(get))
                    if results[0].status != Status.SUCCESS:
                        failures.append(str(results[0].status))
        except Exception as exc:  # noqa: BLE001 - reported below
            failures.append(repr(exc))

    threads = [threading.Thread(target=client) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not failures
    assert _gets_in_wal(server) == before + 300


def test_no_answer_leaves_when_its_record_cannot_be_written(listener, settings, tenant_factory, bundle):  # noqa: F811
    """Fail closed: a WAL write that fails drops the held answers (the connection is cut) instead of
    answering without a record; the server keeps serving once the WAL works again."""
    from tests.kmip.test_listener_protocol import _closed

    settings.audit_wal_fsync = False
    server = listener()
    tenant_factory(tenant_id="walfail")
    paths = bundle("walfail")
    sink = server.core.services.audit
    with KmipConnection(server.port, paths) as conn:
        key_id = _warm_key(conn)
        get = request((1, 2), (Op.GET, [uid(key_id)]))
        real_sync = sink.sync

        def broken() -> None:
            raise OSError(5, "Input/output error")

        sink.sync = broken
        try:
            conn.sock.sendall(get)
            assert _closed(conn.sock, within=10), "an answer left without its audit record"
        finally:
            sink.sync = real_sync
    with KmipConnection(server.port, paths) as conn:
        _, results = response(conn.call(get))
        assert results[0].status == Status.SUCCESS
