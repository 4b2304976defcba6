"""Setting up a benchmark: a moto process, tables and tenants, the PKI, and the server processes.

Everything binds 127.0.0.1 on free ports and lives in one temporary directory that :meth:`Harness.close`
removes. Server processes are started with ``python -m bench.servers`` and stopped by their own pid.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.servers import free_port

ROOT = Path(__file__).resolve().parent.parent
TENANT = "bench-a"  # Get / Encrypt / Decrypt / Locate
CREATE_TENANT = "bench-c"  # Create (keeps bench-a's partition, which Locate scans, a fixed size)


def _clean_aws_env() -> None:
    for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
        os.environ.pop(name, None)
    os.environ.update(
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_SESSION_TOKEN="testing",
        AWS_REGION="us-east-1",
        AWS_DEFAULT_REGION="us-east-1",
    )


@dataclass
class ServerProcess:
    kind: str
    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def cpu_seconds(self) -> float:
        """utime + stime of the process (all its threads) from /proc."""
        try:
            fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return 0.0
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


@dataclass
class ProcessGroup:
    """Server processes sharing one port; CPU time is their sum."""

    members: list[ServerProcess]

    @property
    def port(self) -> int:
        return self.members[0].port

    @property
    def pid(self) -> int:
        return self.members[0].pid

    def cpu_seconds(self) -> float:
        return sum(m.cpu_seconds() for m in self.members)


def start_server(kind: str, config: dict[str, Any], log: Path, timeout: float = 90.0) -> ServerProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    with open(log, "ab") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "bench.servers", kind, json.dumps(config)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=err,
            env=env,
        )
    deadline = time.monotonic() + timeout
    assert proc.stdout is not None
    line = b""
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 0.5)
        if ready:
            line = proc.stdout.readline()
            if line.startswith(b"READY "):
                server = ServerProcess(kind, proc, int(line.split()[1]), log)
                _wait_listening(server.port, deadline)  # PyKMIP binds in start() but listens in serve()
                return server
            if not line and proc.poll() is not None:
                break
        elif proc.poll() is not None:
            break
    proc.kill()
    proc.wait(10)
    raise RuntimeError(f"{kind} server did not start; see {log}:\n{log.read_text()[-3000:]}")


def _wait_listening(port: int, deadline: float) -> None:
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


@dataclass
class Harness:
    """One benchmark environment. ``keep`` leaves the temporary directory for inspection."""

    keep: bool = False
    work: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="openkcm-bench-")))
    moto: ServerProcess | None = None
    servers: list[ServerProcess] = field(default_factory=list)
    table_prefix: str = field(default_factory=lambda: f"bench{uuid.uuid4().hex[:8]}")
    paths: dict[str, dict[str, Path]] = field(default_factory=dict)

    @property
    def data_dir(self) -> Path:
        return self.work / "data"

    @property
    def pki_dir(self) -> Path:
        return self.work / "server-pki"

    def start_moto(self) -> None:
        _clean_aws_env()
        port = free_port()
        self.moto = start_server("moto", {"port": port}, self.work / "moto.log")
        os.environ["AWS_ENDPOINT_URL"] = f"http://127.0.0.1:{port}"

    def provision(self) -> None:
        """Tables, two Ready platform-managed tenants, a server certificate and one client bundle each."""
        from openkcm.config import Settings
        from openkcm.ops.certificates import issue_client_bundle
        from openkcm.ops.runtime import build_runtime
        from openkcm.ops.tenants import create_platform_tenant

        settings = Settings(table_prefix=self.table_prefix, data_dir=self.data_dir)
        runtime = build_runtime(settings, create=True)
        try:
            for tenant in (TENANT, CREATE_TENANT):
                create_platform_tenant(
                    runtime, "bench-account-1", tenant_id=tenant, actor="bench", source="cli"
                )
            ca = runtime.certificate_authority()
            self.pki_dir.mkdir(parents=True, exist_ok=True)
            cert_pem, key_pem = ca.issue_server(["127.0.0.1", "localhost"])
            (self.pki_dir / "server.pem").write_bytes(cert_pem)
            (self.pki_dir / "server.key").write_bytes(key_pem)
            os.chmod(self.pki_dir / "server.key", 0o600)
            (self.pki_dir / "ca.pem").write_bytes(ca.cert_pem)
            for tenant in (TENANT, CREATE_TENANT):
                self.paths[tenant] = issue_client_bundle(
                    runtime, tenant, "bench", self.work / f"client-{tenant}", actor="bench"
                )
        finally:
            runtime.close()

    def client_context(self, tenant: str = TENANT) -> ssl.SSLContext:
        paths = self.paths[tenant]
        ctx = ssl.create_default_context(cafile=str(paths["ca"]))
        ctx.load_cert_chain(str(paths["cert"]), str(paths["key"]))
        return ctx

    def start_openkcm(
        self,
        *,
        null_audit: bool = False,
        workers: int | None = None,
        env: dict[str, str] | None = None,
        variant: str = "stock",
        port: int | None = None,
        reuse_port: bool = False,
    ) -> ServerProcess:
        cfg = {
            "table_prefix": self.table_prefix,
            "data_dir": str(self.data_dir),
            "pki_dir": str(self.pki_dir),
            "null_audit": null_audit,
            "workers": workers,
            "variant": variant,
            "port": port,
            "reuse_port": reuse_port,
        }
        saved = {k: os.environ.get(k) for k in (env or {})}
        os.environ.update(env or {})
        try:
            server = start_server("openkcm", cfg, self.work / "openkcm.log")
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
        self.servers.append(server)
        return server

    def start_openkcm_group(self, processes: int, **kwargs: Any) -> ProcessGroup:
        """``processes`` server processes on one port (SO_REUSEPORT) when more than one."""
        if processes <= 1:
            return ProcessGroup([self.start_openkcm(**kwargs)])
        port = free_port()
        return ProcessGroup(
            [self.start_openkcm(port=port, reuse_port=True, **kwargs) for _ in range(processes)]
        )

    def start_pykmip(self) -> ServerProcess:
        work = self.work / f"pykmip-{uuid.uuid4().hex[:6]}"
        work.mkdir()
        for name in ("server.pem", "server.key", "ca.pem"):
            shutil.copy(self.pki_dir / name, work / name)
        server = start_server(
            "pykmip", {"work_dir": str(work), "port": free_port()}, self.work / "pykmip.log"
        )
        self.servers.append(server)
        return server

    def start_echo(self, reply: bytes) -> ServerProcess:
        server = start_server(
            "echo", {"pki_dir": str(self.pki_dir), "reply_hex": reply.hex()}, self.work / "echo.log"
        )
        self.servers.append(server)
        return server

    def stop(self, server: ServerProcess) -> None:
        server.stop()
        if server in self.servers:
            self.servers.remove(server)

    def close(self) -> None:
        for server in list(self.servers):
            self.stop(server)
        if self.moto is not None:
            self.moto.stop()
            self.moto = None
        if not self.keep:
            shutil.rmtree(self.work, ignore_errors=True)

    def __enter__(self) -> Harness:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def call(port: int, ctx: ssl.SSLContext, request: bytes, timeout: float = 30.0) -> bytes:
    """One request on a fresh blocking connection (setup only)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as raw:
        with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as sock:
            sock.sendall(request)
            return read_message(sock)


def read_message(sock: ssl.SSLSocket) -> bytes:
    def exactly(n: int) -> bytes:
        data = bytearray()
        while len(data) < n:
            chunk = sock.recv(n - len(data))
            if not chunk:
                raise ConnectionError("the server closed the connection")
            data += chunk
        return bytes(data)

    header = exactly(8)
    return header + exactly(int.from_bytes(header[4:8], "big"))
