"""Quick figure (not a test): Get ops/s over ONE mTLS connection, one request in flight, audit on
(WAL group commit), full decode + authorization + lookup per request.

    .venv/bin/python -m tests.kmip.bench_get [seconds]
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
import uuid
from pathlib import Path


def main(seconds: float = 5.0, connections: int = 1) -> None:
    os.environ.update(
        AWS_ACCESS_KEY_ID="x",
        AWS_SECRET_ACCESS_KEY="x",
        AWS_REGION="us-east-1",
        AWS_DEFAULT_REGION="us-east-1",
    )
    import subprocess
    import urllib.request

    from tests.conftest import free_port

    # moto in its own process, as AWS is in production: it must not share this process's GIL
    port = free_port()
    moto = subprocess.Popen(
        [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    os.environ["AWS_ENDPOINT_URL"] = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            urllib.request.urlopen(os.environ["AWS_ENDPOINT_URL"], timeout=1)
            break
        except OSError:
            time.sleep(0.1)
    from kmip_fargate.main import audit_wal_dir, build_server, write_server_certificate
    from kmip_fargate.server import ServerConfig
    from openkcm.config import Settings
    from openkcm.ops.certificates import issue_client_bundle
    from openkcm.ops.runtime import build_runtime
    from openkcm.ops.tenants import create_platform_tenant
    from openkcm.protocol import ttlv
    from openkcm.protocol.tags import Alg, ObjectType, Op, Status, Tag
    from tests.kmip.conftest import KmipConnection
    from tests.kmip.wire import request, response, uid

    data = Path(tempfile.mkdtemp())
    settings = Settings(table_prefix=f"b{uuid.uuid4().hex[:8]}", data_dir=data)
    runtime = build_runtime(settings, create=True, audit_wal_dir=audit_wal_dir(settings))
    create_platform_tenant(runtime, "bench", tenant_id="bench", actor="bench")
    cert, key, ca = write_server_certificate(runtime, data / "pki", ["127.0.0.1"])
    server = build_server(
        runtime,
        ServerConfig(
            host="127.0.0.1",
            port=0,
            cert_file=cert,
            key_file=key,
            ca_file=ca,
            trust_domain=settings.trust_domain,
        ),
    ).start_in_thread()
    paths = issue_client_bundle(runtime, "bench", "svc", data / "client", actor="bench")
    with KmipConnection(server.port, paths) as conn:
        attrs = [
            ttlv.structure(Tag.ATTRIBUTE, [ttlv.text(Tag.ATTRIBUTE_NAME, n), v])
            for n, v in (
                ("Cryptographic Algorithm", ttlv.enumeration(Tag.ATTRIBUTE_VALUE, Alg.AES)),
                ("Cryptographic Length", ttlv.integer(Tag.ATTRIBUTE_VALUE, 256)),
            )
        ]
        _, res = response(
            conn.call(
                request(
                    (1, 2),
                    (
                        Op.CREATE,
                        [
                            ttlv.enumeration(Tag.OBJECT_TYPE, ObjectType.SYMMETRIC_KEY),
                            ttlv.structure(Tag.TEMPLATE_ATTRIBUTE, attrs),
                        ],
                    ),
                )
            )
        )
        key_id = res[0].payload.child_value(Tag.UNIQUE_IDENTIFIER)
        get = request((1, 2), (Op.GET, [uid(key_id)]))
        assert response(conn.call(get))[1][0].status == Status.SUCCESS
    import threading

    latencies: list[float] = []

    def worker() -> None:
        mine = []
        with KmipConnection(server.port, paths) as c:
            end = time.perf_counter() + seconds
            while time.perf_counter() < end:
                t = time.perf_counter()
                c.call(get)
                mine.append(time.perf_counter() - t)
        latencies.extend(mine)

    threads = [threading.Thread(target=worker) for _ in range(connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    latencies.sort()
    n = len(latencies)
    print(
        f"Get over {connections} connection(s) (client threads in the same process), audit on "
        f"(WAL {audit_wal_dir(settings)}, fsync={settings.audit_wal_fsync}), workers=8: "
        f"{n / seconds:.0f} ops/s, p50 {latencies[n // 2] * 1000:.2f} ms, p99 {latencies[int(n * 0.99)] * 1000:.2f} ms"
    )
    server.stop()
    runtime.close()
    moto.terminate()
    moto.wait()


if __name__ == "__main__":
    main(float(sys.argv[1]) if len(sys.argv) > 1 else 5.0, int(sys.argv[2]) if len(sys.argv) > 2 else 1)
