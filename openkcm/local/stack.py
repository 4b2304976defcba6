"""``openkcm local up``: the embedded default on one machine.

Starts the durable moto server (AWS), creates the tables, loads or creates the root key and the CA, then
starts every local service registered in :mod:`openkcm.local.services` (KMIP listener, HTTP API adapter,
web UI, rotation schedule ... each issue adds its own). Writes ``<data-dir>/stack.json`` so that
``openkcm local status`` and the other CLI commands find the running stack (removed again on a clean stop).

One stack per data directory: ``up`` holds an exclusive ``flock`` on ``<data-dir>/.lock`` for the stack's
life (the kernel drops it when the process dies, however it dies). The local AWS (moto) and the
password-less OIDC issuer are for this machine only: moto always listens on 127.0.0.1, and a ``host``
other than a loopback address needs ``unsafe_expose`` (``--unsafe-expose``).
"""

from __future__ import annotations

import errno
import fcntl
import ipaddress
import json
import os
import signal
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from openkcm.config import Settings
from openkcm.local.durable_moto import DurableMotoServer
from openkcm.local.services import LocalService, registered_services
from openkcm.ops.runtime import Runtime, build_runtime

LOCAL_CREDENTIALS = {
    # moto accepts any credentials; these make sure a developer's real AWS profile is never used locally.
    "AWS_ACCESS_KEY_ID": "openkcm-local",
    "AWS_SECRET_ACCESS_KEY": "openkcm-local",
    "AWS_SESSION_TOKEN": "openkcm-local",
}


@dataclass
class StackOptions:
    data_dir: Path = Path(".openkcm")
    host: str = "127.0.0.1"
    moto_port: int = 4566
    health_port: int = 8470
    ports: dict[str, int] = field(default_factory=dict)  # per service overrides (kmip, api ...)
    unsafe_expose: bool = False  # allow a non-loopback host (API, UI, KMIP, health; never moto)


class StackError(RuntimeError):
    """The local stack cannot start or is not running (the CLI prints the message, exit code 2)."""


MOTO_HOST = "127.0.0.1"  # the local AWS has no authentication: never reachable from another machine


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a --host value or a client address) is this machine only."""
    host = host.strip().strip("[]").lower()
    if host == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


def stack_running(data_dir: Path) -> bool | None:
    """True when a stack holds ``<data-dir>/.lock``, False when none does, None when no stack with a
    lock has ever run there."""
    path = Path(data_dir) / ".lock"
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # also releases the shared lock if it was taken
    return False


def local_environment(data_dir: Path, endpoint: str, region: str = "us-east-1") -> dict[str, str]:
    return {
        **LOCAL_CREDENTIALS,
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_REGION": region,
        "AWS_DEFAULT_REGION": region,
        "OPENKCM_DATA_DIR": str(Path(data_dir).resolve()),
    }


def read_stack_file(data_dir: Path) -> dict[str, Any]:
    path = Path(data_dir) / "stack.json"
    if not path.exists():
        raise FileNotFoundError(f"no local stack is running in {data_dir} (start it with `openkcm local up`)")
    return json.loads(path.read_text())


class LocalStack:
    def __init__(self, options: StackOptions) -> None:
        if not is_loopback(options.host) and not options.unsafe_expose:
            raise ValueError(
                f"--host {options.host} would expose the local stack (its password-less sign-in and the "
                "unauthenticated API behind it) beyond this machine; use a loopback address, or add "
                "--unsafe-expose if you really mean it"
            )
        self.options = options
        self.data_dir = Path(options.data_dir).resolve()
        self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.moto = DurableMotoServer(self.data_dir / "aws", MOTO_HOST, options.moto_port)
        self._lock_fd: int | None = None
        self.runtime: Runtime | None = None
        self.services: list[LocalService] = []
        self.info: dict[str, Any] = {}
        self._health: ThreadingHTTPServer | None = None
        self._stopped = threading.Event()

    def _lock(self) -> None:
        path = self.data_dir / ".lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StackError(f"another `openkcm local up` is running on {self.data_dir} (it holds {path})") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._lock_fd = fd

    def _unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = None

    def up(self) -> dict[str, Any]:
        self._lock()  # before anything reads or writes the data directory
        try:
            endpoint = self.moto.start()
        except OSError as exc:
            raise _listen_error("AWS (moto)", MOTO_HOST, self.options.moto_port, exc) from exc
        os.environ.update(local_environment(self.data_dir, endpoint))
        settings = Settings(data_dir=self.data_dir)
        self.runtime = build_runtime(settings, create=True, audit_wal_dir=self.data_dir / "audit-wal")
        self.runtime.certificate_authority()  # creates the CA on first start
        self.info = {
            "pid": os.getpid(),
            "data_dir": str(self.data_dir),
            "aws_endpoint": endpoint,
            "aws_replayed_calls": self.moto.replayed,
            "ca_certificate": str(self.data_dir / "pki" / "ca.pem"),
            "root_key_version": self.runtime.root.current_version,
            "services": {},
        }
        for service in registered_services():
            try:
                details = service.start(self)
            except OSError as exc:
                if exc.errno not in (errno.EADDRINUSE, errno.EADDRNOTAVAIL, errno.EACCES):
                    raise
                port = self.options.ports.get(service.name, getattr(service, "DEFAULT_PORT", 0))
                raise _listen_error(service.name, self.options.host, port, exc) from exc
            self.services.append(service)
            self.info["services"][service.name] = details
        try:
            self._start_health()
        except OSError as exc:
            raise _listen_error("health", self.options.host, self.options.health_port, exc) from exc
        (self.data_dir / "stack.json").write_text(json.dumps(self.info, indent=2))
        return self.info

    def healthy(self) -> dict[str, bool]:
        status = {"aws": self.moto.running}
        for service in self.services:
            try:
                status[service.name] = bool(service.healthy())
            except Exception:  # noqa: BLE001 (a broken check is an unhealthy service)
                status[service.name] = False
        return status

    def _start_health(self) -> None:
        stack = self

        class Health(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # http.server's naming
                if self.path.rstrip("/") not in ("/healthz", ""):
                    self.send_error(404)
                    return
                checks = stack.healthy()
                body = json.dumps({"healthy": all(checks.values()), "checks": checks}).encode()
                self.send_response(200 if all(checks.values()) else 503)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                return None

        self._health = ThreadingHTTPServer((self.options.host, self.options.health_port), Health)
        threading.Thread(target=self._health.serve_forever, daemon=True, name="health").start()
        host, port = self._health.server_address[:2]
        self.info["health_url"] = f"http://{host}:{port}/healthz"

    def wait(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: self._stopped.set())
        self._stopped.wait()

    def down(self) -> None:
        for service in reversed(self.services):
            try:
                service.stop()
            except Exception as exc:  # noqa: BLE001 (keep stopping the others)
                print(f"stopping {service.name} failed: {exc}")
        if self._health is not None:
            self._health.shutdown()
        if self.runtime is not None:
            self.runtime.close()
        self.moto.stop()
        if self._lock_fd is not None:  # only the stack that wrote stack.json removes it
            (self.data_dir / "stack.json").unlink(missing_ok=True)
        self._unlock()


def _listen_error(what: str, host: str, port: int, exc: OSError) -> OSError:
    where = f"{host}:{port}" if port else host
    reason = os.strerror(exc.errno) if exc.errno else str(exc)
    return OSError(exc.errno, f"{what} cannot listen on {where}: {reason}")
