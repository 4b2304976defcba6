"""``python -m bench.provision``: marketplace webhook -> tenant Ready, end to end on the local stack's path.

A signed ``service_enabled`` event is POSTed over HTTP to the local HTTP adapter (the API Gateway
stand-in), which calls ``functions.provision.handler.webhook_handler``; the handler answers 202 and hands
the event to the in-process provisioning queue; its worker runs the idempotent, resumable provisioning
(Powertools idempotency record, tenant record, L2 version 1 under the root key, trust-domain entry, audit
stream, rotation policy, Ready + notification), each step a DynamoDB write on a moto server. The clock
stops when a client polling the tenant record (every 5 ms) sees ``Ready``. Goal: <= 2 s (seed 003: 3 min).
Audit is on (synchronous sink, as in a Lambda).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.provision", description=__doc__.split("\n")[0])
    p.add_argument("--count", type=int, default=20, help="tenants to provision, one after the other")
    p.add_argument("--json", type=Path, default=None)
    a = p.parse_args(argv)
    if not 1 <= a.count <= 500:
        p.error("--count must be 1-500")

    for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
        os.environ.pop(name, None)
    os.environ.update(
        AWS_ACCESS_KEY_ID="bench",
        AWS_SECRET_ACCESS_KEY="bench",
        AWS_SESSION_TOKEN="bench",
        AWS_REGION="us-east-1",
        AWS_DEFAULT_REGION="us-east-1",
    )
    from moto.server import ThreadedMotoServer

    from bench.servers import free_port

    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=free_port(), verbose=False)
    moto.start()
    os.environ["AWS_ENDPOINT_URL"] = f"http://127.0.0.1:{moto.get_host_and_port()[1]}"

    from openkcm.config import Settings
    from openkcm.local.http_adapter import LocalHttpAdapter
    from openkcm.ops import events, provisioning
    from openkcm.ops.runtime import build_runtime
    from openkcm.storage import TenantModel

    workdir = Path(tempfile.mkdtemp(prefix="openkcm-bench-provision-"))
    settings = Settings(table_prefix=f"b{uuid.uuid4().hex[:10]}", data_dir=workdir)
    runtime = build_runtime(settings, create=True)
    events.ensure_bus(runtime)
    queue = provisioning.LocalProvisioningQueue(runtime)
    provisioning.set_local_queue(queue)
    adapter = LocalHttpAdapter(data_dir=workdir, port=free_port())
    adapter.start()
    secret = provisioning.webhook_secret(runtime)
    url = f"{adapter.base_url}/v1/marketplace/events"

    def provision_one(customer: str) -> tuple[float, float]:
        body = json.dumps(
            {
                "event_id": f"evt-{uuid.uuid4().hex}",
                "event": "service_enabled",
                "customer": customer,
                "service": "openkcm",
                "region": "eu-west-1",
                "timestamp": "2026-01-15T10:30:00Z",
            }
        ).encode()
        request = urllib.request.Request(
            url,
            data=body,
            method="POST",
            headers={
                "Content-Type": "application/json",
                "X-OpenKCM-Signature": provisioning.sign(secret, int(time.time()), body),
            },
        )
        start = time.perf_counter()
        with urllib.request.urlopen(request, timeout=10) as reply:
            assert reply.status == 202, reply.status
        accepted = time.perf_counter() - start
        deadline = start + 30
        while time.perf_counter() < deadline:
            try:
                if TenantModel.get(customer, "TENANT").status == "Ready":
                    return accepted, time.perf_counter() - start
            except TenantModel.DoesNotExist:
                pass
            time.sleep(0.005)
        raise TimeoutError(f"{customer} not Ready within 30 s")

    try:
        provision_one("warmup-0")  # cold start: imports, first connections
        results = [provision_one(f"bench-customer-{i:04d}") for i in range(a.count)]
    finally:
        adapter.stop()
        queue.stop()
        provisioning.set_local_queue(None)
        runtime.close()
        moto.stop()
    accepted = sorted(r[0] for r in results)
    ready = sorted(r[1] for r in results)

    def pct(values: list[float], q: float) -> float:
        return values[min(len(values) - 1, int(q * len(values)))]

    figures = {
        "tenants": a.count,
        "webhook_202_ms_p50": round(statistics.median(accepted) * 1000, 1),
        "webhook_to_ready_ms_p50": round(statistics.median(ready) * 1000, 1),
        "webhook_to_ready_ms_p95": round(pct(ready, 0.95) * 1000, 1),
        "webhook_to_ready_ms_max": round(ready[-1] * 1000, 1),
        "goal_ms": 2000,
    }
    config = {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "aws": "moto ThreadedMotoServer (in process)",
        "audit": "on (synchronous ChainedAuditSink)",
        "path": "HTTP -> local adapter -> webhook_handler -> LocalProvisioningQueue -> process_event",
        "poll_interval_ms": 5,
    }
    print("configuration:", json.dumps(config))
    print("figures:      ", json.dumps(figures))
    if a.json:
        a.json.write_text(json.dumps({"configuration": config, "figures": figures}, indent=2))
    return 0 if figures["webhook_to_ready_ms_max"] <= figures["goal_ms"] else 1


if __name__ == "__main__":
    sys.exit(main())
