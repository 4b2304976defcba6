"""DECISIONS 19 and seed 002 REQ-030: the hierarchy is real. Disabling the L1 key in the customer's store
(moto DisableKey; the SoftHSM key destroyed) or losing the path to it leaves the tenant's keys usable from
cache for the grace period and then fails closed — while another tenant keeps working. Time moves through
an injected ManualClock; nothing sleeps."""

from __future__ import annotations

import os
import socket

import pytest

from openkcm.clock import ManualClock
from openkcm.domain.audit import read_events
from openkcm.domain.keystores.base import KeystoreKeyDisabled, KeystoreKeyNotFound, KeystoreUnreachable
from openkcm.errors import KeyUnavailable
from openkcm.ops import keystores as ks
from openkcm.ops.runtime import build_runtime
from openkcm.ops.tenants import create_platform_tenant
from tests.keystores.conftest import destroy_hsm_key, make_hsm_key

ACCOUNT = "acme-corp-12345"
TTL, GRACE = 60.0, 300.0


@pytest.fixture
def clock_runtime(ks_settings):
    clock = ManualClock()
    settings = ks_settings.model_copy(update={"l2_cache_ttl_seconds": TTL, "l1_grace_seconds": GRACE})
    rt = build_runtime(settings, clock=clock, create=True)
    yield rt, clock
    rt.close()


def tenant_with_data(rt):
    tenant = create_platform_tenant(rt, ACCOUNT, actor="test", source="cli")
    material = os.urandom(32)
    version, blob = rt.keyring.seal_object(tenant.tenant_id, "obj-1", material)
    return tenant.tenant_id, (version, blob, material)


def readable(rt, tenant_id, obj) -> bool:
    version, blob, material = obj
    return rt.keyring.open_object(tenant_id, "obj-1", version, blob) == material


def security_ops(tenant_id):
    return [e["operation"] for e in read_events(tenant_id, since="2000-01-01T00:00:00+00:00") if e["kind"] == "security"]


def test_disabled_l1_fails_closed_after_grace_while_other_tenant_works(clock_runtime, kms, softhsm):
    rt, clock = clock_runtime
    aws_store = ks.create_keystore(rt, ACCOUNT, "aws-kms", "kms", {"region": "us-east-1"}, {}, "alice")
    hsm_store = ks.create_keystore(
        rt, ACCOUNT, "pkcs11", "hsm", {"module_path": softhsm["module"], "token_label": softhsm["token"]},
        {"pin": softhsm["pin"]}, "alice",
    )
    byok_key = kms.create_key()["KeyMetadata"]
    other_key = kms.create_key()["KeyMetadata"]
    make_hsm_key(softhsm, "grace-hyok")

    byok, byok_obj = tenant_with_data(rt)
    hyok, hyok_obj = tenant_with_data(rt)
    other, other_obj = tenant_with_data(rt)
    for tenant_id, store, ref in (
        (byok, aws_store, byok_key["Arn"]), (hyok, hsm_store, "label:grace-hyok"), (other, aws_store, other_key["Arn"]),
    ):
        [result] = ks.link_l1_key(rt, ACCOUNT, store.keystore_id, ref, [tenant_id], "alice")
        assert result["ok"], result
    for tenant_id, obj in ((byok, byok_obj), (hyok, hyok_obj), (other, other_obj)):
        assert readable(rt, tenant_id, obj)  # unwrapped through L1 now, and cached

    # The customers revoke: KMS key disabled, HSM key destroyed.
    kms.disable_key(KeyId=byok_key["KeyId"])
    destroy_hsm_key(softhsm, "grace-hyok")

    clock.advance(TTL + 1)  # past the cache TTL, inside the grace period: served from cache
    for tenant_id, obj in ((byok, byok_obj), (hyok, hyok_obj), (other, other_obj)):
        assert readable(rt, tenant_id, obj)

    # The periodic probe notices and says so in the audit trail.
    probe = {r["tenant_id"]: r for r in ks.probe_l1_health(rt)}
    assert not probe[byok]["ok"] and not probe[hyok]["ok"] and probe[other]["ok"]
    assert security_ops(byok) == ["L1KeyUnavailable"] and security_ops(hyok) == ["L1KeyUnavailable"]
    assert security_ops(other) == []

    clock.advance(GRACE)  # past the grace period: fail closed, with a clear error
    with pytest.raises(KeystoreKeyDisabled) as err:
        readable(rt, byok, byok_obj)
    assert "Disabled" in err.value.message and isinstance(err.value, KeyUnavailable)
    with pytest.raises(KeystoreKeyNotFound):
        readable(rt, hyok, hyok_obj)
    with pytest.raises(KeyUnavailable):
        rt.keyring.seal_object(byok, "obj-2", os.urandom(32))
    assert readable(rt, other, other_obj)  # the other tenant keeps working
    rt.keyring.seal_object(other, "obj-2", os.urandom(32))

    # Re-enabling the key restores the tenant (the customer's decision, both ways).
    kms.enable_key(KeyId=byok_key["KeyId"])
    assert readable(rt, byok, byok_obj)


def test_unreachable_keystore_is_bridged_by_the_grace_period(clock_runtime, kms, monkeypatch):
    rt, clock = clock_runtime
    store = ks.create_keystore(rt, ACCOUNT, "aws-kms", "kms", {"region": "us-east-1"}, {}, "alice")
    key = kms.create_key()["KeyMetadata"]
    tenant_id, obj = tenant_with_data(rt)
    [result] = ks.link_l1_key(rt, ACCOUNT, store.keystore_id, key["Arn"], [tenant_id], "alice")
    assert result["ok"]
    assert readable(rt, tenant_id, obj)

    with socket.socket() as sock:  # the network path to the keystore goes away
        sock.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}"
    monkeypatch.setenv("OPENKCM_KMS_ENDPOINTS_ALLOWED", dead)  # a test's address; deployments: AWS hosts only
    ks.update_keystore(rt, ACCOUNT, store.keystore_id, config={"region": "us-east-1", "endpoint_url": dead}, actor="ops")

    clock.advance(TTL + GRACE - 5)
    assert readable(rt, tenant_id, obj)  # an outage inside the grace period is invisible to clients
    clock.advance(10)
    with pytest.raises(KeystoreUnreachable):
        readable(rt, tenant_id, obj)
    # past the grace period the unwrapped L2 key is gone from memory too, not only unused
    assert not [k for k in rt.keyring._cache if k[0] == tenant_id]
