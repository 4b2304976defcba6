"""Records carry the full schema and the key chain (L1 ref -> L2 version -> object), whichever adapter
wrote them; the no-WAL sink writes before it returns."""

from __future__ import annotations

import boto3

from openkcm.domain.audit import AuditEvent
from openkcm.domain.audit.events import SCHEMA_VERSION
from openkcm.ops import keystores as ks
from openkcm.ops.rotation import rotate_tenant
from tests.audit.helpers import events_of, items

FIELDS = {
    "tenant_id",
    "source",
    "operation",
    "result",
    "kind",
    "actor",
    "actor_role",
    "account_id",
    "object_id",
    "reason",
    "l1_ref",
    "l2_version",
    "request_id",
    "client_address",
    "details",
    "event_id",
    "time",
    "v",
}


def _events(tenant_id: str) -> list[dict]:
    return sorted((e for item in items(tenant_id) for e in events_of(item)), key=lambda e: e["time"])


def test_records_have_the_schema_and_the_key_chain(runtime, tenant_factory):
    tenant = tenant_factory()
    tid = tenant.tenant_id
    (created,) = _events(tid)  # written before create_platform_tenant returned
    assert set(created) == FIELDS and created["v"] == SCHEMA_VERSION
    assert (created["operation"], created["kind"], created["account_id"]) == (
        "CreateTenant",
        "lifecycle",
        tenant.account_id,
    )
    assert created["l1_ref"] == runtime.root.ref and created["l2_version"] == 1 and created["actor"] == "test"

    # An adapter that names only the L2 version (as the KMIP server does) still gets the L1 reference.
    runtime.audit.record(
        AuditEvent(
            tenant_id=tid,
            source="kmip",
            operation="Get",
            actor="CN=svc",
            actor_role="mongo",
            object_id="obj-7",
            l2_version=1,
            request_id="r-1",
            client_address="127.0.0.1:5555",
        )
    )
    get = _events(tid)[-1]
    assert (get["l1_ref"], get["l2_version"], get["object_id"]) == (runtime.root.ref, 1, "obj-7")

    # After BYOK the same version traces to the customer's L1 key (cache dropped with the epoch's TTL).
    arn = boto3.client("kms", region_name="us-east-1").create_key()["KeyMetadata"]["Arn"]
    store = ks.create_keystore(
        runtime, tenant.account_id, "aws-kms", "prod", {"region": "us-east-1"}, {}, "alice"
    )
    [linked] = ks.link_l1_key(runtime, tenant.account_id, store.keystore_id, arn, [tid], "alice")
    version = rotate_tenant(runtime, tid, actor="alice")
    runtime.audit.record(
        AuditEvent(
            tenant_id=tid,
            source="kmip",
            operation="Encrypt",
            actor_role="mongo",
            object_id="obj-8",
            l2_version=version,
        )
    )
    encrypt = _events(tid)[-1]
    assert encrypt["l1_ref"] == linked["l1_key_ref"] and arn in encrypt["l1_ref"]
    for event in _events(tid):
        assert set(event) == FIELDS
        if event["l2_version"]:
            assert event["l1_ref"], event
