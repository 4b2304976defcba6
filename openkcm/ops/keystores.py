"""Keystore use cases: what the CMK API (and the CLI, and the rotation schedule) call.

Everything returned is safe to serialize: keystore views carry configuration and status, never a
secret (``secrets_set`` only says whether credentials are stored). Every change is audited through the
runtime's sink; account-level events go to the platform partition with the account id.

A keystore belongs to one account; a tenant of another account is reported as "no such tenant", a
keystore of another account as "no such keystore".
"""

from __future__ import annotations

import base64
import json
import logging
import os
from collections.abc import Callable
from typing import Any

from openkcm.domain.audit import AuditEvent
from openkcm.domain.credentials import CredentialVault, validate_secrets
from openkcm.domain.keystores import (
    KEY_MODES,
    PROVIDERS,
    KeystoreConnector,
    KeystoreResolver,
    connector_class,
    validate_config,
)
from openkcm.domain.keystores.aws_kms import external_id_for, require_own_credentials
from openkcm.domain.keystores.base import KEYSTORE_ERRORS, KeystoreConfigInvalid, audit_safe
from openkcm.domain.reparent import (
    BYOK,
    HYOK,
    L1_ACTIVE,
    L1_ERROR,
    PLATFORM,
    Deadline,
    ParentChange,
    validate_parent,
)
from openkcm.domain.tenants import PLATFORM_TENANT
from openkcm.errors import ConcurrentUpdate, InvalidRequest, NotFound, OpenKCMError, WrongState
from openkcm.ops.runtime import Runtime
from openkcm.storage import ConditionFailed, KeystoreModel, TenantModel
from openkcm.storage.models import condition_guard

Progress = Callable[[dict[str, Any]], None]
log = logging.getLogger("openkcm.keystores")
CONNECTED, UNTESTED, ERROR = "Connected", "Untested", "Error"
_NAME_MAX = 200

__all__ = [
    "aws_trust_template",
    "complete_key_import",
    "create_keystore",
    "delete_keystore",
    "get_keystore",
    "keystore_view",
    "link_l1_key",
    "list_keystore_keys",
    "list_keystores",
    "probe_l1_health",
    "return_to_platform",
    "start_key_import",
    "test_keystore",
    "update_keystore",
]


# ---- helpers ------------------------------------------------------------------------------------
def resolver(runtime: Runtime) -> KeystoreResolver:
    """The runtime's keystore resolver (the one its keyring uses), created on first use if absent."""
    found = runtime.extras.get("keystore_resolver")
    if found is None:
        found = KeystoreResolver(
            runtime.root,
            allowed_modules=runtime.settings.pkcs11_module_list,
            timeout=runtime.settings.keystore_call_timeout_seconds,
        )
        runtime.extras["keystore_resolver"] = found
    return found


def keystore_view(item: KeystoreModel) -> dict[str, Any]:
    """What the API returns for a keystore: configuration and status, never a secret."""
    return {
        "keystore_id": item.keystore_id,
        "account_id": item.account_id,
        "provider": item.provider,
        "name": item.name,
        "config": json.loads(item.config_json or "{}"),
        "secrets_set": bool(item.secret_wrapped),
        "status": item.status,
        "status_reason": item.status_reason,
        "created_at": item.created_at.isoformat() if item.created_at else None,
        "updated_at": item.updated_at.isoformat() if item.updated_at else None,
    }


def _new_keystore_id() -> str:
    return "ks-" + base64.b32encode(os.urandom(10)).decode().lower()


def _audit(
    runtime: Runtime,
    account_id: str,
    operation: str,
    actor: str,
    *,
    tenant_id: str = "",
    result: str = "success",
    kind: str = "config",
    reason: str = "",
    l1_ref: str = "",
    **details: str,
) -> None:
    runtime.audit.record(
        AuditEvent(
            tenant_id=tenant_id or PLATFORM_TENANT,
            account_id=account_id,
            source="keystore",
            operation=operation,
            kind=kind,
            result=result,
            actor=actor,
            reason=audit_safe(reason),
            l1_ref=audit_safe(l1_ref),
            details={k: audit_safe(v) for k, v in details.items()},
        )
    )


def _check_name(name: str) -> str:
    if not isinstance(name, str) or not 1 <= len(name.strip()) <= _NAME_MAX:
        raise InvalidRequest(f"name must be 1-{_NAME_MAX} characters", field="name")
    return name.strip()


def _tenants_using(account_id: str, keystore_id: str) -> list[str]:
    prefix = f"l1:{keystore_id}/"
    return [
        t.tenant_id
        for t in TenantModel.account_index.query(account_id)
        if t.sk == TenantModel.SORT_KEY and (t.l1_key_ref or "").startswith(prefix)
    ]


def _check_key_ref(provider: str, key_ref: str) -> str:
    if not isinstance(key_ref, str) or not key_ref.strip() or len(key_ref) > 1024:
        raise KeystoreConfigInvalid(
            "key_ref names the L1 key (ARN, alias, label or key URL)", field="key_ref"
        )
    validator = getattr(connector_class(provider), "validate_key_ref", None)
    return validator(key_ref.strip()) if validator else key_ref.strip()


def _publish_l1_changed(runtime: Runtime, result: dict[str, Any]) -> None:
    """DECISIONS 14: an ``l1_changed`` domain event after a successful switch. Best effort: the epoch bump in
    the switch's transaction is what makes every worker drop the tenant's cached keys."""
    if not result.get("ok"):
        return
    try:
        from openkcm.ops.events import L1_CHANGED, publish

        publish(
            runtime,
            L1_CHANGED,
            result["tenant_id"],
            key_mode=result["key_mode"],
            l1_key_ref=audit_safe(result["l1_key_ref"] or "platform"),
            epoch=int(result["epoch"]),
        )
    except Exception as exc:  # noqa: BLE001 - never fail a committed change over a notification
        log.warning("l1_changed event not published (%s)", type(exc).__name__)


def _set_status(item: KeystoreModel, status: str, reason: str | None, runtime: Runtime) -> None:
    actions = [KeystoreModel.status.set(status), KeystoreModel.updated_at.set(runtime.clock.now())]
    actions.append(
        KeystoreModel.status_reason.set(reason[:1000]) if reason else KeystoreModel.status_reason.remove()
    )
    try:
        with condition_guard():
            item.update(actions=actions)
    except ConditionFailed:
        pass  # changed meanwhile: the newer write wins; the status is advisory


# ---- keystores ----------------------------------------------------------------------------------
def create_keystore(
    runtime: Runtime, account_id: str, provider: str, name: str, config: dict, secrets: dict, actor: str
) -> KeystoreModel:
    """Register a keystore connection. ``config`` holds only non-secret fields (region, role ARN, vault URL,
    module path ...); ``secrets`` (access keys, external id, PIN, client secret, service-account key) are
    sealed by the root key before anything is written. Status starts ``Untested``."""
    runtime.audit.ensure_writable()
    if provider not in PROVIDERS:
        raise InvalidRequest(f"provider must be one of {list(PROVIDERS)}", field="provider")
    name = _check_name(name)
    clean = validate_config(provider, config or {}, runtime.settings.pkcs11_module_list)
    _no_chosen_external_id(provider, account_id, secrets or {})
    values = validate_secrets(secrets or {}, connector_class(provider).secret_fields)
    if provider == "aws-kms":
        require_own_credentials(clean, values)
    runtime.tenants.ensure_account(account_id)
    keystore_id = _new_keystore_id()
    now = runtime.clock.now()
    item = KeystoreModel(
        account_id,
        keystore_id,
        provider=provider,
        name=name,
        config_json=json.dumps(clean, sort_keys=True),
        secret_wrapped=CredentialVault(runtime.root).seal(account_id, keystore_id, values),
        status=UNTESTED,
        created_at=now,
        updated_at=now,
    )
    with condition_guard():
        item.save(condition=KeystoreModel.keystore_id.does_not_exist())
    _audit(
        runtime, account_id, "CreateKeystore", actor, keystore_id=keystore_id, provider=provider, name=name
    )
    return item


def get_keystore(runtime: Runtime, account_id: str, keystore_id: str) -> KeystoreModel:
    """One keystore of the account (NotFound for a missing one or one of another account)."""
    try:
        return KeystoreModel.get(account_id, keystore_id)
    except KeystoreModel.DoesNotExist:
        raise NotFound("no such keystore") from None


def list_keystores(runtime: Runtime, account_id: str) -> list[KeystoreModel]:
    """Every keystore of the account, oldest id first (serialize each with :func:`keystore_view`)."""
    return list(KeystoreModel.query(account_id))


def update_keystore(
    runtime: Runtime,
    account_id: str,
    keystore_id: str,
    *,
    name: str | None = None,
    config: dict | None = None,
    secrets: dict | None = None,
    actor: str,
) -> KeystoreModel:
    """Rename, replace the configuration, or change secrets (a field set to null/"" removes it; fields not
    named keep their value). The status goes back to ``Untested``. Tenants linked to this keystore use the
    new settings within a minute; test the keystore after changing it."""
    runtime.audit.ensure_writable()
    item = get_keystore(runtime, account_id, keystore_id)
    actions = [
        KeystoreModel.updated_at.set(runtime.clock.now()),
        KeystoreModel.status.set(UNTESTED),
        KeystoreModel.status_reason.remove(),
    ]
    changed = []
    clean: dict[str, Any] | None = None
    merged: dict[str, Any] | None = None
    if name is not None:
        actions.append(KeystoreModel.name.set(_check_name(name)))
        changed.append("name")
    if config is not None:
        clean = validate_config(item.provider, config, runtime.settings.pkcs11_module_list)
        actions.append(KeystoreModel.config_json.set(json.dumps(clean, sort_keys=True)))
        changed.append("config")
    if secrets is not None:
        cls = connector_class(item.provider)
        _no_chosen_external_id(item.provider, account_id, secrets)
        unknown = sorted(set(secrets) - cls.secret_fields)
        if unknown:
            raise InvalidRequest(
                f"unknown secret fields {unknown}; this provider takes {sorted(cls.secret_fields)}"
            )
        vault = CredentialVault(runtime.root)
        current = vault.open(account_id, keystore_id, item.secret_wrapped)
        merged = validate_secrets(dict(current.merged(secrets)), cls.secret_fields)
        blob = vault.seal(account_id, keystore_id, merged)
        actions.append(
            KeystoreModel.secret_wrapped.set(blob) if blob else KeystoreModel.secret_wrapped.remove()
        )
        changed.append("secrets:" + ",".join(sorted(secrets)))
    if item.provider == "aws-kms" and (clean is not None or merged is not None):  # as creation refuses it
        if merged is None:
            merged = dict(
                CredentialVault(runtime.root).open(account_id, keystore_id, item.secret_wrapped).merged({})
            )
        require_own_credentials(clean if clean is not None else json.loads(item.config_json or "{}"), merged)
    try:
        with condition_guard():
            item.update(actions=actions)
    except ConditionFailed:
        raise ConcurrentUpdate("the keystore changed meanwhile; re-read and retry") from None
    resolver(runtime).forget(account_id, keystore_id)
    _audit(runtime, account_id, "UpdateKeystore", actor, keystore_id=keystore_id, changed=";".join(changed))
    return item


def delete_keystore(runtime: Runtime, account_id: str, keystore_id: str, actor: str) -> None:
    """Remove a keystore connection. Refused while any tenant of the account is linked to one of its keys
    (return those tenants to the platform key or link them elsewhere first)."""
    runtime.audit.ensure_writable()
    item = get_keystore(runtime, account_id, keystore_id)
    users = _tenants_using(account_id, keystore_id)
    if users:
        raise WrongState(
            f"keystore is in use by {len(users)} tenant(s); link them to another key or return them to the "
            "platform key first",
            tenants=",".join(users[:20]),
        )
    try:
        with condition_guard():
            item.delete()
    except ConditionFailed:
        raise ConcurrentUpdate("the keystore changed meanwhile; re-read and retry") from None
    resolver(runtime).forget(account_id, keystore_id)
    _audit(runtime, account_id, "DeleteKeystore", actor, keystore_id=keystore_id)


def _no_chosen_external_id(provider: str, account_id: str, secrets: dict) -> None:
    if provider == "aws-kms" and secrets.get("external_id"):
        raise InvalidRequest(
            f"OpenKCM sets the external id for your account: put sts:ExternalId = {external_id_for(account_id)} "
            "in the role's trust policy (the trust template shows it) and leave this field out",
            field="secrets.external_id",
        )


def _connector(runtime: Runtime, item: KeystoreModel, key_ref: str | None = None) -> KeystoreConnector:
    return resolver(runtime).from_item(item, key_ref=key_ref)


def test_keystore(
    runtime: Runtime, account_id: str, keystore_id: str, key_ref: str | None = None, *, actor: str
) -> list[dict[str, Any]]:
    """Run the checks a link would run, without linking: configuration, connection (reach + authenticate)
    and, with ``key_ref``, the key's state and a wrap/unwrap round trip of a random value — within the
    validation budget. Returns ``[{name, ok, message, fix}]``; stops at the first failure. Records the
    outcome as the keystore's status (Connected / Error)."""
    item = get_keystore(runtime, account_id, keystore_id)
    checks: list[dict[str, Any]] = []
    deadline = Deadline(
        runtime.settings.l1_validation_budget_seconds, runtime.settings.keystore_call_timeout_seconds
    )
    current = "configuration"
    try:
        ref = _check_key_ref(item.provider, key_ref) if key_ref else None
        connector = _connector(runtime, item, ref)
        checks.append(
            {"name": "configuration", "ok": True, "message": "configuration is complete", "fix": ""}
        )
        current = "connection"
        if ref:
            current = "validation"
            for check in validate_parent(connector, "_keystore-test", deadline):
                checks.append({**check, "fix": ""})
        else:
            connector.test_connection(timeout=deadline.call_timeout())
            checks.append(
                {
                    "name": "connection",
                    "ok": True,
                    "message": "keystore reachable, credentials accepted",
                    "fix": "",
                }
            )
    except (*KEYSTORE_ERRORS, OpenKCMError) as exc:
        name = getattr(exc, "check", current)
        if name == "keystore":
            name = current
        checks.append({"name": name, "ok": False, "message": exc.message, "fix": getattr(exc, "fix", "")})
    ok = all(c["ok"] for c in checks)
    failed = next((c for c in checks if not c["ok"]), None)
    _set_status(
        item, CONNECTED if ok else ERROR, None if ok else f"{failed['name']}: {failed['message']}", runtime
    )
    _audit(
        runtime,
        account_id,
        "TestKeystore",
        actor,
        result="success" if ok else "failure",
        reason="" if ok else f"{failed['name']}: {failed['message']}",
        keystore_id=keystore_id,
    )
    return checks


test_keystore.__test__ = False  # type: ignore[attr-defined]  # not a pytest test despite its name


def list_keystore_keys(runtime: Runtime, account_id: str, keystore_id: str) -> list[dict[str, Any]]:
    """Keys the keystore's credentials can see (key ref, state, algorithm; never material)."""
    item = get_keystore(runtime, account_id, keystore_id)
    return [info.to_dict() for info in _connector(runtime, item).list_keys()]


# ---- linking ------------------------------------------------------------------------------------
def _parent_change(runtime: Runtime) -> ParentChange:
    return ParentChange(
        runtime.keyring,
        runtime.tenants,
        runtime.audit,
        clock=runtime.clock,
        budget_seconds=runtime.settings.l1_validation_budget_seconds,
        call_timeout=runtime.settings.keystore_call_timeout_seconds,
    )


def link_l1_key(
    runtime: Runtime,
    account_id: str,
    keystore_id: str,
    key_ref: str,
    tenant_ids: list[str],
    actor: str,
    progress: Progress | None = None,
) -> list[dict[str, Any]]:
    """Make ``key_ref`` of the keystore the L1 parent of each tenant: validate (connection, key state, a real
    round trip within 30 s), re-wrap every retained L2 version, switch atomically, bump the epoch. Each
    tenant is its own atomic change: one that fails is rolled back (its previous parent stays in force,
    ``l1_state`` Error with the reason if it had no working L1) while the others proceed. Returns one
    result per tenant: ``{tenant_id, ok, key_mode, l1_state, l1_key_ref, versions_rewrapped, epoch, error}``."""
    if not tenant_ids or len(tenant_ids) > 100 or len(set(tenant_ids)) != len(tenant_ids):
        raise InvalidRequest("name 1-100 distinct tenants", field="tenant_ids")
    item = get_keystore(runtime, account_id, keystore_id)
    ref = _check_key_ref(item.provider, key_ref)
    tenants = [runtime.tenants.get_in_account(account_id, t) for t in tenant_ids]  # all or none exist
    connector = _connector(runtime, item, ref)
    key_mode = KEY_MODES[item.provider]
    change = _parent_change(runtime)
    results = []
    for tenant in tenants:
        try:
            result = change.run(
                tenant.tenant_id, connector, key_mode=key_mode, actor=actor, source="api", progress=progress
            ).to_dict()
        except OpenKCMError as exc:  # refused before anything started (tenant not Ready, audit down ...)
            error = exc.to_dict()
            result = {
                "tenant_id": tenant.tenant_id,
                "ok": False,
                "key_mode": tenant.key_mode,
                "l1_state": tenant.l1_state,
                "l1_key_ref": tenant.l1_key_ref,
                "versions_rewrapped": 0,
                "epoch": int(tenant.epoch),
                "error": error,
            }
        results.append(result)
        _publish_l1_changed(runtime, result)
    ok = [r for r in results if r["ok"]]
    if ok:
        _set_status(item, CONNECTED, None, runtime)
    elif results:
        _set_status(item, ERROR, str((results[0]["error"] or {}).get("message", ""))[:1000], runtime)
    return results


def return_to_platform(
    runtime: Runtime,
    tenant_id: str,
    actor: str,
    progress: Progress | None = None,
    *,
    account_id: str | None = None,
) -> dict[str, Any]:
    """Move a BYOK/HYOK tenant back to the internal root key (every retained L2 version re-wrapped,
    atomically). The current L1 key must still unwrap (or its keys be cached within the grace period).
    With ``account_id`` a tenant of another account is reported as missing."""
    tenant = (
        runtime.tenants.get_in_account(account_id, tenant_id)
        if account_id
        else runtime.tenants.get(tenant_id)
    )
    if tenant.key_mode == PLATFORM:
        raise WrongState("the tenant uses the platform key already")
    result = (
        _parent_change(runtime)
        .run(tenant_id, runtime.root, key_mode=PLATFORM, actor=actor, source="api", progress=progress)
        .to_dict()
    )
    _publish_l1_changed(runtime, result)
    return result


# ---- EXTERNAL-origin import (AWS KMS, DECISIONS 5) ----------------------------------------------
def start_key_import(
    runtime: Runtime, account_id: str, keystore_id: str, *, actor: str, description: str = ""
) -> dict[str, Any]:
    """Create a KMS key with EXTERNAL origin in the customer's account and return its import parameters
    (public wrapping key, import token, expiry). The customer wraps their key material with the public key
    on their side and calls :func:`complete_key_import`."""
    item = get_keystore(runtime, account_id, keystore_id)
    if item.provider != "aws-kms":
        raise InvalidRequest("key import is offered for AWS KMS keystores only")
    connector = _connector(runtime, item)
    key = connector.create_import_key(description or "OpenKCM L1 key (imported material)")  # type: ignore[attr-defined]
    params = connector.get_import_parameters(key.key_ref)  # type: ignore[attr-defined]
    _audit(runtime, account_id, "StartKeyImport", actor, keystore_id=keystore_id, l1_ref=key.key_ref)
    return {"key_ref": key.key_ref, **params}


def complete_key_import(
    runtime: Runtime,
    account_id: str,
    keystore_id: str,
    key_ref: str,
    import_token: str,
    encrypted_key_material: str,
    *,
    actor: str,
) -> dict[str, Any]:
    """Forward the customer's wrapped key material (base64) with the import token. OpenKCM never sees the
    plaintext L1 material. Returns the key's description (state Enabled when the import took)."""
    item = get_keystore(runtime, account_id, keystore_id)
    if item.provider != "aws-kms":
        raise InvalidRequest("key import is offered for AWS KMS keystores only")
    ref = _check_key_ref(item.provider, key_ref)
    info = _connector(runtime, item, ref).import_key_material(import_token, encrypted_key_material)  # type: ignore[attr-defined]
    _audit(runtime, account_id, "ImportKeyMaterial", actor, keystore_id=keystore_id, l1_ref=ref)
    return info.to_dict()


# ---- trust template (seed 002 REQ-017) -----------------------------------------------------------
def aws_trust_template(
    runtime: Runtime, account_id: str, *, role_name: str = "OpenKCMKeyAccess", key_arn: str | None = None
) -> dict[str, Any]:
    """The IAM role trust policy and the key-policy statement a customer pastes into their AWS account so
    OpenKCM can use their KMS key through a cross-account role. OpenKCM's principals are the roles of every
    process that assumes the customer's role (``keystore_access_role_arns``, set by the CDK stack: CMK API,
    rotation, KMIP tasks), or else the role this process runs as. The external id is OpenKCM's, derived
    from the account (``aws_kms.external_id_for``): AWS's confused-deputy guidance has the third party set
    it, so no other customer can make OpenKCM present it."""
    import boto3

    runtime.tenants.ensure_account(account_id)
    configured = runtime.settings.keystore_access_role_list
    if configured:
        principal, principals = configured[0], sorted(set(configured))
    else:
        identity = boto3.client("sts", region_name=runtime.settings.region).get_caller_identity()["Arn"]
        principal = _role_arn_of(identity)
        principals = [principal]
    trust = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "OpenKCMAssumeRole",
                "Effect": "Allow",
                "Principal": {"AWS": principals[0] if len(principals) == 1 else principals},
                "Action": "sts:AssumeRole",
                "Condition": {"StringEquals": {"sts:ExternalId": external_id_for(account_id)}},
            }
        ],
    }
    key_statement = {
        "Sid": "OpenKCMUseOfTheKey",
        "Effect": "Allow",
        "Principal": {"AWS": f"arn:aws:iam::<your account id>:role/{role_name}"},
        "Action": ["kms:Encrypt", "kms:Decrypt", "kms:DescribeKey"],
        "Resource": "*",
        "Condition": {"StringEquals": {"kms:EncryptionContext:purpose": "openkcm-l2"}},
    }
    if key_arn:
        key_statement["Principal"] = {"AWS": f"arn:aws:iam::{_account_of(key_arn)}:role/{role_name}"}
    return {
        "openkcm_principal": principal,
        "openkcm_principals": principals,
        "role_name": role_name,
        "role_trust_policy": trust,
        "key_policy_statement": key_statement,
        "role_permissions": {
            "Version": "2012-10-17",
            "Statement": [
                {"Effect": "Allow", "Action": ["kms:ListAliases", "kms:ListKeys"], "Resource": "*"}
            ],
        },
        "keystore_config": {
            "region": runtime.settings.region,
            "role_arn": f"arn:aws:iam::<your account id>:role/{role_name}",
        },
        "external_id": external_id_for(account_id),
    }


def _role_arn_of(identity_arn: str) -> str:
    """``arn:aws:sts::<acct>:assumed-role/<role>/<session>`` -> ``arn:aws:iam::<acct>:role/<role>``."""
    parts = identity_arn.split(":")
    if len(parts) == 6 and parts[5].startswith("assumed-role/"):
        return f"arn:{parts[1]}:iam::{parts[4]}:role/{parts[5].split('/')[1]}"
    return identity_arn


def _account_of(key_arn: str) -> str:
    parts = key_arn.split(":")
    if len(parts) < 6 or not parts[4].isdigit():
        raise InvalidRequest("key_arn must be a KMS key ARN", field="key_arn")
    return parts[4]


# ---- health probe (seed 002 REQ-016) -------------------------------------------------------------
PROBE_SECONDS, PROBE_CALL_SECONDS = 20.0, 5.0  # one linked key's whole probe, and each call of it


def probe_l1_health(runtime: Runtime, *, actor: str = "l1-health-probe") -> list[dict[str, Any]]:
    """Test every linked L1 key once (connection, key state and a wrap/unwrap round trip of a random value:
    a key policy that takes away Encrypt/Decrypt but leaves DescribeKey, the customer's kill switch, must
    show) and record each tenant's ``l1_state``
    (Active / Error with the reason). A key that stops working raises a security event in the audit trail
    (``L1KeyUnavailable``); one that works again, ``L1KeyRecovered``. Tenants keep being served from cache
    for the grace period either way — the probe reports, the keyring enforces. The rotation schedule
    calls this."""
    linked: dict[tuple[str, str], list[TenantModel]] = {}
    for tenant in TenantModel.scan(
        (TenantModel.sk == TenantModel.SORT_KEY) & TenantModel.key_mode.is_in(BYOK, HYOK)
    ):
        if tenant.l1_key_ref:
            linked.setdefault((tenant.account_id, tenant.l1_key_ref), []).append(tenant)
    results = []
    for (account_id, l1_key_ref), tenants in linked.items():
        ok, message, fix = True, "L1 key usable", ""
        try:
            from openkcm.domain.keystores import parse_l1_ref

            keystore_id, key_ref = parse_l1_ref(l1_key_ref)
            connector = resolver(runtime).connector(account_id, keystore_id, key_ref)
            validate_parent(connector, tenants[0].tenant_id, Deadline(PROBE_SECONDS, PROBE_CALL_SECONDS))
        except OpenKCMError as exc:
            ok, message, fix = False, exc.message, getattr(exc, "fix", "")
        for tenant in tenants:
            results.append(_record_health(runtime, tenant, ok, message, fix, actor))
    return results


def _record_health(
    runtime: Runtime, tenant: TenantModel, ok: bool, message: str, fix: str, actor: str
) -> dict[str, Any]:
    state = L1_ACTIVE if ok else L1_ERROR
    before = str(tenant.l1_state)
    if before != state or (not ok and tenant.l1_reason != message):
        actions = [TenantModel.l1_state.set(state), TenantModel.updated_at.set(runtime.clock.now())]
        actions.append(TenantModel.l1_reason.remove() if ok else TenantModel.l1_reason.set(message[:1000]))
        try:
            with condition_guard():
                tenant.update(actions=actions)
        except ConditionFailed:
            pass  # the tenant changed meanwhile (re-linked?): the next probe records it
        if before != state:
            runtime.audit.record(
                AuditEvent(
                    tenant_id=tenant.tenant_id,
                    account_id=tenant.account_id,
                    source="keystore",
                    operation="L1KeyRecovered" if ok else "L1KeyUnavailable",
                    kind="security",
                    result="success" if ok else "failure",
                    actor=actor,
                    reason=audit_safe(message),
                    l1_ref=audit_safe(tenant.l1_key_ref or ""),
                    details={
                        "grace_seconds": str(runtime.settings.l1_grace_seconds),
                        "effect": "keys stay usable from cache for the grace period, then fail closed"
                        if not ok
                        else "L1 key usable again",
                    },
                )
            )
    return {
        "tenant_id": tenant.tenant_id,
        "l1_key_ref": tenant.l1_key_ref,
        "ok": ok,
        "l1_state": state,
        "message": message,
        "fix": fix,
    }
