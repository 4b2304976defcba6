"""Linking an L1 key to tenants (the one change-parent operation): validation, re-wrap of every retained
L2 version, atomic switch, rollback on failure, return to the platform key — on moto and SoftHSM2."""

from __future__ import annotations

import os

import pytest

from openkcm.domain.audit import read_events
from openkcm.errors import InvalidRequest, NotFound, WrongState
from openkcm.ops import keystores as ks
from openkcm.ops.tenants import create_platform_tenant
from openkcm.storage import TenantKeyModel, TenantModel
from tests.keystores.conftest import make_hsm_key

ACCOUNT = "acme-corp-12345"


def events_of(tenant_id):
    return read_events(tenant_id, since="2000-01-01T00:00:00+00:00")


def new_tenant(runtime, account=ACCOUNT):
    return create_platform_tenant(runtime, account, actor="test", source="cli")


def seal_some(runtime, tenant_id, n=2):
    objects = {}
    for i in range(n):
        material = os.urandom(32)
        version, blob = runtime.keyring.seal_object(tenant_id, f"obj-{i}", material)
        objects[f"obj-{i}"] = (version, blob, material)
    return objects


def assert_readable(runtime, tenant_id, objects):
    for object_id, (version, blob, material) in objects.items():
        assert runtime.keyring.open_object(tenant_id, object_id, version, blob) == material


def aws_keystore(runtime, actor="alice"):
    return ks.create_keystore(runtime, ACCOUNT, "aws-kms", "acme prod KMS", {"region": "us-east-1"}, {}, actor)


def test_link_rewraps_every_retained_version_and_switches(ks_runtime, kms):
    rt = ks_runtime
    tenant = new_tenant(rt)
    other = new_tenant(rt)
    before = seal_some(rt, tenant.tenant_id)
    rt.keyring.rotate(tenant.tenant_id)  # two retained L2 versions
    after_rotation = seal_some(rt, tenant.tenant_id)
    arn = kms.create_key()["KeyMetadata"]["Arn"]
    store = aws_keystore(rt)
    events = []
    results = ks.link_l1_key(rt, ACCOUNT, store.keystore_id, arn, [tenant.tenant_id, other.tenant_id], "alice",
                             progress=events.append)
    assert [r["ok"] for r in results] == [True, True]
    assert results[0]["versions_rewrapped"] == 2 and results[1]["versions_rewrapped"] == 1
    phases = [e["phase"] for e in events if e["tenant_id"] == tenant.tenant_id]
    assert phases == ["validate", "rewrap", "rewrap", "switch", "done"]

    fresh = TenantModel.get(tenant.tenant_id, TenantModel.SORT_KEY)
    assert (fresh.key_mode, fresh.l1_state, fresh.l1_key_ref) == ("byok", "Active", f"l1:{store.keystore_id}/{arn}")
    assert fresh.epoch > tenant.epoch and results[0]["epoch"] == fresh.epoch
    for record in TenantKeyModel.query(tenant.tenant_id, TenantKeyModel.sk.startswith("L2#")):
        assert (record.parent_kind, record.parent_ref) == ("l1", fresh.l1_key_ref)
    # Data sealed before the switch opens afterwards, through the L1 key now.
    rt.keyring.invalidate(tenant.tenant_id)
    assert_readable(rt, tenant.tenant_id, before | after_rotation)
    # A rotation after linking stays under the L1 key.
    version = rt.keyring.rotate(tenant.tenant_id)
    assert rt.keyring.record(tenant.tenant_id, version).parent_ref == fresh.l1_key_ref
    assert ks.get_keystore(rt, ACCOUNT, store.keystore_id).status == "Connected"
    ops = [e["operation"] for e in events_of(tenant.tenant_id)]
    assert "ChangeParentKey" in ops

    # The keystore cannot go while tenants use it; returning them to the platform key frees it.
    with pytest.raises(WrongState):
        ks.delete_keystore(rt, ACCOUNT, store.keystore_id, "alice")
    for t in (tenant, other):
        back = ks.return_to_platform(rt, t.tenant_id, "alice")
        assert back["ok"] and back["key_mode"] == "platform-managed" and back["l1_state"] == "Inactive"
    for record in TenantKeyModel.query(tenant.tenant_id, TenantKeyModel.sk.startswith("L2#")):
        assert record.parent_kind == "root"
    assert_readable(rt, tenant.tenant_id, before | after_rotation)
    ks.delete_keystore(rt, ACCOUNT, store.keystore_id, "alice")
    with pytest.raises(NotFound):
        ks.get_keystore(rt, ACCOUNT, store.keystore_id)


def test_failed_validation_rolls_back_and_data_stays_readable(ks_runtime, kms):
    rt = ks_runtime
    tenant = new_tenant(rt)
    objects = seal_some(rt, tenant.tenant_id)
    records_before = {r.sk: (bytes(r.wrapped), r.parent_ref) for r in rt.keyring.records(tenant.tenant_id)}
    meta = kms.create_key()["KeyMetadata"]
    kms.disable_key(KeyId=meta["KeyId"])
    store = aws_keystore(rt)
    events = []
    [result] = ks.link_l1_key(rt, ACCOUNT, store.keystore_id, meta["Arn"], [tenant.tenant_id], "alice",
                              progress=events.append)
    assert not result["ok"]
    assert result["error"]["error"] == "keystore_key_disabled" and "Enable the key" in result["error"]["fix"]
    assert events[-1]["phase"] == "rolled_back"
    fresh = TenantModel.get(tenant.tenant_id, TenantModel.SORT_KEY)
    assert fresh.key_mode == "platform-managed" and fresh.l1_key_ref is None
    assert fresh.l1_state == "Error" and "is Disabled" in fresh.l1_reason
    assert {r.sk: (bytes(r.wrapped), r.parent_ref) for r in rt.keyring.records(tenant.tenant_id)} == records_before
    rt.keyring.invalidate(tenant.tenant_id)
    assert_readable(rt, tenant.tenant_id, objects)
    failures = [e for e in events_of(tenant.tenant_id) if e["operation"] == "ChangeParentKey"]
    assert failures and failures[-1]["result"] == "failure"
    assert ks.get_keystore(rt, ACCOUNT, store.keystore_id).status == "Error"


def test_failure_during_rewrap_rolls_back_the_whole_tenant(ks_runtime, kms, monkeypatch):
    """The key passes validation, then the keystore goes away half-way through the re-wrap: nothing of the
    tenant changes (no version is left under the new parent)."""
    from openkcm.domain.keystores.aws_kms import AwsKmsConnector
    from openkcm.domain.keystores.base import KeystoreUnreachable

    rt = ks_runtime
    tenant = new_tenant(rt)
    rt.keyring.rotate(tenant.tenant_id)
    objects = seal_some(rt, tenant.tenant_id)
    arn = kms.create_key()["KeyMetadata"]["Arn"]
    store = aws_keystore(rt)
    real_wrap = AwsKmsConnector._wrap
    calls = {"n": 0}

    def flaky_wrap(self, key_ref, plaintext, context):
        calls["n"] += 1
        if calls["n"] == 3:  # validation's wrap is 1, version 1 is 2, version 2 fails
            raise ConnectionResetError("peer went away")
        return real_wrap(self, key_ref, plaintext, context)

    monkeypatch.setattr(AwsKmsConnector, "_wrap", flaky_wrap)
    [result] = ks.link_l1_key(rt, ACCOUNT, store.keystore_id, arn, [tenant.tenant_id], "alice")
    assert not result["ok"] and result["error"]["error"] == KeystoreUnreachable.code
    assert all(r.parent_kind == "root" for r in rt.keyring.records(tenant.tenant_id))
    rt.keyring.invalidate(tenant.tenant_id)
    assert_readable(rt, tenant.tenant_id, objects)


def test_hyok_link_on_softhsm_and_other_accounts_are_invisible(ks_runtime, softhsm):
    rt = ks_runtime
    tenant = new_tenant(rt)
    objects = seal_some(rt, tenant.tenant_id)
    make_hsm_key(softhsm, "acme-hyok")
    store = ks.create_keystore(
        rt, ACCOUNT, "pkcs11", "on-prem HSM",
        {"module_path": softhsm["module"], "token_label": softhsm["token"]}, {"pin": softhsm["pin"]}, "alice",
    )
    checks = ks.test_keystore(rt, ACCOUNT, store.keystore_id, "label:acme-hyok", actor="alice")
    assert [c["name"] for c in checks] == ["configuration", "connection", "key", "round_trip"]
    assert all(c["ok"] for c in checks)
    bad = ks.test_keystore(rt, ACCOUNT, store.keystore_id, "label:nope", actor="alice")
    assert bad[-1] == {"name": "key", "ok": False, "message": bad[-1]["message"], "fix": bad[-1]["fix"]}
    assert not bad[-1]["ok"] and "nope" in bad[-1]["message"] and bad[-1]["fix"]
    assert any(k["key_ref"] == "label:acme-hyok" for k in ks.list_keystore_keys(rt, ACCOUNT, store.keystore_id))

    [result] = ks.link_l1_key(rt, ACCOUNT, store.keystore_id, "label:acme-hyok", [tenant.tenant_id], "alice")
    assert result["ok"] and result["key_mode"] == "hyok"
    rt.keyring.invalidate(tenant.tenant_id)
    assert_readable(rt, tenant.tenant_id, objects)

    # Another account sees neither the keystore nor the tenant.
    with pytest.raises(NotFound):
        ks.get_keystore(rt, "globex-999", store.keystore_id)
    outsider = ks.create_keystore(rt, "globex-999", "aws-kms", "x", {"region": "us-east-1"}, {}, "mallory")
    with pytest.raises(NotFound):
        ks.link_l1_key(rt, "globex-999", outsider.keystore_id, "alias/x", [tenant.tenant_id], "mallory")


def test_probe_records_l1_health_and_audits_a_security_event(ks_runtime, kms):
    rt = ks_runtime
    tenant = new_tenant(rt)
    meta = kms.create_key()["KeyMetadata"]
    store = aws_keystore(rt)
    [linked] = ks.link_l1_key(rt, ACCOUNT, store.keystore_id, meta["Arn"], [tenant.tenant_id], "alice")
    assert linked["ok"]
    assert [r["ok"] for r in ks.probe_l1_health(rt) if r["tenant_id"] == tenant.tenant_id] == [True]
    kms.disable_key(KeyId=meta["KeyId"])
    [probe] = [r for r in ks.probe_l1_health(rt) if r["tenant_id"] == tenant.tenant_id]
    assert not probe["ok"] and probe["l1_state"] == "Error" and "Disabled" in probe["message"] and probe["fix"]
    fresh = TenantModel.get(tenant.tenant_id, TenantModel.SORT_KEY)
    assert fresh.l1_state == "Error" and "Disabled" in fresh.l1_reason
    security = [e for e in events_of(tenant.tenant_id) if e["kind"] == "security"]
    assert [e["operation"] for e in security] == ["L1KeyUnavailable"]
    kms.enable_key(KeyId=meta["KeyId"])
    ks.probe_l1_health(rt)
    assert TenantModel.get(tenant.tenant_id, TenantModel.SORT_KEY).l1_state == "Active"
    assert [e["operation"] for e in events_of(tenant.tenant_id) if e["kind"] == "security"] == [
        "L1KeyUnavailable", "L1KeyRecovered"]


def test_probe_notices_a_key_that_may_no_longer_decrypt(ks_runtime, kms, monkeypatch):
    """The customer's kill switch: Encrypt/Decrypt taken out of the key policy, DescribeKey left in. The
    probe wraps and unwraps a random value, so it sees what the next cache miss would."""
    from openkcm.domain.keystores.aws_kms import AwsKmsConnector
    from openkcm.domain.keystores.base import KeystorePermissionMissing

    rt = ks_runtime
    tenant = new_tenant(rt)
    meta = kms.create_key()["KeyMetadata"]
    store = aws_keystore(rt)
    [linked] = ks.link_l1_key(rt, ACCOUNT, store.keystore_id, meta["Arn"], [tenant.tenant_id], "alice")
    assert linked["ok"]

    def denied(self, *args, **kwargs):
        raise KeystorePermissionMissing("kms:Decrypt is not allowed by the key policy", fix="Allow it again.")

    monkeypatch.setattr(AwsKmsConnector, "_unwrap", denied)
    ks.resolver(rt).forget(ACCOUNT, store.keystore_id)
    [probe] = [r for r in ks.probe_l1_health(rt) if r["tenant_id"] == tenant.tenant_id]
    assert not probe["ok"] and probe["l1_state"] == "Error" and "Decrypt" in probe["message"]
    assert [e["operation"] for e in events_of(tenant.tenant_id) if e["kind"] == "security"] == ["L1KeyUnavailable"]


def test_switch_survives_a_concurrent_tenant_update_and_a_broken_listener(ks_runtime, kms):
    rt = ks_runtime
    tenant = new_tenant(rt)
    objects = seal_some(rt, tenant.tenant_id)
    arn = kms.create_key()["KeyMetadata"]["Arn"]
    store = aws_keystore(rt)

    def listener(event):
        if event["phase"] == "switch":
            rt.tenants.bump_epoch(tenant.tenant_id)  # e.g. a health probe or a disable elsewhere touches the record
        if event["phase"] == "done":
            raise RuntimeError("the client went away")

    [result] = ks.link_l1_key(rt, ACCOUNT, store.keystore_id, arn, [tenant.tenant_id], "alice", progress=listener)
    assert result["ok"], result
    rt.keyring.invalidate(tenant.tenant_id)
    assert_readable(rt, tenant.tenant_id, objects)


def test_rotation_during_the_link_rolls_the_link_back(ks_runtime, kms):
    rt = ks_runtime
    tenant = new_tenant(rt)
    objects = seal_some(rt, tenant.tenant_id)
    arn = kms.create_key()["KeyMetadata"]["Arn"]
    store = aws_keystore(rt)

    def listener(event):
        if event["phase"] == "switch":
            rt.keyring.rotate(tenant.tenant_id)  # a new L2 version the re-wrap did not see

    [result] = ks.link_l1_key(rt, ACCOUNT, store.keystore_id, arn, [tenant.tenant_id], "alice", progress=listener)
    assert not result["ok"] and result["error"]["error"] == "concurrent_update"
    assert [r.parent_kind for r in rt.keyring.records(tenant.tenant_id)] == ["root", "root"]
    assert TenantModel.get(tenant.tenant_id, TenantModel.SORT_KEY).key_mode == "platform-managed"
    rt.keyring.invalidate(tenant.tenant_id)
    assert_readable(rt, tenant.tenant_id, objects)
    with pytest.raises(NotFound):
        ks.return_to_platform(rt, tenant.tenant_id, "mallory", account_id="globex-999")


def test_aws_trust_template_names_openkcm_and_the_accounts_own_external_id(ks_runtime, kms):
    from openkcm.domain.keystores.aws_kms import external_id_for

    arn = kms.create_key()["KeyMetadata"]["Arn"]
    template = ks.aws_trust_template(ks_runtime, ACCOUNT, key_arn=arn)
    statement = template["role_trust_policy"]["Statement"][0]
    assert statement["Action"] == "sts:AssumeRole" and statement["Principal"]["AWS"] == template["openkcm_principal"]
    # OpenKCM sets the external id from the account (AWS's confused-deputy guidance), and uses that value
    assert statement["Condition"]["StringEquals"]["sts:ExternalId"] == template["external_id"] == external_id_for(ACCOUNT)
    store = ks.create_keystore(
        ks_runtime, ACCOUNT, "aws-kms", "role", {"region": "us-east-1", "role_arn": "arn:aws:iam::123456789012:role/r"},
        {}, "alice",
    )
    assert ks._connector(ks_runtime, store)._external_id == external_id_for(ACCOUNT)
    with pytest.raises(InvalidRequest) as chosen:
        ks.create_keystore(ks_runtime, ACCOUNT, "aws-kms", "mine", {"region": "us-east-1"}, {"external_id": "mine"}, "a")
    assert external_id_for(ACCOUNT) in chosen.value.message
    assert set(template["key_policy_statement"]["Action"]) == {"kms:Encrypt", "kms:Decrypt", "kms:DescribeKey"}
    assert template["key_policy_statement"]["Principal"]["AWS"].startswith(f"arn:aws:iam::{arn.split(':')[4]}:role/")


def test_a_tenant_that_is_not_ready_is_reported_not_fatal(ks_runtime, kms):
    rt = ks_runtime
    ready, disabled = new_tenant(rt), new_tenant(rt)
    rt.tenants.set_status(disabled.tenant_id, "Disabled")
    arn = kms.create_key()["KeyMetadata"]["Arn"]
    store = aws_keystore(rt)
    results = ks.link_l1_key(rt, ACCOUNT, store.keystore_id, arn, [disabled.tenant_id, ready.tenant_id], "alice")
    assert [r["ok"] for r in results] == [False, True]
    assert results[0]["error"]["error"] == "wrong_state"


def test_a_root_rewrap_racing_a_byok_link_does_not_undo_it(ks_runtime, kms, monkeypatch):
    """The root rotation lists the tenant's root-wrapped versions, a BYOK link completes, then the
    re-wrap runs: it must leave the version under the customer's key (disabling that key cuts the data
    off), not move it back under the root key."""
    from openkcm.ops import rotation

    rt = ks_runtime
    tenant_id = create_platform_tenant(rt, ACCOUNT, actor="test", source="cli").tenant_id
    material = os.urandom(32)
    version, blob = rt.keyring.seal_object(tenant_id, "obj-1", material)
    rt.root.rotate()  # the version's root blob is now an old root version's
    meta = kms.create_key()["KeyMetadata"]
    store = ks.create_keystore(rt, ACCOUNT, "aws-kms", "kms", {"region": "us-east-1"}, {}, "alice")
    rewrap = rt.keyring.rewrap_version

    def link_first(*args, **kwargs):
        monkeypatch.setattr(rt.keyring, "rewrap_version", rewrap)
        [linked] = ks.link_l1_key(rt, ACCOUNT, store.keystore_id, meta["Arn"], [tenant_id], "alice")
        assert linked["ok"]
        return rewrap(*args, **kwargs)

    monkeypatch.setattr(rt.keyring, "rewrap_version", link_first)
    assert rotation.rewrap_root_children(rt, tenant_id) == 0
    assert rt.keyring.record(tenant_id, version).parent_kind != "root"
    kms.disable_key(KeyId=meta["KeyId"])  # the customer's kill switch still works
    rt.keyring.invalidate(tenant_id)
    with pytest.raises(Exception):  # noqa: B017 (the keystore's own error type)
        rt.keyring.open_object(tenant_id, "obj-1", version, blob)
