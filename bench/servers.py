"""Server processes of the benchmark, each started as ``python -m bench.servers <kind> <json>``.

Every server runs in its own process so that it never shares a GIL with the load generator:

- ``moto``: the local AWS (ThreadedMotoServer) on a given loopback port;
- ``openkcm``: our KMIP listener (kmip_fargate.server) over a runtime on that moto server, audit in WAL
  mode as in a long-lived KMIP worker (or the null sink, only when the benchmark asks for it);
- ``pykmip``: PyKMIP's own ``KmipServer`` (SQLite backend) — the baseline, used only here and in tests;
- ``echo``: a trivial asyncio mutual-TLS server answering every framed message with a fixed reply, the
  ceiling of the load generator itself.

Each prints ``READY <port>`` on stdout once it accepts connections, then serves until killed.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import socket
import ssl
import sys
import time
from pathlib import Path
from typing import Any


def _ready(port: int) -> None:
    print(f"READY {port}", flush=True)


def run_moto(cfg: dict[str, Any]) -> None:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=int(cfg["port"]), verbose=False)
    server.start()
    _ready(int(cfg["port"]))
    while True:
        time.sleep(3600)


def run_openkcm(cfg: dict[str, Any]) -> None:
    """Our server as production builds it (kmip_fargate.main.build_server). ``variant`` selects a
    bench-only experiment (bench.variants), labelled as such in every printed figure."""
    from kmip_fargate.main import build_server
    from kmip_fargate.server import ServerConfig
    from openkcm.config import Settings
    from openkcm.domain.audit import NullAuditSink
    from openkcm.ops.runtime import build_runtime

    settings = Settings(table_prefix=cfg["table_prefix"], data_dir=Path(cfg["data_dir"]))
    audit = NullAuditSink() if cfg.get("null_audit") else None
    runtime = build_runtime(settings, audit=audit, audit_wal_dir=Path(cfg["data_dir"]) / "kmip-audit-wal")
    pki = Path(cfg["pki_dir"])
    # SO_REUSEPORT is the server's own option (OPENKCM_KMIP_PROCESSES) where it exists; else bench.variants.
    native_reuse = "reuse_port" in {f.name for f in dataclasses.fields(ServerConfig)}
    reuse = bool(cfg.get("reuse_port"))
    config = ServerConfig(
        host="127.0.0.1",
        port=int(cfg.get("port") or 0),
        cert_file=pki / "server.pem",
        key_file=pki / "server.key",
        ca_file=pki / "ca.pem",
        trust_domain=settings.trust_domain,
        max_connections_per_client=4096,
        metrics_interval=3600.0,
        **({"workers": int(cfg["workers"])} if cfg.get("workers") else {}),
        **({"reuse_port": True} if reuse and native_reuse else {}),
    )
    server = build_server(runtime, config)
    variant = cfg.get("variant") or "stock"
    if variant != "stock" or (reuse and not native_reuse):
        from bench.variants import adapt

        server = adapt(
            server,
            inline=variant == "inline",
            reuse_port=bool(cfg.get("reuse_port")),
        )

    async def main() -> None:
        await server.start()
        _ready(server.port)
        await asyncio.Event().wait()

    asyncio.run(main())


def run_pykmip(cfg: dict[str, Any]) -> None:
    import logging

    from kmip.services.server import KmipServer

    work = Path(cfg["work_dir"])
    policy_dir = work / "policies"
    policy_dir.mkdir(parents=True, exist_ok=True)
    port = int(cfg["port"])
    server = KmipServer(
        hostname="127.0.0.1",
        port=port,
        certificate_path=str(work / "server.pem"),
        key_path=str(work / "server.key"),
        ca_path=str(work / "ca.pem"),
        auth_suite="TLS1.2",
        config_path=None,
        log_path=str(work / "pykmip.log"),
        policy_path=str(policy_dir),
        enable_tls_client_auth=True,
        logging_level=cfg.get("logging_level", "WARNING"),
        database_path=str(work / "pykmip.db"),
    )
    logging.getLogger("kmip").setLevel(cfg.get("logging_level", "WARNING"))
    with server:
        _ready(port)
        server.serve()


class _Echo(asyncio.Protocol):
    def __init__(self, reply: bytes) -> None:
        self.reply = reply
        self.buf = b""
        self.transport: Any = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data
        while len(buf) >= 8:
            total = 8 + int.from_bytes(buf[4:8], "big")
            if len(buf) < total:
                break
            buf = buf[total:]
            self.transport.write(self.reply)
        self.buf = buf


def run_echo(cfg: dict[str, Any]) -> None:
    pki = Path(cfg["pki_dir"])
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_cert_chain(str(pki / "server.pem"), str(pki / "server.key"))
    context.load_verify_locations(cafile=str(pki / "ca.pem"))
    reply = bytes.fromhex(cfg["reply_hex"])

    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(lambda: _Echo(reply), "127.0.0.1", 0, ssl=context, backlog=512)
        _ready(server.sockets[0].getsockname()[1])
        await server.serve_forever()

    asyncio.run(main())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


RUNNERS = {"moto": run_moto, "openkcm": run_openkcm, "pykmip": run_pykmip, "echo": run_echo}

if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    RUNNERS[sys.argv[1]](json.loads(sys.argv[2]))
