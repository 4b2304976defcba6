"""Security review fixes of the marketplace path: a customer's default tenant id squatted by another
account, refusal floods audited under a throttle, and the webhook secret rotated under a warm process."""

from __future__ import annotations

import hashlib
import itertools
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from openkcm.domain.tenants import PLATFORM_TENANT
from openkcm.ops import provisioning
from openkcm.storage import TenantModel

from .conftest import marketplace_event, signed

pytestmark = pytest.mark.filterwarnings("ignore:No application metrics to publish:UserWarning")


def digest_id(customer: str) -> str:
    """The documented fallback: ``c-`` plus the first 20 hex digits of SHA-256 of the customer id."""
    return "c-" + hashlib.sha256(customer.encode()).hexdigest()[:20]


def platform_security(rt: Any) -> list[dict[str, Any]]:
    from openkcm.domain.audit import read_events

    return read_events(PLATFORM_TENANT, since="2000-01-01T00:00:00+00:00", kinds={"security"})


def deliver(rt: Any, secret: bytes, body: dict, **kwargs: Any) -> dict[str, Any]:
    queued: list[dict[str, Any]] = []
    headers, raw = signed(secret, body, rt.clock.timestamp())
    status, reply = provisioning.accept_webhook(rt, headers, raw, queued.append, **kwargs)
    assert status == 202, reply
    return {"accepted": reply, "result": provisioning.process_event(rt, queued[0])}


@pytest.fixture
def api(rt) -> Iterator[Any]:
    """The CMK API's Lambda handler on this test's runtime."""
    from openkcm.api.context import bind_runtime
    from tests.api.conftest import HandlerClient

    bind_runtime(rt)
    yield HandlerClient()
    bind_runtime(None)


# ---- 1. tenant-id squatting ----------------------------------------------------------------------------
def test_a_default_id_squatted_through_the_api_gives_the_customer_its_digest_tenant(rt, secret, api):
    from tests.api.conftest import claims

    squat = api.call("POST", "/v1/accounts/acct-a/tenants", claims("acct-a"), body={"tenant_id": "globex-123"})
    assert squat.status == 201, squat.text

    first = deliver(rt, secret, marketplace_event(customer="globex-123"))
    mine = digest_id("globex-123")
    assert first["accepted"]["tenant_id"] == mine
    assert (first["result"]["tenant_id"], first["result"]["status"]) == (mine, "Ready")
    tenant = TenantModel.get(mine, "TENANT")
    assert (tenant.account_id, tenant.status) == ("globex-123", "Ready")
    squatter = TenantModel.get("globex-123", "TENANT")
    assert (squatter.account_id, squatter.status) == ("acct-a", "Ready")
    fallback = [e for e in platform_security(rt) if e["operation"] == "ResolveMarketplaceTenant"]
    assert fallback and fallback[0]["details"]["tenant"] == mine
    assert fallback[0]["details"]["default_tenant"] == "globex-123"

    # every later event of the customer lands on the same tenant; the squatter's stays as it is
    again = deliver(rt, secret, marketplace_event(customer="globex-123"))
    assert again["result"]["tenant_id"] == mine
    rt.clock.advance(60)
    off = deliver(rt, secret, marketplace_event("service_disabled", customer="globex-123",
                                                timestamp="2026-01-15T11:00:00Z"))
    assert [d["tenant_id"] for d in off["result"]["deleted"]] == [mine]
    assert TenantModel.get(mine, "TENANT").status == "Deleted"
    assert (TenantModel.get("globex-123", "TENANT").account_id,
            TenantModel.get("globex-123", "TENANT").status) == ("acct-a", "Ready")
    back = deliver(rt, secret, marketplace_event(customer="globex-123", timestamp="2026-01-15T12:00:00Z"))
    assert (back["result"]["tenant_id"], back["result"]["status"]) == (mine, "Ready")
    assert [t.tenant_id for t in rt.tenants.list_for_account("globex-123")] == [mine]


def test_customers_differing_only_in_case_get_separate_tenants(rt, secret):
    upper = deliver(rt, secret, marketplace_event(customer="Acme"))["result"]
    lower = deliver(rt, secret, marketplace_event(customer="acme"))["result"]
    assert (upper["tenant_id"], upper["status"]) == ("acme", "Ready")
    assert (lower["tenant_id"], lower["status"]) == (digest_id("acme"), "Ready")
    assert TenantModel.get("acme", "TENANT").account_id == "Acme"
    assert TenantModel.get(digest_id("acme"), "TENANT").account_id == "acme"
    rt.clock.advance(60)
    off = deliver(rt, secret, marketplace_event("service_disabled", customer="acme",
                                                timestamp="2026-01-15T11:00:00Z"))["result"]
    assert [d["tenant_id"] for d in off["deleted"]] == [digest_id("acme")]
    assert TenantModel.get("acme", "TENANT").status == "Ready"  # Acme's tenant is untouched
    again = deliver(rt, secret, marketplace_event(customer="acme", timestamp="2026-01-15T12:00:00Z"))
    assert again["result"]["tenant_id"] == digest_id("acme")


def test_the_api_refuses_ids_of_the_marketplace_digest_form(rt, api):
    """Otherwise an account admin could squat the fallback id as well."""
    from tests.api.conftest import claims

    reply = api.call("POST", "/v1/accounts/acct-a/tenants", claims("acct-a"),
                     body={"tenant_id": digest_id("globex-123")})
    assert reply.status == 400, reply.text
    with pytest.raises(TenantModel.DoesNotExist):
        TenantModel.get(digest_id("globex-123"), "TENANT")


# ---- 2. refusal floods ----------------------------------------------------------------------------------
def test_a_forged_flood_from_one_address_is_audited_under_a_throttle(rt, secret, monkeypatch):
    monkeypatch.setattr(provisioning, "WEBHOOK_REFUSAL_AUDIT_SECONDS", 1.0, raising=False)
    headers, raw = signed(b"not-the-secret", marketplace_event(), rt.clock.timestamp())
    for _ in range(50):
        status, _ = provisioning.accept_webhook(rt, headers, raw, lambda m: None, client_address="203.0.113.9")
        assert status == 401
    flood = [e for e in platform_security(rt) if e["client_address"] == "203.0.113.9"]
    assert 1 <= len(flood) <= 2 and flood[0]["reason"] == "signature forged"

    # another address is recorded at once
    provisioning.accept_webhook(rt, headers, raw, lambda m: None, client_address="198.51.100.7")
    assert [e["reason"] for e in platform_security(rt) if e["client_address"] == "198.51.100.7"] == [
        "signature forged"
    ]

    # the next record of the flooding address carries the number refused without a record
    import time

    time.sleep(1.1)
    provisioning.accept_webhook(rt, headers, raw, lambda m: None, client_address="203.0.113.9")
    flood = [e for e in platform_security(rt) if e["client_address"] == "203.0.113.9"]
    assert len(flood) <= 3
    assert sum(1 + int(e["details"].get("suppressed", "0")) for e in flood) == 51
    assert "more since the last record" in flood[-1]["reason"]


# ---- 3. rotating the webhook secret --------------------------------------------------------------------
def rotate_local(rt: Any) -> bytes:
    path = rt.settings.data_dir / "secrets" / "webhook-secret"
    new = uuid.uuid4().hex.encode() * 2
    path.write_bytes(new)
    assert path.stat().st_mode & 0o777 == 0o600
    return new


def test_a_rotated_local_secret_is_taken_up_by_the_warm_runtime(rt, secret):
    new = rotate_local(rt)
    rt.clock.advance(61)  # the reload is rate-limited from the process's first load
    deliver(rt, new, marketplace_event(customer="rotated-1"))
    headers, raw = signed(secret, marketplace_event(customer="rotated-2"), rt.clock.timestamp())
    assert provisioning.accept_webhook(rt, headers, raw, lambda m: None)[0] == 401  # no previous locally


def test_a_forged_flood_reloads_the_secret_at_most_once_a_minute(rt, secret, monkeypatch):
    loads = []
    real = getattr(provisioning, "load_webhook_secrets", provisioning.load_webhook_secret)

    def counting(*args: Any, **kwargs: Any) -> Any:
        loads.append(rt.clock.timestamp())
        return real(*args, **kwargs)

    monkeypatch.setattr(provisioning, "load_webhook_secrets", counting, raising=False)
    rt.clock.advance(61)
    for step in range(120):
        headers, raw = signed(b"forged", marketplace_event(), rt.clock.timestamp())
        assert provisioning.accept_webhook(rt, headers, raw, lambda m: None, client_address="x")[0] == 401
        if step % 10 == 9:
            rt.clock.advance(10)  # 120 requests over 2 minutes
    assert 1 <= len(loads) <= 3
    assert all(b - a >= 60 for a, b in itertools.pairwise(loads))


def test_secrets_manager_rotation_with_the_previous_version_during_the_grace(rt, monkeypatch):
    import boto3

    client = boto3.client("secretsmanager", region_name=rt.settings.region)
    arn = client.create_secret(Name=f"{rt.settings.table_prefix}-webhook", SecretString="old-" + "a" * 40)["ARN"]
    monkeypatch.setattr(rt.settings, "webhook_secret_arn", arn)
    old = provisioning.webhook_secret(rt)
    assert old == b"old-" + b"a" * 40

    client.put_secret_value(SecretId=arn, SecretString="new-" + "b" * 40)
    rt.clock.advance(61)
    deliver(rt, b"new-" + b"b" * 40, marketplace_event(customer="sm-rotated-1"))
    deliver(rt, old, marketplace_event(customer="sm-rotated-2"))  # AWSPREVIOUS, during the grace

    rt.clock.advance(provisioning.PREVIOUS_SECRET_GRACE_SECONDS + 60)
    headers, raw = signed(old, marketplace_event(customer="sm-rotated-3"), rt.clock.timestamp())
    assert provisioning.accept_webhook(rt, headers, raw, lambda m: None)[0] == 401
    deliver(rt, b"new-" + b"b" * 40, marketplace_event(customer="sm-rotated-4"))


def test_an_id_taken_between_the_look_and_the_claim_is_decided_again(rt, secret, monkeypatch):
    from openkcm.ops.tenants import create_platform_tenant

    real = provisioning.customer_tenant_id
    looks: list[str] = []

    def late_squatter(customer: str) -> Any:
        chosen = real(customer)
        if not looks:  # the API creates the tenant right after the worker looked
            create_platform_tenant(rt, "acct-b", tenant_id="initech-7", actor="test", source="api")
        looks.append(chosen.tenant_id)
        return chosen

    monkeypatch.setattr(provisioning, "customer_tenant_id", late_squatter)
    result = provisioning.process_event(rt, marketplace_event(customer="initech-7"))
    assert looks == ["initech-7", digest_id("initech-7")]
    assert (result["tenant_id"], result["status"]) == (digest_id("initech-7"), "Ready")
    assert TenantModel.get("initech-7", "TENANT").account_id == "acct-b"
