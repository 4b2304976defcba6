"""Keystore credentials are sealed by the root key and never visible: not in any stored DynamoDB item,
not in the log lines of representative operations, not in audit records, not in what the API returns,
not in error messages."""

from __future__ import annotations

import base64
import json
import logging
import secrets

import boto3
import pytest

from openkcm.domain.credentials import CredentialVault, Secrets
from openkcm.errors import IntegrityFailure
from openkcm.ops import keystores as ks
from openkcm.ops.tenants import create_platform_tenant
from tests.keystores.conftest import make_hsm_key, raw_items

ACCOUNT = "acme-corp-12345"


def forms(value: str) -> list[str]:
    """The value and the encodings it could leak in."""
    raw = value.encode()
    return [value, base64.b64encode(raw).decode(), base64.urlsafe_b64encode(raw).decode().rstrip("="), raw.hex()]


def test_secrets_never_stored_logged_audited_or_returned(ks_runtime, settings, softhsm, kms, caplog):
    rt = ks_runtime
    caplog.set_level(logging.INFO)
    caplog.set_level(logging.DEBUG, logger="openkcm")
    aws_secret = secrets.token_urlsafe(30)
    access_key = "AKIA" + secrets.token_hex(8).upper()
    azure_secret = "az~" + secrets.token_urlsafe(24)
    values = [aws_secret, access_key, azure_secret, softhsm["pin"]]

    aws = ks.create_keystore(
        rt, ACCOUNT, "aws-kms", "kms", {"region": "us-east-1"},
        {"access_key_id": access_key, "secret_access_key": aws_secret}, "alice",
    )
    hsm = ks.create_keystore(
        rt, ACCOUNT, "pkcs11", "hsm", {"module_path": softhsm["module"], "token_label": softhsm["token"]},
        {"pin": softhsm["pin"]}, "alice",
    )
    azure = ks.create_keystore(
        rt, ACCOUNT, "azure-key-vault", "vault",
        {"vault_url": "https://acme-l1.vault.azure.net", "tenant_id": "3f1c2b7a-9d4e-4c1b-8a6f-2e5d7c9b1a04",
         "client_id": "8b7e6d5c-4a3b-4c2d-9e1f-0a1b2c3d4e5f"},
        {"client_secret": azure_secret}, "alice",
    )
    # Representative operations that use the secrets: tests, a link, a failure, an update.
    make_hsm_key(softhsm, "cred-scan")
    arn = kms.create_key()["KeyMetadata"]["Arn"]
    assert all(c["ok"] for c in ks.test_keystore(rt, ACCOUNT, aws.keystore_id, arn, actor="alice"))
    assert all(c["ok"] for c in ks.test_keystore(rt, ACCOUNT, hsm.keystore_id, "label:cred-scan", actor="alice"))
    tenant = create_platform_tenant(rt, ACCOUNT, actor="test", source="cli")
    assert ks.link_l1_key(rt, ACCOUNT, hsm.keystore_id, "label:cred-scan", [tenant.tenant_id], "alice")[0]["ok"]
    ks.update_keystore(rt, ACCOUNT, hsm.keystore_id, secrets={"pin": "0000"}, actor="alice")
    failed = ks.test_keystore(rt, ACCOUNT, hsm.keystore_id, actor="alice")
    assert not failed[-1]["ok"] and "PIN" in failed[-1]["message"]
    ks.update_keystore(rt, ACCOUNT, hsm.keystore_id, secrets={"pin": softhsm["pin"]}, actor="alice")

    # 1. What the API returns.
    views = [ks.keystore_view(item) for item in ks.list_keystores(rt, ACCOUNT)]
    assert {v["keystore_id"] for v in views} == {aws.keystore_id, hsm.keystore_id, azure.keystore_id}
    assert all(v["secrets_set"] for v in views)
    dumped = json.dumps(views) + json.dumps(failed)
    # 2. Every item of every table of this deployment, raw.
    pages = boto3.client("dynamodb", region_name="us-east-1").get_paginator("list_tables").paginate()
    tables = [t for page in pages for t in page["TableNames"] if t.startswith(settings.table_prefix + "-")]
    assert f"{settings.table_prefix}-keystores" in tables
    stored = "".join(repr(raw_items(t)) for t in tables)
    # 3. Every log line (message and structured extras).
    logged = "\n".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)
    assert "keystore call" in logged  # the connector did log its calls
    for value in values:
        for form in forms(value):
            assert form not in dumped, f"secret leaked into an API view: {value[:3]}..."
            assert form not in stored, f"secret leaked into DynamoDB: {value[:3]}..."
            assert form not in logged, f"secret leaked into the logs: {value[:3]}..."


def test_sealed_credentials_are_bound_to_account_and_keystore(ks_runtime):
    vault = CredentialVault(ks_runtime.root)
    blob = vault.seal(ACCOUNT, "ks-aaaa", {"pin": "1234"})
    assert b"1234" not in blob
    assert vault.open(ACCOUNT, "ks-aaaa", blob)["pin"] == "1234"
    with pytest.raises(IntegrityFailure):
        vault.open(ACCOUNT, "ks-bbbb", blob)  # copied onto another keystore
    with pytest.raises(IntegrityFailure):
        vault.open("globex-999", "ks-aaaa", blob)  # or another account
    assert "1234" not in repr(Secrets({"pin": "1234"})) and "1234" not in str(Secrets({"pin": "1234"}))


def test_secrets_are_refused_in_config(ks_runtime):
    from openkcm.domain.keystores.base import KeystoreConfigInvalid

    with pytest.raises(KeystoreConfigInvalid) as err:
        ks.create_keystore(ks_runtime, ACCOUNT, "aws-kms", "kms",
                           {"region": "us-east-1", "secret_access_key": "oops"}, {}, "alice")
    assert "secrets" in err.value.message and "oops" not in err.value.message
