"""``openkcm local up``: the embedded default on one machine.

Starts the durable moto server (AWS), creates the tables, loads or creates the root key and the CA, then
starts every local service registered in :mod:`openkcm.local.services` (KMIP listener, HTTP API adapter,
web UI, rotation schedule ... each issue adds its own). Writes ``<data-dir>/stack.json`` so that
``openkcm local status`` and the other CLI commands find the running stack.
"""

from __future__ import annotations

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
        raise FileNotFoundError(f"no local stack has run in {data_dir} (start it with `openkcm local up`)")
    return json.loads(path.read_text())


class LocalStack:
    def __init__(self, options: StackOptions) -> None:
        self.options = options
        self.data_dir = Path(options.data_dir).resolve()
        self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.moto = DurableMotoServer(self.data_dir / "aws", options.host, options.moto_port)
        self.runtime: Runtime | None = None
        self.services: list[LocalService] = []
        self.info: dict[str, Any] = {}
        self._health: ThreadingHTTPServer | None = None
        self._stopped = threading.Event()

    def up(self) -> dict[str, Any]:
        endpoint = self.moto.start()
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
            details = service.start(self)
            self.services.append(service)
            self.info["services"][service.name] = details
        self._start_health()
        (self.data_dir / "stack.json").write_text(json.dumps(self.info, indent=2))
        return self.info

    def healthy(self) -> dict[str, bool]:
        status = {"aws": self.moto.running}
        for service in self.services:
            try:
                status[service.name] = bool(service.healthy())
            except Exception:
                status[service.name] = False
        return status

    def _start_health(self) -> None:
        stack = self

        class Health(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
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
            except Exception as exc:  # keep stopping the others
                print(f"stopping {service.name} failed: {exc}")
        if self._health is not None:
            self._health.shutdown()
        if self.runtime is not None:
            self.runtime.close()
        self.moto.stop()
