"""The KMIP listener inside ``openkcm local up`` (issue 3): port 5696 unless ``ports["kmip"]`` says
otherwise; its server certificate is issued from the local CA into ``<data_dir>/pki``. Its own runtime
writes audit through ``<data_dir>/kmip-audit-wal`` (fsync'd locally, flushed in batches). Client
certificates: ``openkcm pki issue --tenant T --service S --out DIR``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kmip_fargate.server import KmipServer
    from openkcm.local.stack import LocalStack
    from openkcm.ops.runtime import Runtime


class KmipService:
    name = "kmip"

    def __init__(self) -> None:
        self.server: KmipServer | None = None
        self.runtime: Runtime | None = None
        self._unsubscribe: Any = None

    def start(self, stack: LocalStack) -> dict[str, Any]:
        from kmip_fargate.main import audit_wal_dir, build_server, write_server_certificate
        from kmip_fargate.server import ServerConfig
        from openkcm.ops import events
        from openkcm.ops.runtime import build_runtime

        assert stack.runtime is not None
        settings = stack.runtime.settings
        self.runtime = build_runtime(settings, audit_wal_dir=audit_wal_dir(settings))
        self._unsubscribe = events.subscribe_keyring(self.runtime.keyring)
        host = stack.options.host
        cert, key, ca = write_server_certificate(
            self.runtime, Path(stack.data_dir) / "pki", [host, "localhost"]
        )
        config = ServerConfig(
            host=host,
            port=stack.options.ports.get("kmip", 5696),
            health_port=stack.options.ports.get("kmip-health", 0),
            cert_file=cert,
            key_file=key,
            ca_file=ca,
            trust_domain=settings.trust_domain,
        )
        self.server = build_server(self.runtime, config).start_in_thread()
        return {
            "endpoint": f"{host}:{self.server.port}",
            "server_certificate": str(cert),
            "ca_certificate": str(ca),
            "health": f"http://{host}:{self.server.health_port}/healthz",
            "client_certificates": "openkcm pki issue --tenant T --service S --out DIR",
        }

    def healthy(self) -> bool:
        return self.server is not None and self.server.healthy()

    def stop(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
        if self.server is not None:
            self.server.stop()
        if self.runtime is not None:
            self.runtime.close()
