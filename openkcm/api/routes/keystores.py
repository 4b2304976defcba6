"""Keystores (L1 connections) of an account and the L1 key flows, exposed over HTTP.

The logic is :mod:`openkcm.ops.keystores` (the keystores feature): connection tests, linking, the one
parent-change operation with re-wrap and rollback (DECISIONS 2). These routes check scope, role and the
HYOK MFA rule, call it and shape the answer. Secrets go in, never out.

HYOK (``pkcs11``) keystore changes need ``amr`` to contain ``mfa`` (seed 002 REQ-026).
"""

from __future__ import annotations

from typing import Annotated, Any

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.api_gateway import Router
from aws_lambda_powertools.event_handler.openapi.params import Query

from openkcm.api import auth
from openkcm.api.context import (
    authorize,
    check_id,
    idempotent,
    page_body,
    paginate,
    principal,
    record_probe,
    require_mfa,
    runtime,
    tenant_in_scope,
)
from openkcm.api.errors import json_response, optional_ops
from openkcm.api.models import (
    KeyImportComplete,
    KeyImportStart,
    KeystoreCreate,
    KeystoreTest,
    KeystoreUpdate,
    L1Link,
    ReturnToPlatform,
)
from openkcm.api.routes.common import DEFAULT_LIMIT, Limit, NextToken
from openkcm.domain.tenants import ACCOUNT_PATTERN, ID_PATTERN
from openkcm.errors import InvalidRequest, NotFound
from openkcm.storage import KeystoreModel

account_router = Router()
tenant_router = Router()
HYOK_PROVIDER = "pkcs11"
_HIDDEN = ("secret", "password", "pin", "credential", "token", "private")
_SHOWN = frozenset({"token_label"})  # a PKCS#11 token's name, not a credential


def _ops() -> Any:
    return optional_ops("openkcm.ops.keystores", "keystore management")


def _safe(value: Any) -> Any:
    """Drop anything that looks like a credential from what goes back to the caller."""
    if isinstance(value, dict):
        return {k: _safe(v) for k, v in value.items()
                if isinstance(v, bool) or k in _SHOWN or not any(h in str(k).lower() for h in _HIDDEN)}
    if isinstance(value, list | tuple):
        return [_safe(v) for v in value]
    if isinstance(value, bytes):
        return None
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value


def _keystore(value: Any) -> dict[str, Any]:
    if isinstance(value, KeystoreModel):
        value = _ops().keystore_view(value)
    elif hasattr(value, "model_dump"):
        value = value.model_dump(mode="json")
    elif not isinstance(value, dict):
        value = dict(vars(value))
    return _safe(value)


def _scope(account_id: str, permission: str) -> auth.Principal:
    who = principal(account_router)
    check_id(account_id, ACCOUNT_PATTERN)
    authorize(account_router, who, permission, account_id)
    return who


def _provider_of(account_id: str, keystore_id: str) -> str:
    check_id(keystore_id)
    try:
        return str(KeystoreModel.get(account_id, keystore_id).provider)
    except KeystoreModel.DoesNotExist:
        raise NotFound("no such keystore") from None


def _require_mfa_for(who: auth.Principal, provider: str, what: str, account_id: str) -> None:
    if provider == HYOK_PROVIDER:
        require_mfa(account_router, who, what, account_id)


class _Progress:
    """Collects the progress reports of a long L1 flow so the answer can show them."""

    def __init__(self) -> None:
        self.steps: list[Any] = []

    def __call__(self, *args: Any, **kwargs: Any) -> None:
        if kwargs and not args:
            self.steps.append(_safe(dict(kwargs)))
        elif len(args) == 1 and not kwargs:
            self.steps.append(_safe(args[0]))
        else:
            self.steps.append(_safe({"args": [str(a) for a in args], **kwargs}))


@account_router.get("/<account_id>/keystores")
def list_keystores(account_id: str, limit: Limit = DEFAULT_LIMIT, next_token: NextToken = None) -> dict[str, Any]:
    _scope(account_id, auth.KEYSTORE_READ)
    stores = [_keystore(k) for k in _ops().list_keystores(runtime(), account_id)]
    page, token = paginate(stores, lambda k: str(k.get("keystore_id", "")), limit, next_token)
    return page_body(page, token)


@account_router.post("/<account_id>/keystores")
def create_keystore(account_id: str, body: KeystoreCreate) -> Response[dict[str, Any]]:
    who = _scope(account_id, auth.KEYSTORE_WRITE)
    _require_mfa_for(who, body.provider, "creating this keystore", account_id)
    ops = _ops()

    def create() -> dict[str, Any]:
        return _keystore(ops.create_keystore(runtime(), account_id, body.provider, body.name, body.config,
                                             body.secrets, actor=who.subject))

    # The idempotency record keeps a digest of the request to detect a reused key; a digest of a short
    # secret (a PIN) could be brute-forced, so only the names of the secret fields go into it.
    fingerprint = {**body.model_dump(exclude={"secrets"}), "secret_fields": sorted(body.secrets)}
    return json_response(201, idempotent(account_router, who, "create_keystore", fingerprint, create))


RoleName = Annotated[str, Query(pattern=r"^[A-Za-z0-9+=,.@_-]{1,64}$", description="IAM role name to create")]
KeyArn = Annotated[str | None, Query(max_length=2048, pattern=r"^arn:aws[a-z-]*:kms:[a-z0-9-]+:\d{12}:key/.+$",
                                     description="the customer's KMS key ARN (optional)")]


@account_router.get("/<account_id>/trust-template/aws")
def aws_trust_template(account_id: str, role_name: RoleName = "OpenKCMKeyAccess", key_arn: KeyArn = None) -> dict[str, Any]:
    """The IAM role trust policy and key-policy statement to paste into the customer's AWS account
    (seed 002 REQ-017); the external id is shown as a placeholder, never a value."""
    _scope(account_id, auth.KEYSTORE_READ)
    return _ops().aws_trust_template(runtime(), account_id, role_name=role_name, key_arn=key_arn)


@account_router.get("/<account_id>/keystores/<keystore_id>")
def get_keystore(account_id: str, keystore_id: str) -> dict[str, Any]:
    _scope(account_id, auth.KEYSTORE_READ)
    _provider_of(account_id, keystore_id)
    return _keystore(_ops().get_keystore(runtime(), account_id, keystore_id))


@account_router.patch("/<account_id>/keystores/<keystore_id>")
def update_keystore(account_id: str, keystore_id: str, body: KeystoreUpdate) -> dict[str, Any]:
    who = _scope(account_id, auth.KEYSTORE_WRITE)
    _require_mfa_for(who, _provider_of(account_id, keystore_id), "updating this keystore", account_id)
    if body.name is None and body.config is None and body.secrets is None:
        raise InvalidRequest("nothing to change: give name, config or secrets", field="body")
    return _keystore(_ops().update_keystore(runtime(), account_id, keystore_id, name=body.name, config=body.config,
                                            secrets=body.secrets, actor=who.subject))


@account_router.delete("/<account_id>/keystores/<keystore_id>")
def delete_keystore(account_id: str, keystore_id: str) -> dict[str, Any]:
    who = _scope(account_id, auth.KEYSTORE_WRITE)
    _require_mfa_for(who, _provider_of(account_id, keystore_id), "deleting this keystore", account_id)
    _ops().delete_keystore(runtime(), account_id, keystore_id, actor=who.subject)
    return {"keystore_id": keystore_id, "deleted": True}


@account_router.post("/<account_id>/keystores/<keystore_id>/test")
def test_keystore(account_id: str, keystore_id: str, body: KeystoreTest) -> dict[str, Any]:
    """Run the connection test; each check answers {name, ok, message, fix}."""
    who = _scope(account_id, auth.KEYSTORE_WRITE)
    _provider_of(account_id, keystore_id)
    checks = [_safe(c) for c in _ops().test_keystore(runtime(), account_id, keystore_id, key_ref=body.key_ref,
                                                     actor=who.subject)]
    return {"keystore_id": keystore_id, "ok": all(bool(c.get("ok")) for c in checks if isinstance(c, dict)),
            "checks": checks}


@account_router.get("/<account_id>/keystores/<keystore_id>/keys")
def list_keystore_keys(account_id: str, keystore_id: str, limit: Limit = DEFAULT_LIMIT,
                       next_token: NextToken = None) -> dict[str, Any]:
    """The keys the store offers (where the provider can list them)."""
    _scope(account_id, auth.KEYSTORE_READ)
    _provider_of(account_id, keystore_id)
    keys = [_safe(k) if isinstance(k, dict) else {"key_ref": str(k)}
            for k in _ops().list_keystore_keys(runtime(), account_id, keystore_id)]
    page, token = paginate(keys, lambda k: str(k.get("key_ref") or k.get("id") or k), limit, next_token)
    return page_body(page, token)


@account_router.post("/<account_id>/keystores/<keystore_id>/link")
def link_l1_key(account_id: str, keystore_id: str, body: L1Link) -> dict[str, Any]:
    """Link an L1 key of the keystore, assign it to tenants and activate it: every retained L2 version of
    each tenant is re-wrapped under it, switched atomically, rolled back on failure."""
    who = _scope(account_id, auth.L1_WRITE)
    _require_mfa_for(who, _provider_of(account_id, keystore_id), "linking a key of this keystore",
                     account_id)
    for tenant_id in body.tenant_ids:
        try:
            tenant = runtime().tenants.get(check_id(tenant_id, ID_PATTERN))
        except NotFound:
            record_probe(account_router, who, account_id, "", auth.L1_WRITE, "no such tenant", target=tenant_id)
            raise NotFound("no such tenant") from None
        if tenant.account_id != account_id:
            record_probe(account_router, who, tenant.account_id, tenant.tenant_id, auth.L1_WRITE,
                         "outside the caller's account")
            raise NotFound("no such tenant")
        if tenant.key_mode == "hyok":  # moving a tenant off its HSM changes a HYOK key chain as well
            require_mfa(account_router, who, "moving a HYOK tenant to another key", account_id, tenant_id=tenant_id)
    progress = _Progress()
    result = _ops().link_l1_key(runtime(), account_id, keystore_id, body.key_ref, list(body.tenant_ids),
                                actor=who.subject, progress=progress)
    return {"keystore_id": keystore_id, "result": _safe(_plain(result)), "progress": progress.steps}


@account_router.post("/<account_id>/keystores/<keystore_id>/import")
def start_key_import(account_id: str, keystore_id: str, body: KeyImportStart) -> dict[str, Any]:
    """BYOK with your own material (AWS KMS, DECISIONS 5), step 1: OpenKCM creates an EXTERNAL-origin key
    and returns its import parameters (public wrapping key, import token, expiry)."""
    who = _scope(account_id, auth.L1_WRITE)
    _provider_of(account_id, keystore_id)
    return _safe_import(_ops().start_key_import(runtime(), account_id, keystore_id, actor=who.subject,
                                                description=body.description))


@account_router.post("/<account_id>/keystores/<keystore_id>/import/complete")
def complete_key_import(account_id: str, keystore_id: str, body: KeyImportComplete) -> dict[str, Any]:
    """Step 2: forward the material the customer wrapped on their side; OpenKCM never sees it in clear."""
    who = _scope(account_id, auth.L1_WRITE)
    _provider_of(account_id, keystore_id)
    return _safe(_ops().complete_key_import(runtime(), account_id, keystore_id, body.key_ref, body.import_token,
                                            body.encrypted_key_material, actor=who.subject))


def _safe_import(params: dict[str, Any]) -> dict[str, Any]:
    """Import parameters are public by design (a public key and an opaque token): pass them through."""
    return {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in params.items() if not isinstance(v, bytes)}


@tenant_router.post("/<tenant_id>/return-to-platform")
def return_to_platform(tenant_id: str, body: ReturnToPlatform) -> dict[str, Any]:
    """Deactivate the tenant's L1 key: re-wrap every L2 version under the platform root key."""
    who, tenant = tenant_in_scope(tenant_router, tenant_id, auth.L1_WRITE)
    if not body.confirm:
        raise InvalidRequest("confirm must be true", field="confirm")
    if tenant.key_mode == "hyok":
        require_mfa(tenant_router, who, "returning a HYOK tenant to platform-managed keys", tenant.account_id,
                    tenant_id=tenant_id)
    progress = _Progress()
    result = _ops().return_to_platform(runtime(), tenant_id, actor=who.subject, progress=progress)
    return {"tenant_id": tenant_id, "result": _safe(_plain(result)), "progress": progress.steps}


def _plain(value: Any) -> Any:
    import dataclasses

    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    if isinstance(value, KeystoreModel):
        return _keystore(value)
    if hasattr(value, "attribute_values"):  # another pynamodb model
        return {k: v for k, v in value.attribute_values.items() if not isinstance(v, bytes)}
    return value
