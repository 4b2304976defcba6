"""read_events without a lower bound returns everything of the tenant (DynamoDB refuses empty keys)."""

from openkcm.domain.audit import read_events


def test_read_events_without_since_returns_all_events(runtime, tenant_factory):
    tenant_factory(tenant_id="tenant-a")
    runtime.audit.flush()
    events = read_events("tenant-a")
    assert [e["operation"] for e in events] == ["CreateTenant"]
    assert read_events("tenant-b") == []
