"""The KMIP adapter's records through the one sink: a Get carries the whole key chain (L1 ref -> L2
version -> object, service, client address, request id); a cross-tenant probe is a security event in the
victim's trail; both trails verify and show up in the compliance report."""

from __future__ import annotations

from openkcm.domain.audit import read_events
from openkcm.kmip.core import KmipCore
from openkcm.ops import audit
from openkcm.protocol.tags import Alg, Op, Status, Tag
from tests.kmip.test_cross_tenant import key_payload
from tests.kmip.test_protocol import call
from tests.kmip.wire import request, uid

SINCE = "2000-01-01T00:00:00+00:00"


def test_kmip_records_carry_the_key_chain_and_refusals(runtime, tenant_factory):
    core = KmipCore(runtime)
    tenant_factory(tenant_id="tenant-owner")
    tenant_factory(tenant_id="tenant-probe")
    _, results = call(core, "tenant-owner", request((1, 4), (Op.CREATE, key_payload(Alg.AES, "owner-key"))))
    assert results[0].status == Status.SUCCESS
    object_id = results[0].payload.child_value(Tag.UNIQUE_IDENTIFIER)
    _, results = call(core, "tenant-owner", request((1, 4), (Op.GET, [uid(object_id)])))
    assert results[0].status == Status.SUCCESS
    _, results = call(core, "tenant-probe", request((1, 4), (Op.GET, [uid(object_id)])))
    assert results[0].status != Status.SUCCESS
    runtime.audit.flush()

    events = read_events("tenant-owner", since=SINCE)
    get = next(e for e in events if e["operation"] == "Get" and e["result"] == "success")
    assert get["object_id"] == object_id and get["l2_version"] == 1
    assert get["l1_ref"] == runtime.root.ref  # filled from the L2 version's parent by the sink
    assert get["actor_role"] and get["actor"] and get["client_address"] and get["request_id"]
    probe = [e for e in events if e["kind"] == "security"]
    assert probe and probe[0]["result"] == "denied" and probe[0]["object_id"] == object_id

    for tenant_id in ("tenant-owner", "tenant-probe"):
        audit.checkpoint_tenant(runtime, tenant_id)
        assert audit.verify_tenant(runtime, tenant_id)["intact"]
    report = audit.compliance_report(runtime, "tenant-owner", None, None)
    assert report["refusals_and_security"]["security_events"] >= 1
    assert any(row["key"] == object_id for row in report["services_keys"])
