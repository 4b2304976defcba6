"""The compliance report for a tenant with BYOK (an L1 key in KMS), a rotation, certificates and a refused
cross-tenant probe: every section is there in JSON and in the standalone HTML; the CLI writes both."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import boto3
import pytest

from openkcm.cli import main
from openkcm.domain.audit import AuditEvent, ChainedAuditSink
from openkcm.ops import audit
from openkcm.ops import keystores as ks
from openkcm.ops.certificates import record_certificate
from openkcm.ops.rotation import rotate_tenant
from openkcm.storage import CertificateModel
from tests.audit.helpers import event

ACCOUNT = "acme-corp-12345"


@pytest.fixture
def busy_tenant(runtime, tenant_factory):
    tenant = tenant_factory(ACCOUNT)
    other = tenant_factory("globex-999")
    tid = tenant.tenant_id
    # BYOK: link a customer KMS key as L1 (the keystores feature's one change-parent operation).
    arn = boto3.client("kms", region_name="us-east-1").create_key()["KeyMetadata"]["Arn"]
    store = ks.create_keystore(
        runtime, ACCOUNT, "aws-kms", "acme prod KMS", {"region": "us-east-1"}, {}, "alice"
    )
    [linked] = ks.link_l1_key(runtime, ACCOUNT, store.keystore_id, arn, [tid], "alice")
    assert linked["ok"], linked
    rotate_tenant(runtime, tid, actor="bob")
    # Two services using two keys, as the KMIP server records them.
    for n in range(6):
        runtime.audit.record(
            event(
                tid,
                n % 2,
                actor_role=f"mongo-{n % 3}",
                l1_ref=f"l1:{store.keystore_id}/{arn}",
                l2_version=2,
                operation="Get" if n % 2 else "Encrypt",
            )
        )
    # A certificate issued and one revoked.
    ca = runtime.certificate_authority()
    for service, revoke in (("mongo-0", False), ("mongo-9", True)):
        cert, _ = ca.issue_client(tid, service)
        item = record_certificate(runtime, tid, service, cert)
        serial = item.serial
        runtime.audit.record(
            AuditEvent(
                tenant_id=tid,
                source="api",
                operation="IssueCertificate",
                kind="config",
                actor="alice",
                actor_role="key-admin",
                object_id=serial,
            )
        )
        if revoke:
            item.update(
                actions=[
                    CertificateModel.revoked_at.set(runtime.clock.now()),
                    CertificateModel.revoked_reason.set("key compromise"),
                ]
            )
            runtime.audit.record(
                AuditEvent(
                    tenant_id=tid,
                    source="api",
                    operation="RevokeCertificate",
                    kind="config",
                    actor="alice",
                    actor_role="key-admin",
                    object_id=serial,
                    reason="key compromise",
                )
            )
    # A service of another tenant probes this tenant's object: refused and logged on both sides.
    for victim in (tid, other.tenant_id):
        runtime.audit.record(
            AuditEvent(
                tenant_id=victim,
                source="kmip",
                operation="Get",
                kind="security",
                result="denied",
                reason="cross-tenant access refused",
                actor="<script>alert(1)</script>",
                actor_role="intruder-svc",
                object_id="obj-0",
                client_address="127.0.0.1",
            )
        )
    audit.checkpoint_tenant(runtime, tid)
    return tid


def test_report_sections_json(runtime, busy_tenant):
    today = runtime.clock.now().date()
    report = audit.compliance_report(runtime, busy_tenant, today - timedelta(days=6), today)
    assert set(audit.REPORT_SECTIONS) <= set(report)
    config = report["key_configuration"]
    assert config["mode"] == "byok" and config["l1_key_ref"].startswith("l1:")
    assert [v["version"] for v in config["l2_versions"]] == [1, 2]
    assert all(v["parent_kind"] == "l1" for v in config["l2_versions"])  # every retained version re-wrapped
    assert {"CreateTenant", "RotateL2"} <= {h["operation"] for h in config["history"]}
    assert any(h["actor"] == "bob" for h in config["history"])
    services = {(row["service"], row["key"]): row["operations"] for row in report["services_keys"]}
    assert services[("mongo-0", "obj-0")] == 1 and services[("mongo-0", "obj-1")] == 1
    assert len(services) == 6 and ("intruder-svc", "obj-0") not in services  # refusals have their section
    rotations = report["rotations"]
    assert rotations["rotations_in_period"] == 1 and rotations["policy_days"] == 90 and rotations["compliant"]
    certificates = report["certificates"]
    assert len(certificates["issued"]) == 2 and [c["service"] for c in certificates["revoked"]] == ["mongo-9"]
    refusals = report["refusals_and_security"]
    assert refusals["security_events"] == 1 and refusals["by_reason"] == {"cross-tenant access refused": 1}
    assert report["chain_verification"]["intact"], report["chain_verification"]
    assert sum(d["count"] for d in report["operations_per_day"]) == 6
    assert len(report["operations_per_day"]) == 7
    json.dumps(report)  # JSON-ready as it is


def test_report_html_is_standalone_and_escaped(runtime, busy_tenant):
    html = audit.compliance_report(runtime, busy_tenant, None, None, fmt="html")
    for section in audit.REPORT_SECTIONS:
        assert f'<section id="{section}">' in html
    assert "<svg" in html and "<rect" in html and "chain intact through checkpoint 1" in html
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert "http" not in html.replace('xmlns="http://www.w3.org/2000/svg"', "")  # nothing fetched


def test_cli_verify_and_report(runtime, busy_tenant, monkeypatch, tmp_path: Path, capsys):
    monkeypatch.setenv("OPENKCM_TABLE_PREFIX", runtime.settings.table_prefix)
    data_dir = str(runtime.settings.data_dir)
    assert main(["audit", "verify", "--tenant", busy_tenant, "--data-dir", data_dir]) == 0
    assert "chain intact through checkpoint" in capsys.readouterr().out
    day = runtime.clock.now().date().isoformat()
    out = tmp_path / "report.html"
    assert (
        main(
            [
                "audit",
                "report",
                "--tenant",
                busy_tenant,
                "--from",
                day,
                "--to",
                day,
                "--format",
                "html",
                "--out",
                str(out),
                "--data-dir",
                data_dir,
            ]
        )
        == 0
    )
    assert out.read_text().startswith("<!DOCTYPE html>")
    assert (
        main(
            [
                "audit",
                "report",
                "--tenant",
                busy_tenant,
                "--from",
                day,
                "--to",
                day,
                "--format",
                "json",
                "--data-dir",
                data_dir,
            ]
        )
        == 0
    )
    assert json.loads(capsys.readouterr().out)["tenant_id"] == busy_tenant
    assert (
        main(
            [
                "audit",
                "report",
                "--tenant",
                busy_tenant,
                "--from",
                "yesterday",
                "--to",
                day,
                "--data-dir",
                data_dir,
            ]
        )
        == 2
    )  # a clear error, no traceback


def test_usage_and_paged_events(runtime, busy_tenant):
    figures = audit.usage(runtime, busy_tenant, days=7)
    assert figures["total"] == 6 and len(figures["per_day"]) == 7
    assert figures["per_operation"] == {"Encrypt": 3, "Get": 3}
    assert {s["service"] for s in figures["services"]} == {"mongo-0", "mongo-1", "mongo-2"}
    assert all(s["last_seen"] for s in figures["services"])
    day = runtime.clock.now().date()
    seen, token, pages = [], None, 0
    while True:
        page, token = audit.query_events(runtime, busy_tenant, day, day, limit=4, next_token=token)
        seen += page
        pages += 1
        if token is None:
            break
    assert len(seen) == len({e["event_id"] for e in seen}) == 13 and pages == 4
    security, _ = audit.query_events(runtime, busy_tenant, day, day, kinds=["security"])
    assert [e["reason"] for e in security] == ["cross-tenant access refused"]


@pytest.mark.e2e
def test_report_html_renders_and_prints_in_chromium(runtime, busy_tenant, tmp_path: Path):
    """Standalone: opened from a file with the network cut off, it renders every section and the chart,
    and Chromium prints it to PDF (what an auditor does with it)."""
    chromium = Path("/usr/bin/chromium")
    if not chromium.exists():
        pytest.skip("chromium is not installed (scripts/bootstrap.sh test installs it)")
    from playwright.sync_api import sync_playwright

    report = tmp_path / "report.html"
    report.write_text(audit.compliance_report(runtime, busy_tenant, None, None, fmt="html"), encoding="utf-8")
    requests: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=str(chromium),
            headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
        )
        try:
            page = browser.new_page()
            page.on("request", lambda r: requests.append(r.url))
            page.goto(report.as_uri())
            for section in audit.REPORT_SECTIONS:
                assert page.locator(f"section#{section} h2").is_visible()
            assert page.locator("#operations_per_day svg rect").count() == 30
            assert "chain intact" in page.locator("#chain_verification").inner_text()
            pdf = page.pdf(format="A4")
        finally:
            browser.close()
    assert pdf.startswith(b"%PDF") and len(pdf) > 5000
    assert requests == [report.as_uri()]  # nothing else fetched


def test_report_sums_events_read_in_any_order_and_lists_them_by_time(runtime, tenant_factory, tmp_path):
    """The report reads each link's records as stored (no merge); records inside a link can be out of time
    order (KMIP pool threads take the time before the sink's lock), and the report still lists by time."""
    tenant_id = tenant_factory().tenant_id
    now = runtime.clock.now()
    sink = ChainedAuditSink(wal_dir=tmp_path / "wal", flush_interval=3600, authenticator=runtime.root)
    for minutes, reason, l1_ref in (
        (10, "late", "l1:after-move"),
        (50, "early", "l1:before-move"),
        (30, "mid", ""),
    ):
        at = (now - timedelta(minutes=minutes)).isoformat(timespec="microseconds")
        sink.record(event(tenant_id, 1, time=at, result="failure", reason=reason, l1_ref=l1_ref), sync=False)
        sink.record(event(tenant_id, 1, time=at, l1_ref=l1_ref), sync=False)
    sink.sync()
    sink.flush()
    sink.close()
    report = audit.compliance_report(runtime, tenant_id)
    assert [r["reason"] for r in report["refusals_and_security"]["events"]] == ["early", "mid", "late"]
    row = next(r for r in report["services_keys"] if r["key"] == "obj-1")
    assert row["operations"] == 6 and row["denied"] == 3 and row["l1_ref"] == "l1:before-move"
    assert row["last_used"] == (now - timedelta(minutes=10)).isoformat(timespec="microseconds")
    assert report["records_in_period"] >= 6 and report["chain_verification"]["intact"]


def test_unordered_reads_take_no_cursor():
    from openkcm.domain.audit import iter_events

    with pytest.raises(ValueError, match="cursor"):
        next(iter_events("t-1", after=("2026-01-01T00:00:00+00:00", "e"), ordered=False))


def test_report_lists_events_of_the_same_time_by_event_id(runtime, tenant_factory):
    """As a sorted read of the trail gives them (here one link holds them in the other order)."""
    import json

    from openkcm.domain.audit.chain import link_sk, pack_events
    from openkcm.storage.audit_models import AuditLinkModel, bind_audit_models

    tenant_id = tenant_factory().tenant_id
    bind_audit_models()
    at = runtime.clock.now().isoformat(timespec="microseconds")
    records = [
        {"time": at, "event_id": event_id, "kind": "config", "operation": operation, "result": "success"}
        for event_id, operation in (("e-b", "SetRotationPolicy"), ("e-a", "LinkL1"))
    ]
    AuditLinkModel(
        tenant_id,
        link_sk("raw", 1),
        writer="raw",
        seq=1,
        prev_hash="0" * 64,
        hash="1" * 64,
        events_z=pack_events(json.dumps(records).encode()),
        digests_bin=b"\0" * 64,
        event_count=2,
        first_time=at,
        last_time=at,
        kinds=["config"],
    ).save()
    history = audit.compliance_report(runtime, tenant_id)["key_configuration"]["history"]
    assert [h["operation"] for h in history if h["operation"] in ("SetRotationPolicy", "LinkL1")] == [
        "LinkL1",
        "SetRotationPolicy",
    ]
