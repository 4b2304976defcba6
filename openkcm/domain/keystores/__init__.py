"""L1 keystores: connectors to the customer's own key store, and the resolver the hierarchy uses to find
the L1 key that wraps an L2 version.

A parent reference stored beside an L2 blob reads ``l1:<keystore_id>/<key_ref>``; the keystore belongs
to the tenant's account. :class:`KeystoreResolver` turns that reference into a connector: it reads the
keystore item, opens its sealed credentials with the root key and builds the provider's connector.
Connectors are cached briefly (credentials and STS sessions are reused); an update of the keystore item
changes its version and so misses the cache.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from typing import Any

from openkcm.domain.credentials import CredentialVault, Secrets
from openkcm.domain.keystores.base import (
    KeyInfo,
    KeystoreAuthenticationFailed,
    KeystoreConfigInvalid,
    KeystoreConnector,
    KeystoreError,
    KeystoreKeyDisabled,
    KeystoreKeyNotFound,
    KeystoreKeyUnsuitable,
    KeystorePermissionMissing,
    KeystoreTimeout,
    KeystoreUnreachable,
)
from openkcm.domain.rootkey import RootKeyProvider
from openkcm.errors import KeyUnavailable

PROVIDERS = ("aws-kms", "pkcs11", "azure-key-vault", "gcp-kms")
KEY_MODES = {"aws-kms": "byok", "azure-key-vault": "byok", "gcp-kms": "byok", "pkcs11": "hyok"}
L1_PREFIX = "l1:"

__all__ = [
    "KEY_MODES",
    "PROVIDERS",
    "KeyInfo",
    "KeystoreAuthenticationFailed",
    "KeystoreConfigInvalid",
    "KeystoreConnector",
    "KeystoreError",
    "KeystoreKeyDisabled",
    "KeystoreKeyNotFound",
    "KeystoreKeyUnsuitable",
    "KeystorePermissionMissing",
    "KeystoreResolver",
    "KeystoreTimeout",
    "KeystoreUnreachable",
    "build_connector",
    "connector_class",
    "parse_l1_ref",
]


def connector_class(provider: str) -> type[KeystoreConnector]:
    if provider == "aws-kms":
        from openkcm.domain.keystores.aws_kms import AwsKmsConnector

        return AwsKmsConnector
    if provider == "pkcs11":
        from openkcm.domain.keystores.pkcs11 import Pkcs11Connector

        return Pkcs11Connector
    if provider == "azure-key-vault":
        from openkcm.domain.keystores.azure import AzureKeyVaultConnector

        return AzureKeyVaultConnector
    if provider == "gcp-kms":
        from openkcm.domain.keystores.gcp import GcpKmsConnector

        return GcpKmsConnector
    raise KeystoreConfigInvalid(f"provider must be one of {list(PROVIDERS)}", field="provider")


def validate_config(provider: str, config: Mapping[str, Any], allowed_modules: list[str]) -> dict[str, Any]:
    """Check a keystore's non-secret configuration; refuse unknown fields (a secret never hides there)."""
    cls = connector_class(provider)
    if not isinstance(config, Mapping):
        raise KeystoreConfigInvalid("config must be an object", field="config")
    config = {k: v for k, v in config.items() if v not in (None, "")}
    secret_like = sorted(set(config) & cls.secret_fields)
    if secret_like:
        raise KeystoreConfigInvalid(f"{secret_like} are secrets: send them in 'secrets', not in 'config'")
    unknown = sorted(set(config) - cls.required_config - cls.optional_config)
    if unknown:
        raise KeystoreConfigInvalid(
            f"unknown config fields {unknown} for {provider}; allowed: {sorted(cls.required_config | cls.optional_config)}"
        )
    missing = sorted(cls.required_config - set(config))
    if missing:
        raise KeystoreConfigInvalid(f"missing config fields {missing} for {provider}")
    for name, value in config.items():
        if not isinstance(value, str | int) or len(str(value)) > 2048:
            raise KeystoreConfigInvalid(f"config field {name!r} must be a short string", field=name)
    if provider == "pkcs11":
        cls.validate_config(config, allowed_modules)  # type: ignore[call-arg]
    else:
        cls.validate_config(config)  # type: ignore[call-arg]
    return dict(config)


def build_connector(
    provider: str,
    config: Mapping[str, Any],
    secrets: Mapping[str, str] | None = None,
    *,
    keystore_id: str = "",
    key_ref: str | None = None,
    timeout: float = 10.0,
    allowed_modules: list[str] | None = None,
    account_id: str = "",
) -> KeystoreConnector:
    cls = connector_class(provider)
    kwargs: dict[str, Any] = {"keystore_id": keystore_id, "key_ref": key_ref, "timeout": timeout}
    if provider == "pkcs11":
        kwargs["allowed_modules"] = list(allowed_modules or [])
    if provider == "aws-kms" and account_id:
        from openkcm.domain.keystores.aws_kms import external_id_for

        kwargs["external_id"] = external_id_for(account_id)
    return cls(dict(config), Secrets(secrets or {}), **kwargs)  # type: ignore[call-arg]


def l1_ref(keystore_id: str, key_ref: str) -> str:
    return f"{L1_PREFIX}{keystore_id}/{key_ref}"


def parse_l1_ref(parent_ref: str) -> tuple[str, str]:
    """``l1:<keystore_id>/<key_ref>`` -> (keystore_id, key_ref). Keystore ids contain no slash."""
    if not parent_ref.startswith(L1_PREFIX) or "/" not in parent_ref:
        raise KeyUnavailable("this L2 version names no L1 key")
    keystore_id, _, key_ref = parent_ref[len(L1_PREFIX) :].partition("/")
    if not keystore_id or not key_ref:
        raise KeyUnavailable("this L2 version names no L1 key")
    return keystore_id, key_ref


class KeystoreResolver:
    """``resolve_l1`` of :class:`~openkcm.domain.hierarchy.TenantKeyring`: (tenant, parent ref) -> connector."""

    def __init__(
        self,
        root: RootKeyProvider,
        *,
        allowed_modules: list[str] | None = None,
        timeout: float = 10.0,
        cache_seconds: float = 60.0,
    ) -> None:
        self._vault = CredentialVault(root)
        self._allowed = list(allowed_modules or [])
        self._timeout = timeout
        self._cache_seconds = cache_seconds
        self._lock = threading.Lock()
        self._cache: dict[tuple[str, str], tuple[float, KeystoreConnector]] = {}

    def __call__(self, tenant_id: str, parent_ref: str) -> KeystoreConnector:
        from openkcm.storage import KeystoreModel, TenantModel

        keystore_id, key_ref = parse_l1_ref(parent_ref)
        try:
            account_id = TenantModel.get(tenant_id, TenantModel.SORT_KEY).account_id
        except TenantModel.DoesNotExist:
            raise KeyUnavailable("no such tenant") from None
        return self.connector(account_id, keystore_id, key_ref, model_cls=KeystoreModel)

    def connector(self, account_id: str, keystore_id: str, key_ref: str | None, *, model_cls: Any = None) -> KeystoreConnector:
        if model_cls is None:
            from openkcm.storage import KeystoreModel as model_cls
        now = time.monotonic()
        with self._lock:
            cached = self._cache.get((account_id, keystore_id))
        if cached and now - cached[0] < self._cache_seconds:
            return cached[1].with_key(key_ref) if key_ref else cached[1]
        try:
            item = model_cls.get(account_id, keystore_id)
        except model_cls.DoesNotExist:
            raise KeystoreKeyNotFound(
                f"keystore {keystore_id} no longer exists", fix="Link the tenant to an existing keystore."
            ) from None
        connector = self.from_item(item, key_ref=None)
        with self._lock:
            self._cache[(account_id, keystore_id)] = (now, connector)
        return connector.with_key(key_ref) if key_ref else connector

    def from_item(self, item: Any, key_ref: str | None = None, timeout: float | None = None) -> KeystoreConnector:
        import json

        secrets = self._vault.open(item.account_id, item.keystore_id, item.secret_wrapped)
        return build_connector(
            item.provider,
            json.loads(item.config_json or "{}"),
            secrets,
            keystore_id=item.keystore_id,
            key_ref=key_ref,
            timeout=timeout or self._timeout,
            allowed_modules=self._allowed,
            account_id=item.account_id,
        )

    def forget(self, account_id: str, keystore_id: str) -> None:
        """Drop a cached connector (after the keystore was updated or deleted)."""
        with self._lock:
            self._cache.pop((account_id, keystore_id), None)
