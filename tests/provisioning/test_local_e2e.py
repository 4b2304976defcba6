"""The embedded default end to end: a signed webhook over real HTTP to the local API Gateway stand-in,
the in-process queue and worker, the tenant Ready; the local rotation schedule and `openkcm rotate run`."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

import pytest

from openkcm.ops import provisioning
from openkcm.storage import TenantModel

from ..conftest import free_port
from .conftest import marketplace_event, seal_objects, signed


def post(url: str, headers: dict[str, str], raw: bytes) -> tuple[int, dict]:
    request = urllib.request.Request(
        url, data=raw, method="POST", headers={"Content-Type": "application/json", **headers}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_webhook_over_http_to_ready(rt, secret, tmp_path, monkeypatch, capsys):
    from openkcm.cli import main
    from openkcm.local.http_adapter import LocalHttpAdapter

    queue = provisioning.LocalProvisioningQueue(rt)
    provisioning.set_local_queue(queue)
    adapter = LocalHttpAdapter(data_dir=tmp_path / "adapter", port=free_port())
    adapter.start()
    url = f"{adapter.base_url}/v1/marketplace/events"
    try:
        headers, raw = signed(secret, marketplace_event(customer="http-corp-1"), time.time())
        status, body = post(url, headers, raw)
        assert status == 202 and body["tenant_id"] == "http-corp-1"
        assert queue.wait_idle(20)
        assert TenantModel.get("http-corp-1", "TENANT").status == "Ready"
        status, body = post(url, headers, raw)  # the same signed request again
        assert status == 401 and body["error"] == "unauthenticated"
        status, body = post(url, {"X-OpenKCM-Signature": headers["X-OpenKCM-Signature"]}, raw + b" ")
        assert status == 401
        # The operator's marketplace simulator signs with the local secret file.
        monkeypatch.setenv("OPENKCM_TABLE_PREFIX", rt.settings.table_prefix)
        data_dir = str(rt.settings.data_dir)
        assert (
            main(
                [
                    "marketplace",
                    "send",
                    "tenant_deleted",
                    "--customer",
                    "http-corp-1",
                    "--tenant",
                    "http-corp-1",
                    "--url",
                    url,
                    "--data-dir",
                    data_dir,
                ]
            )
            == 0
        )
        assert queue.wait_idle(20)
        assert TenantModel.get("http-corp-1", "TENANT").status == "Deleted"
        capsys.readouterr()
        assert main(["marketplace", "status", "http-corp-1", "--data-dir", data_dir]) == 0
        assert json.loads(capsys.readouterr().out)["status"] == "Deleted"
        assert main(["marketplace", "notifications", "--account", "http-corp-1", "--data-dir", data_dir]) == 0
        notes = json.loads(capsys.readouterr().out)
        assert notes[0]["kind"] == "provisioning_ready" and notes[0]["link"].endswith("/tenant/http-corp-1")
    finally:
        adapter.stop()
        queue.stop()
        provisioning.set_local_queue(None)


def test_schedule_expression_parsing():
    from openkcm.local.provision_service import schedule_seconds

    assert schedule_seconds("rate(1 hour)") == 3600 and schedule_seconds("rate(5 minutes)") == 300
    for bad in ("cron(0 * * * ? *)", "rate(0 hours)", "rate(1 fortnight)"):
        with pytest.raises(ValueError):
            schedule_seconds(bad)


def test_openkcm_rotate_cli(rt, clock, monkeypatch, capsys):
    from openkcm.cli import main
    from openkcm.ops.tenants import create_platform_tenant

    create_platform_tenant(rt, "acme-corp-12345", tenant_id="tenant-cli", actor="test")
    seal_objects(rt, "tenant-cli", 4)
    monkeypatch.setenv("OPENKCM_TABLE_PREFIX", rt.settings.table_prefix)
    data_dir = str(rt.settings.data_dir)
    assert main(["rotate", "tenant", "tenant-cli", "--data-dir", data_dir]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out == {
        "tenant_id": "tenant-cli",
        "l2_version": 2,
        "rewrapped": 4,
        "complete": True,
        "retired": [1],
    }
    assert main(["rotate", "run", "--data-dir", data_dir, "--tenant", "tenant-cli"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["rotated"] == [] and report["errors"] == []
    assert main(["rotate", "root", "--data-dir", data_dir]) == 0
    assert json.loads(capsys.readouterr().out)["l2_rewrapped"] == 2
