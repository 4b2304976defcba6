"""Build and run the KMIP server of one process (the Fargate task's entry point, ``openkcm kmip serve``
and ``openkcm local up`` all go through :func:`build_server`).

Container configuration (environment): the ``OPENKCM_*`` settings of openkcm.config plus
``OPENKCM_KMIP_PORT`` (5696), ``OPENKCM_KMIP_HEALTH_PORT`` (5697), ``OPENKCM_KMIP_CERT``,
``OPENKCM_KMIP_KEY``, ``OPENKCM_KMIP_CA`` (PEM file paths), ``OPENKCM_KMIP_WORKERS`` (8),
``OPENKCM_KMIP_MAX_MESSAGE_BYTES`` (1 MiB), ``OPENKCM_KMIP_MAX_CONNECTIONS_PER_CLIENT`` (64),
``OPENKCM_KMIP_PROCESSES`` (1: one asyncio process; N > 1: N processes share the port with SO_REUSEPORT,
each with its own runtime, caches and audit WAL slot; the per-client connection limit applies per process).
"""

from __future__ import annotations

import asyncio
import json
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
import time
from dataclasses import replace
from pathlib import Path

from kmip_fargate.server import KmipServer, ServerConfig
from openkcm.config import Settings
from openkcm.files import write_private
from openkcm.kmip.core import KmipConfig, KmipCore
from openkcm.ops.runtime import Runtime, build_runtime

log = logging.getLogger("openkcm.kmip.main")


def audit_wal_dir(settings: Settings) -> Path:
    return Path(settings.data_dir) / "kmip-audit-wal"


def write_server_certificate(
    runtime: Runtime, directory: Path, hostnames: list[str]
) -> tuple[Path, Path, Path]:
    """Issue the listener's certificate from the deployment CA (local stack / standalone without files)."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    ca = runtime.certificate_authority()
    cert_pem, key_pem = ca.issue_server(hostnames)
    cert, key, ca_path = directory / "kmip-server.pem", directory / "kmip-server.key", directory / "ca.pem"
    cert.write_bytes(cert_pem)
    write_private(key, key_pem)
    if not ca_path.exists():
        ca_path.write_bytes(ca.cert_pem)
    return cert, key, ca_path


def build_server(runtime: Runtime, config: ServerConfig) -> KmipServer:
    # The audit flusher thread shares the GIL with the event loop. At Python's default 5 ms switch
    # interval a flush (linking and compressing thousands of events) held ready answers up to 5 ms,
    # which showed as p99 in bench/kmip_load.py; 1 ms bounds that wait at a negligible switching cost.
    sys.setswitchinterval(0.001)
    core = KmipCore(runtime, KmipConfig(max_message_size=config.max_message_size))
    return KmipServer(core, config)


def config_from_env(settings: Settings) -> ServerConfig:
    env = os.environ.get
    pki = Path(settings.data_dir) / "pki"
    return ServerConfig(
        host=env("OPENKCM_KMIP_HOST", "0.0.0.0"),
        port=int(env("OPENKCM_KMIP_PORT", "5696")),
        health_port=int(env("OPENKCM_KMIP_HEALTH_PORT", "5697")),
        cert_file=Path(env("OPENKCM_KMIP_CERT", str(pki / "kmip-server.pem"))),
        key_file=Path(env("OPENKCM_KMIP_KEY", str(pki / "kmip-server.key"))),
        ca_file=Path(env("OPENKCM_KMIP_CA", str(pki / "ca.pem"))),
        trust_domain=settings.trust_domain,
        workers=int(env("OPENKCM_KMIP_WORKERS", "8")),
        max_message_size=int(env("OPENKCM_KMIP_MAX_MESSAGE_BYTES", str(1 << 20))),
        max_connections_per_client=int(env("OPENKCM_KMIP_MAX_CONNECTIONS_PER_CLIENT", "64")),
    )


def run(runtime: Runtime, config: ServerConfig) -> None:
    """Serve until SIGTERM/SIGINT (ECS stops tasks with SIGTERM), then flush the audit trail."""
    server = build_server(runtime, config)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await server.start()
        await stop.wait()

    try:
        asyncio.run(main())
    finally:
        server.stop()
        runtime.close()


MAX_RESTARTS = 5  # worker restarts per minute before the task gives up (and ECS replaces it)


def _serve_one(config: ServerConfig) -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    settings = Settings()
    runtime = build_runtime(settings, audit_wal_dir=audit_wal_dir(settings))
    run(runtime, config)


def main() -> None:
    settings = Settings()
    config = config_from_env(settings)
    processes = int(os.environ.get("OPENKCM_KMIP_PROCESSES", "1"))
    if processes <= 1:
        _serve_one(config)
        return
    config = replace(config, reuse_port=True)
    raise SystemExit(_supervise(config, processes))


def _supervise(config: ServerConfig, processes: int) -> int:
    """Run ``processes`` workers on one port and replace any that dies before shutdown: the replacement
    claims the dead worker's audit WAL slot and replays its records (they reached the OS before their
    answers, so a crashed worker loses none). Restarting more than ``MAX_RESTARTS`` times a minute
    exits non-zero instead, so ECS replaces the task."""
    context = multiprocessing.get_context("spawn")
    stopping = False
    restarts: list[float] = []

    def spawn(index: int) -> multiprocessing.process.BaseProcess:
        child = context.Process(target=_serve_one, args=(config,), name=f"kmip-{index}")
        child.start()
        return child

    children = [spawn(i) for i in range(processes)]

    def forward(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for child in children:
            if child.is_alive() and child.pid is not None:
                os.kill(child.pid, signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    failed = False
    while any(child.is_alive() for child in children):
        multiprocessing.connection.wait([c.sentinel for c in children if c.is_alive()], timeout=1.0)
        for index, child in enumerate(children):
            if child.is_alive() or child.exitcode is None or stopping:
                continue
            now = time.monotonic()
            restarts = [t for t in restarts if now - t < 60] + [now]
            log.error(json.dumps({"event": "kmip_worker_died", "worker": index, "exitcode": child.exitcode}))
            if len(restarts) > MAX_RESTARTS:
                failed = True
                forward(signal.SIGTERM, None)
                break
            children[index] = spawn(index)
            if stopping:  # SIGTERM arrived while it started: it must not outlive the others
                forward(signal.SIGTERM, None)
    failed = failed or any(child.exitcode for child in children)
    return 1 if failed else 0


if __name__ == "__main__":
    main()
