"""Provisioning and CMK API latency through the local adapter (issue 9).

- webhook -> Ready: a signed marketplace ``service_enabled`` event POSTed over real HTTP to the local
  API Gateway stand-in (``LocalHttpAdapter``), queued to the local provisioning worker, until the tenant's
  status reads Ready in DynamoDB (moto, own process). One tenant at a time; p50/p95/max over ``--tenants``.
- CMK API: GET requests with a JWT from the local OIDC issuer through the same adapter (JWT verification,
  the Lambda handler, DynamoDB), one request in flight: ``/v1/health`` (no auth, no table),
  ``/v1/accounts/<account>/tenants`` and ``/v1/tenants/<tenant>/keys``.
- Audit log pages: the first tenant's trail is filled with ``--audit-events`` KMIP-like records (written
  through the real WAL-mode sink, as a KMIP worker writes them, timed as 16,000 records/s), then ``/v1/tenants/<tenant>/audit``
  pages of 100 are read from the start and from the middle of the trail. Beside them, the time to read
  the whole trail once (what every page cost before pages were read lazily), to verify its chain and to
  build its compliance report.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import uuid
from datetime import timedelta
from typing import Any
from urllib.parse import quote

import requests

from bench.harness import Harness
from bench.kmip_load import machine, percentiles
from bench.servers import free_port


def _signed_event(secret: bytes, customer: str) -> tuple[dict[str, str], bytes]:
    from openkcm.ops.provisioning import sign

    body = json.dumps(
        {
            "event_id": f"evt-{uuid.uuid4().hex}",
            "event": "service_enabled",
            "customer": customer,
            "service": "openkcm",
            "region": "eu-west-1",
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
    ).encode()
    return {
        "X-OpenKCM-Signature": sign(secret, int(time.time()), body),
        "Content-Type": "application/json",
    }, body


def _fill_trail(runtime: Any, tenant_id: str, count: int, work: Any) -> str:
    """``count`` Get records of one KMIP connection for ``tenant_id``, stored; returns the middle one's time."""
    from openkcm.clock import ManualClock
    from openkcm.domain.audit import ChainedAuditSink, EventTemplate

    # Times as a busy KMIP tenant's trail has them (16,000 records/s), whatever the speed of this loop.
    clock = ManualClock(runtime.clock.now() - timedelta(seconds=count / 16_000 + 60))
    sink = ChainedAuditSink(
        wal_dir=work / "bench-audit-wal", clock=clock, flush_interval=3600, authenticator=runtime.root
    )
    sink.set_wal_fsync(False)
    template = EventTemplate(
        tenant_id=tenant_id,
        source="kmip",
        actor=f"CN=mongo,O={tenant_id}",
        actor_role="mongo",
        client_address="10.0.0.7:50000",
    )
    middle = ""
    try:
        for n in range(count):
            sink.record_from(template, "Get", object_id=f"key-{n % 64}", request_id=f"r-{n}", sync=False)
            clock.advance(1 / 16_000)
            if n == count // 2:
                middle = clock.iso_now()
            if n % 8000 == 7999:
                sink.sync()
                sink.flush()
        sink.sync()
        sink.flush()
    finally:
        sink.close()
    return middle


def run(
    tenants: int = 5, api_requests: int = 200, keep: bool = False, audit_events: int = 200_000
) -> dict[str, Any]:
    config = {
        "tenants": tenants,
        "api_requests_per_route": api_requests,
        "audit_events": audit_events,
        "machine": machine(),
        "path": "HTTP -> LocalHttpAdapter -> webhook handler -> local queue -> provisioning worker -> moto",
    }
    print("configuration: " + json.dumps(config))
    os.environ.setdefault("POWERTOOLS_METRICS_DISABLED", "true")
    with Harness(keep=keep) as harness:
        harness.start_moto()
        harness.provision()
        os.environ["OPENKCM_TABLE_PREFIX"] = harness.table_prefix
        os.environ["OPENKCM_DATA_DIR"] = str(harness.data_dir)
        from openkcm.api.context import bind_runtime
        from openkcm.config import Settings
        from openkcm.local.http_adapter import LocalHttpAdapter
        from openkcm.ops import events, provisioning
        from openkcm.ops.runtime import build_runtime
        from openkcm.storage import TenantModel

        runtime = build_runtime(Settings(table_prefix=harness.table_prefix, data_dir=harness.data_dir))
        events.ensure_bus(runtime)
        bind_runtime(runtime)
        queue = provisioning.LocalProvisioningQueue(runtime)
        provisioning.set_local_queue(queue)
        adapter = LocalHttpAdapter(data_dir=harness.work / "adapter", port=free_port())
        adapter.start()
        session = requests.Session()
        ready_ms: list[int] = []
        accepted_ms: list[int] = []
        try:
            secret = provisioning.webhook_secret(runtime)
            url = f"{adapter.base_url}/v1/marketplace/events"
            first_tenant = ""
            for index in range(tenants):
                customer = f"bench-corp-{uuid.uuid4().hex[:8]}-{index}"
                headers, body = _signed_event(secret, customer)
                start = time.perf_counter_ns()
                reply = session.post(url, data=body, headers=headers, timeout=30)
                accepted_ms.append(time.perf_counter_ns() - start)
                if reply.status_code != 202:
                    raise RuntimeError(f"webhook refused: {reply.status_code} {reply.text[:200]}")
                tenant_id = reply.json()["tenant_id"]
                first_tenant = first_tenant or tenant_id
                deadline = time.monotonic() + 60
                while True:
                    try:
                        if TenantModel.get(tenant_id, "TENANT").status == "Ready":
                            break
                    except TenantModel.DoesNotExist:
                        pass
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"tenant {tenant_id} not Ready within 60 s")
                    time.sleep(0.005)
                ready_ms.append(time.perf_counter_ns() - start)
            account = TenantModel.get(first_tenant, "TENANT").account_id
            middle = _fill_trail(runtime, first_tenant, audit_events, harness.work)
            from openkcm.domain.audit import read_events

            start = time.perf_counter_ns()
            whole = len(read_events(first_tenant))
            whole_trail_ms = (time.perf_counter_ns() - start) / 1e6
            from openkcm.ops import audit as audit_ops

            start = time.perf_counter_ns()
            verified = audit_ops.verify_tenant(runtime, first_tenant)
            verify_ms = (time.perf_counter_ns() - start) / 1e6
            if not verified["intact"]:
                raise RuntimeError(f"the filled trail does not verify: {verified['message']}")
            start = time.perf_counter_ns()
            audit_ops.compliance_report(runtime, first_tenant, fmt="json")
            report_ms = (time.perf_counter_ns() - start) / 1e6
            token = adapter.issuer.mint(subject="bench@example.com", account=account, roles=["account-admin"])
            auth = {"Authorization": f"Bearer {token}"}
            routes = {
                "GET /v1/health": (f"{adapter.base_url}/v1/health", {}),
                "GET /v1/accounts/{a}/tenants": (f"{adapter.base_url}/v1/accounts/{account}/tenants", auth),
                "GET /v1/tenants/{t}/keys": (f"{adapter.base_url}/v1/tenants/{first_tenant}/keys", auth),
                "GET /v1/tenants/{t}/audit": (
                    f"{adapter.base_url}/v1/tenants/{first_tenant}/audit?limit=100",
                    auth,
                ),
                "GET .../audit?since=<middle>": (
                    f"{adapter.base_url}/v1/tenants/{first_tenant}/audit?limit=100&since={quote(middle)}",
                    auth,
                ),
                "GET .../audit?order=newest": (
                    f"{adapter.base_url}/v1/tenants/{first_tenant}/audit?limit=100&order=newest",
                    auth,
                ),
                "GET .../audit?order=newest&until=<middle>": (
                    f"{adapter.base_url}/v1/tenants/{first_tenant}/audit?limit=100&order=newest&until={quote(middle)}",
                    auth,
                ),
            }
            api: dict[str, dict[str, float]] = {}
            for name, (route, hdrs) in routes.items():
                samples = []
                for _ in range(5):
                    session.get(route, headers=hdrs, timeout=30)
                for _ in range(api_requests):
                    start = time.perf_counter_ns()
                    reply = session.get(route, headers=hdrs, timeout=30)
                    samples.append(time.perf_counter_ns() - start)
                    if reply.status_code != 200:
                        raise RuntimeError(f"{name}: {reply.status_code} {reply.text[:200]}")
                api[name] = {**percentiles(samples), "per_second": api_requests / (sum(samples) / 1e9)}
        finally:
            adapter.stop()
            queue.stop()
            provisioning.set_local_queue(None)
            bind_runtime(None)
            runtime.close()
    ready = percentiles(ready_ms)
    accepted = percentiles(accepted_ms)
    print("\n=== provisioning and CMK API through the local adapter ===")
    print(
        f"webhook accepted (HTTP 202):  p50 {accepted['p50']:.1f} ms  p95 {accepted['p95']:.1f} ms  "
        f"max {accepted['max']:.1f} ms  ({tenants} tenants)"
    )
    print(
        f"webhook -> tenant Ready:      p50 {ready['p50']:.1f} ms  p95 {ready['p95']:.1f} ms  "
        f"max {ready['max']:.1f} ms"
    )
    print(f"{'CMK API route':<32}{'req/s':>8}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'max ms':>9}")
    for name, row in api.items():
        print(
            f"{name:<32}{row['per_second']:>8.0f}{row['p50']:>9.2f}{row['p95']:>9.2f}{row['p99']:>9.2f}"
            f"{row['max']:>9.2f}"
        )
    print(
        f"audit log: {whole:,} events stored for one tenant; reading them all once (what every page of 100 "
        f"cost before pages were read lazily): {whole_trail_ms:,.0f} ms"
    )
    print(
        f"the same tenant: chain verification {verify_ms:,.0f} ms, compliance report (last 30 days, JSON) "
        f"{report_ms:,.0f} ms: both read every record of their range"
    )
    return {
        "config": config,
        "webhook_accepted_ms": accepted,
        "webhook_to_ready_ms": ready,
        "api": api,
        "audit_trail": {
            "events": whole,
            "read_all_ms": whole_trail_ms,
            "verify_ms": verify_ms,
            "compliance_report_ms": report_ms,
        },
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.provision", description=__doc__.split("\n")[0])
    p.add_argument("--tenants", type=int, default=5)
    p.add_argument("--api-requests", type=int, default=200, help="per route")
    p.add_argument(
        "--audit-events", type=int, default=200_000, help="records in the audit-log tenant's trail"
    )
    p.add_argument("--json", type=str, default=None)
    p.add_argument("--keep", action="store_true")
    a = p.parse_args(argv)
    summary = run(a.tenants, a.api_requests, a.keep, a.audit_events)
    if a.json:
        with open(a.json, "w", encoding="utf-8") as out:
            json.dump(summary, out, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
