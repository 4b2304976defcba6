"""`openkcm kmip serve` as a real process, and the `openkcm local up` service factory."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import pytest

from openkcm.protocol.tags import Op, Status
from tests.conftest import free_port
from tests.kmip.conftest import KmipConnection
from tests.kmip.wire import request, response

ROOT = Path(__file__).resolve().parents[2]


def _wait_healthy(url: str, proc: subprocess.Popen | None = None, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(proc.stdout.read().decode() if proc.stdout else "exited")
        try:
            with urllib.request.urlopen(url, timeout=1) as reply:
                if reply.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise AssertionError("never healthy")


@pytest.mark.slow
def test_openkcm_kmip_serve_process(runtime, settings, tenant_factory, bundle):
    tenant_factory(tenant_id="cli-served")
    runtime.certificate_authority()
    port, health = free_port(), free_port()
    env = {
        **os.environ,
        "OPENKCM_TABLE_PREFIX": settings.table_prefix,
        "OPENKCM_DATA_DIR": str(settings.data_dir),
    }
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "openkcm.cli",
            "kmip",
            "serve",
            "--data-dir",
            str(settings.data_dir),
            "--port",
            str(port),
            "--health-port",
            str(health),
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        _wait_healthy(f"http://127.0.0.1:{health}/healthz", proc)
        with KmipConnection(port, bundle("cli-served")) as conn:
            _, results = response(conn.call(request((1, 2), (Op.QUERY, []))))
            assert results[0].status == Status.SUCCESS
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
        assert (settings.data_dir / "kmip-audit-wal").exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_local_up_service_factory(runtime, tenant_factory, bundle, tmp_path):
    from openkcm.local.services import registered_services

    service = next(s for s in registered_services() if s.name == "kmip")
    port = free_port()
    stack = SimpleNamespace(
        runtime=runtime,
        data_dir=Path(runtime.settings.data_dir),
        options=SimpleNamespace(host="127.0.0.1", ports={"kmip": port}),
    )
    details = service.start(stack)
    try:
        assert details["endpoint"] == f"127.0.0.1:{port}" and Path(details["server_certificate"]).exists()
        assert service.healthy()
        tenant_factory(tenant_id="local-up")
        with KmipConnection(port, bundle("local-up")) as conn:
            _, results = response(conn.call(request((1, 2), (Op.QUERY, []))))
            assert results[0].status == Status.SUCCESS
    finally:
        service.stop()


@pytest.mark.slow
def test_container_entry_point_with_two_processes_sharing_the_port(runtime, settings, tenant_factory, bundle):
    from kmip_fargate.main import write_server_certificate

    tenant_factory(tenant_id="two-procs")
    cert, key, ca = write_server_certificate(runtime, Path(settings.data_dir) / "pki", ["127.0.0.1"])
    port, health = free_port(), free_port()
    env = {
        **os.environ,
        "OPENKCM_TABLE_PREFIX": settings.table_prefix,
        "OPENKCM_DATA_DIR": str(settings.data_dir),
        "OPENKCM_KMIP_HOST": "127.0.0.1",
        "OPENKCM_KMIP_PORT": str(port),
        "OPENKCM_KMIP_HEALTH_PORT": str(health),
        "OPENKCM_KMIP_CERT": str(cert),
        "OPENKCM_KMIP_KEY": str(key),
        "OPENKCM_KMIP_CA": str(ca),
        "OPENKCM_KMIP_PROCESSES": "2",
        "OPENKCM_AUDIT_FLUSH_SECONDS": "60",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "kmip_fargate"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        _wait_healthy(f"http://127.0.0.1:{health}/healthz", proc)
        time.sleep(1.5)  # let the second process bind too
        paths = bundle("two-procs")
        conns = [KmipConnection(port, paths) for _ in range(6)]
        for conn in conns:
            _, results = response(conn.call(request((1, 2), (Op.QUERY, []))))
            assert results[0].status == Status.SUCCESS
            conn.close()
        # A worker that dies is replaced; the replacement replays the dead worker's audit WAL at once
        # (records reach the OS before answers). Both original workers are killed in turn, and flushes
        # are held back (OPENKCM_AUDIT_FLUSH_SECONDS=60), so every stored Query record came by replay.
        for _ in range(2):
            victim = _children(proc.pid)[0]
            os.kill(victim, signal.SIGKILL)
            assert _until(lambda v=victim: v not in _children(proc.pid) and len(_children(proc.pid)) == 2, 30)
        assert _until(lambda: _stored_queries("two-procs") >= 6, 30), _stored_queries("two-procs")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _children(pid: int) -> list[int]:
    """The worker processes (not multiprocessing's resource tracker) of the entry point ``pid``."""
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            for child in (task / "children").read_text().split():
                with contextlib.suppress(OSError):
                    if b"spawn_main" in Path(f"/proc/{child}/cmdline").read_bytes():
                        found.append(int(child))
    return sorted(found)


def _until(predicate, within: float) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return predicate()


def _stored_queries(tenant_id: str) -> int:
    from openkcm.domain.audit.analytics import read_events

    return sum(1 for e in read_events(tenant_id) if e["operation"] == "Query" and e["source"] == "kmip")
