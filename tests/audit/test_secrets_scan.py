"""No key material, wrapped blob or secret in any stored audit item, archive segment, WAL file, report or
log line, after representative operations: tenant creation, L3 seal/open, rotation, BYOK-style keystore
credentials, checkpoint, archive, report."""

from __future__ import annotations

import base64
import gzip
import json
import logging
import os
from datetime import timedelta
from pathlib import Path

import boto3
from cryptography.hazmat.primitives import serialization

from openkcm.domain.audit import AuditEvent, ChainedAuditSink
from openkcm.domain.audit.chain import unpack_events
from openkcm.ops import audit
from openkcm.ops import keystores as ks
from openkcm.ops.rotation import rotate_tenant
from openkcm.storage import KeystoreModel, TenantKeyModel
from openkcm.storage.models import AuditBatchModel, UsageModel

SECRET_ACCESS_KEY = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYAUDITSCANKEY"
ACCESS_KEY_ID = "AKIAAUDITSCAN7EXAMPLE"


def _forms(secret: bytes) -> set[str]:
    forms = {
        secret.hex(),
        secret.hex().upper(),
        base64.b64encode(secret).decode(),
        base64.urlsafe_b64encode(secret).decode(),
        base64.b64encode(secret).decode().rstrip("="),
    }
    return {f for f in forms if len(f) >= 16}


def _scan_table(name: str) -> list[str]:
    found, kwargs = [], {"TableName": name}
    client = boto3.client("dynamodb", region_name="us-east-1")
    while True:
        page = client.scan(**kwargs)
        found += [json.dumps(item, default=str) for item in page["Items"]]
        # Packed audit events are compressed: scan what they decode to as well as the raw item.
        found += [
            json.dumps(unpack_events(item["events_z"]["B"])) for item in page["Items"] if "events_z" in item
        ]
        if "LastEvaluatedKey" not in page:
            return found
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def test_no_secret_anywhere_in_the_trail_or_the_logs(runtime, tenant_factory, caplog, capfd, tmp_path: Path):
    # Our own loggers at DEBUG, third-party ones at the production level INFO: botocore's DEBUG output
    # prints whole request bodies (wrapped blobs) and signed headers, so it must never be enabled in
    # production (reported to the integrator; the logging setup should cap it).
    caplog.set_level(logging.INFO)
    caplog.set_level(logging.DEBUG, logger="openkcm")
    wal_sink = ChainedAuditSink(wal_dir=tmp_path / "wal", flush_interval=3600, authenticator=runtime.root)
    runtime.certificate_authority()
    tenant = tenant_factory()
    tid = tenant.tenant_id

    material = os.urandom(32)
    version, sealed = runtime.keyring.seal_object(tid, "obj-1", material)
    assert runtime.keyring.open_object(tid, "obj-1", version, sealed) == material
    for sink in (runtime.audit, wal_sink):
        sink.record(
            AuditEvent(
                tenant_id=tid,
                source="kmip",
                operation="Get",
                actor="CN=svc",
                actor_role="svc",
                object_id="obj-1",
                l1_ref=runtime.root.ref,
                l2_version=version,
            )
        )
    rotate_tenant(runtime, tid, actor="alice")
    store = ks.create_keystore(
        runtime,
        tenant.account_id,
        "aws-kms",
        "scan",
        {"region": "us-east-1"},
        {"access_key_id": ACCESS_KEY_ID, "secret_access_key": SECRET_ACCESS_KEY},
        "alice",
    )
    ks.test_keystore(runtime, tenant.account_id, store.keystore_id, actor="alice")
    runtime.audit.record(
        AuditEvent(
            tenant_id=tid,
            source="kmip",
            operation="Get",
            kind="security",
            result="denied",
            reason="cross-tenant access refused",
            actor="CN=other",
            object_id="obj-x",
        )
    )
    audit.archive(runtime, tid, before=runtime.clock.now() + timedelta(seconds=1))
    reports = [
        json.dumps(audit.compliance_report(runtime, tid, None, None)),
        audit.compliance_report(runtime, tid, None, None, fmt="html"),
        json.dumps(audit.verify_tenant(runtime, tid)),
        json.dumps(audit.usage(runtime, tid)),
    ]
    wal_sink.sync()
    wal_texts = [p.read_text() for p in (tmp_path / "wal").rglob("*.wal")]
    wal_sink.close()

    secrets: set[str] = {SECRET_ACCESS_KEY, ACCESS_KEY_ID}
    secrets |= _forms(material) | _forms(sealed)
    for record in TenantKeyModel.query(tid, TenantKeyModel.sk.startswith("L2#")):
        secrets |= _forms(runtime.keyring.version(tid, int(record.l2_version)).material)
        if record.wrapped:
            secrets |= _forms(bytes(record.wrapped))
    secrets |= _forms(bytes(KeystoreModel.get(tenant.account_id, store.keystore_id).secret_wrapped))
    data_dir = Path(runtime.settings.data_dir)
    for root_file in (data_dir / "keys").glob("root-key-v*.bin"):
        secrets |= _forms(root_file.read_bytes())
    for pem_file in [data_dir / "audit" / "checkpoint-signing.key", data_dir / "pki" / "ca.key"]:
        key = serialization.load_pem_private_key(pem_file.read_bytes(), None)
        scalar = key.private_numbers().private_value.to_bytes(32, "big")
        secrets |= _forms(scalar)
        secrets |= {
            line for line in pem_file.read_text().splitlines() if len(line) >= 40 and "-----" not in line
        }
    for sink in (runtime.audit, wal_sink):  # the writers' link-MAC keys (only ever stored wrapped)
        assert sink._writer_key is not None
        secrets |= _forms(sink._writer_key)
    assert len(secrets) > 20

    haystacks = {
        "audit table": "\n".join(_scan_table(AuditBatchModel.Meta.table_name)),
        "usage table": "\n".join(_scan_table(UsageModel.Meta.table_name)),
        "archive": "\n".join(
            gzip.decompress(p.read_bytes()).decode() for p in (data_dir / "audit" / "archive").rglob("*.gz")
        ),
        "wal": "\n".join(wal_texts),
        "reports": "\n".join(reports),
        "logs": "\n".join(r.getMessage() + " " + str(r.args) for r in caplog.records),
        "stdio": "".join(capfd.readouterr()),
    }
    assert "obj-1" in haystacks["audit table"] and "cross-tenant" in haystacks["archive"]
    assert "obj-1" in haystacks["wal"]
    for where, text in haystacks.items():
        leaked = [s[:12] + "..." for s in secrets if s in text]
        assert not leaked, f"secret material in {where}: {leaked}"


def test_schema_refuses_secret_looking_values():
    import pytest

    from openkcm.errors import InvalidRequest

    blob = base64.b64encode(os.urandom(65)).decode()
    for bad in (
        {"reason": blob},
        {"details": {"k": os.urandom(40).hex()}},
        {"details": {"pem": "-----BEGIN PRIVATE KEY-----"}},
        {"details": {"raw": b"bytes"}},
        {"object_id": "x" * 600},
    ):
        with pytest.raises(InvalidRequest):
            AuditEvent(tenant_id="t-1", source="kmip", operation="Get", **bad)
    # Identifiers, ARNs, SHA-256 digests and SPIFFE ids are fine.
    AuditEvent(
        tenant_id="t-1",
        source="kmip",
        operation="Get",
        object_id=os.urandom(32).hex()[:64],
        l1_ref="arn:aws:kms:eu-central-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab",
        actor="spiffe://openkcm.local/tenant/t-1/service/mongo-prod-eu-central-1-cluster-0",
    )
