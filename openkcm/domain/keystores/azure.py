"""Azure Key Vault / Managed HSM as an L1 keystore (BYOK), through the official SDK
(``azure-keyvault-keys`` CryptographyClient, ``azure-identity`` ClientSecretCredential).

Configuration: ``vault_url`` (``https://<name>.vault.azure.net`` or ``https://<name>.managedhsm.azure.net``,
sovereign clouds too), ``tenant_id`` and ``client_id`` of the app registration OpenKCM signs in as,
``algorithm`` (``RSA-OAEP-256`` for RSA / RSA-HSM keys, default; ``A256KW`` for oct-HSM keys on Managed
HSM) and optionally ``authority_host``. Secret: ``client_secret``. The key is named by key name, by
``name/version`` or by its full key id URL.

Wrap is wrapKey, unwrap is unwrapKey. Neither algorithm carries associated data, so the wrapped value is
``context digest (16 bytes) || L2`` and the digest is compared on unwrap: a blob moved to another tenant or
version does not open. With an RSA key the SDK fetches the public key (keys/get) and wraps locally — the
documented behaviour of CryptographyClient; unwrap always runs in the vault, which is what the customer
controls (disable the key or revoke unwrapKey and OpenKCM is cut off).
"""

from __future__ import annotations

import base64
import re
from typing import Any

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
    bind_plaintext,
    pin,
    unbind_plaintext,
    unpin,
)
from openkcm.domain.wrapping import Context
from openkcm.errors import IntegrityFailure, OpenKCMError

PROVIDER = "azure-key-vault"
_VAULT = re.compile(
    r"^https://[a-z0-9](?:[a-z0-9-]{1,22}[a-z0-9])\."
    r"(vault\.azure\.net|managedhsm\.azure\.net|vault\.azure\.cn|managedhsm\.azure\.cn|"
    r"vault\.usgovcloudapi\.net|managedhsm\.usgovcloudapi\.net)/?$"
)
_GUID = re.compile(r"^[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}\Z")
_KEY_NAME = re.compile(r"^[A-Za-z0-9-]{1,127}(/[0-9a-fA-F]{32})?\Z")
_ALGORITHMS = {"RSA-OAEP-256": ("RSA", "RSA-HSM"), "A256KW": ("oct", "oct-HSM")}


class AzureKeyVaultConnector(KeystoreConnector):
    provider = PROVIDER
    required_config = frozenset({"vault_url", "tenant_id", "client_id"})
    optional_config = frozenset({"algorithm", "authority_host"})
    secret_fields = frozenset({"client_secret"})

    def __init__(
        self,
        config: dict[str, Any],
        secrets: Any = None,
        *,
        keystore_id: str = "",
        key_ref: str | None = None,
        timeout: float = 10.0,
    ) -> None:
        super().__init__(keystore_id=keystore_id, key_ref=key_ref, timeout=timeout)
        self.validate_config(config)
        self._vault_url = str(config["vault_url"]).rstrip("/")
        self._tenant = str(config["tenant_id"])
        self._client_id = str(config["client_id"])
        self._algorithm = str(config.get("algorithm") or "RSA-OAEP-256")
        self._authority = config.get("authority_host") or None
        self._secret = (secrets or {}).get("client_secret") or ""
        self._credential: Any = None
        self._clients: dict[str, Any] = {}

    @classmethod
    def validate_config(cls, config: dict[str, Any]) -> None:
        if not _VAULT.match(str(config.get("vault_url", ""))):
            raise KeystoreConfigInvalid(
                "vault_url must be https://<name>.vault.azure.net or https://<name>.managedhsm.azure.net",
                field="vault_url",
            )
        for name in ("tenant_id", "client_id"):
            if not _GUID.match(str(config.get(name, ""))):
                raise KeystoreConfigInvalid(f"{name} must be a GUID", field=name)
        if config.get("algorithm") and config["algorithm"] not in _ALGORITHMS:
            raise KeystoreConfigInvalid(f"algorithm must be one of {sorted(_ALGORITHMS)}", field="algorithm")
        authority = config.get("authority_host")
        if authority and not re.match(r"^https://login\.(microsoftonline\.(com|us)|chinacloudapi\.cn)/?$", str(authority)):
            raise KeystoreConfigInvalid("authority_host must be an Entra ID login host", field="authority_host")

    @staticmethod
    def validate_key_ref(key_ref: str) -> str:
        ref = key_ref
        if ref.startswith("https://"):
            base, sep, ref = ref.partition("/keys/")
            if not sep or not _VAULT.match(base):
                raise KeystoreConfigInvalid("an Azure key URL reads https://<vault>/keys/<name>[/<version>]", field="key_ref")
        if not _KEY_NAME.match(ref):
            raise KeystoreConfigInvalid("an Azure key is named by name, name/version or key id URL", field="key_ref")
        return key_ref

    # ---- SDK clients ---------------------------------------------------------------------------
    def _sdk_kwargs(self) -> dict[str, Any]:
        return {"connection_timeout": min(5.0, self.timeout), "read_timeout": self.timeout, "retry_total": 1}

    def _cred(self) -> Any:
        if self._credential is None:
            if not self._secret:
                raise KeystoreAuthenticationFailed("no client secret is stored for this keystore")
            from azure.identity import ClientSecretCredential

            kwargs = self._sdk_kwargs()
            if self._authority:
                kwargs["authority"] = self._authority
            self._credential = ClientSecretCredential(self._tenant, self._client_id, self._secret, **kwargs)
        return self._credential

    def _key_client(self) -> Any:
        if "keys" not in self._clients:
            from azure.keyvault.keys import KeyClient

            self._clients["keys"] = KeyClient(self._vault_url, self._cred(), **self._sdk_kwargs())
        return self._clients["keys"]

    def _crypto(self, key_ref: str) -> Any:
        name, version = self._split(key_ref)
        url = f"{self._vault_url}/keys/{name}" + (f"/{version}" if version else "")
        if url not in self._clients:
            from azure.keyvault.keys.crypto import CryptographyClient

            self._clients[url] = CryptographyClient(url, self._cred(), **self._sdk_kwargs())
        return self._clients[url]

    def _split(self, key_ref: str) -> tuple[str, str | None]:
        ref = key_ref
        if ref.startswith("https://"):
            prefix = f"{self._vault_url}/keys/"
            if not ref.startswith(prefix):
                raise KeystoreConfigInvalid("the key URL must belong to this keystore's vault", field="key_ref")
            ref = ref[len(prefix) :]
        if not _KEY_NAME.match(ref):
            raise KeystoreConfigInvalid("an Azure key is named by name, name/version or key id URL", field="key_ref")
        name, _, version = ref.partition("/")
        return name, version or None

    # ---- backend calls -------------------------------------------------------------------------
    def _test_connection(self) -> None:
        # Signs in (token endpoint) and reaches the vault: the first page of key properties.
        next(iter(self._key_client().list_properties_of_keys(max_page_size=1)), None)

    def _describe_key(self, key_ref: str) -> KeyInfo:
        name, version = self._split(key_ref)
        key = self._key_client().get_key(name, version)
        props = key.properties
        kty = str(key.key_type.value if hasattr(key.key_type, "value") else key.key_type)
        ops = {str(op.value if hasattr(op, "value") else op) for op in (key.key_operations or [])}
        problems = []
        if not props.enabled:
            problems.append("disabled")
        if kty not in _ALGORITHMS[self._algorithm]:
            problems.append(f"key type {kty} does not fit {self._algorithm}")
        if not {"wrapKey", "unwrapKey"} <= ops:
            problems.append("wrapKey/unwrapKey not among its permitted operations")
        return KeyInfo(
            key_ref=key_ref,
            key_id=str(key.id),
            state="Enabled" if props.enabled else "Disabled",
            usable=not problems,
            algorithm=self._algorithm,
            origin="HSM" if kty.endswith("-HSM") else "software",
            description="; ".join(problems),
            extra={"key_type": kty, "key_ops": ",".join(sorted(ops))},
        )

    def _raise_unusable(self, info: KeyInfo) -> None:
        if info.state != "Enabled":
            raise KeystoreKeyDisabled(
                f"Azure key {info.key_id or info.key_ref} is disabled",
                fix="Enable the key (or the key version) in the vault, then test the connection again.",
            )
        raise KeystoreKeyUnsuitable(
            f"Azure key {info.key_id or info.key_ref} cannot be an L1 key: {info.description}",
            fix="Use an RSA(-HSM) key with RSA-OAEP-256 or an oct-HSM key with A256KW, permitted to wrapKey and unwrapKey.",
        )

    def _list_keys(self) -> list[KeyInfo]:
        keys = []
        for props in self._key_client().list_properties_of_keys():
            keys.append(
                KeyInfo(
                    key_ref=str(props.name),
                    key_id=str(props.id),
                    state="Enabled" if props.enabled else "Disabled",
                    usable=bool(props.enabled),
                )
            )
        return keys

    def _wrap(self, key_ref: str, plaintext: bytes, context: Context) -> bytes:
        result = self._crypto(key_ref).wrap_key(self._algorithm, bind_plaintext(bytes(plaintext), context))
        # Pinned to the key version the vault used: after the customer rotates the key (a new version)
        # the blobs the old version wrapped must still open with it.
        kid = str(result.key_id or "")
        return pin(kid if kid.startswith(f"{self._vault_url}/keys/") else "", bytes(result.encrypted_key))

    def _unwrap(self, key_ref: str, blob: bytes, context: Context) -> bytes:
        pinned, wrapped = unpin(bytes(blob))
        if pinned is not None and self._split(pinned)[0] != self._split(key_ref)[0]:
            raise IntegrityFailure()  # another key's blob: never follow it elsewhere in the vault
        result = self._crypto(pinned or key_ref).unwrap_key(self._algorithm, wrapped)
        return unbind_plaintext(bytes(result.key), context)

    # ---- error mapping -------------------------------------------------------------------------
    def _map_error(self, exc: BaseException, operation: str, key_ref: str) -> OpenKCMError | None:
        from azure.core.exceptions import (
            ClientAuthenticationError,
            HttpResponseError,
            ServiceRequestError,
            ServiceRequestTimeoutError,
            ServiceResponseError,
            ServiceResponseTimeoutError,
        )

        key = f"{self._vault_url}/keys/{key_ref}" if key_ref and not key_ref.startswith("https://") else key_ref
        if isinstance(exc, ServiceRequestTimeoutError | ServiceResponseTimeoutError):
            return KeystoreTimeout(f"Azure Key Vault {self._vault_url} timed out during {operation}")
        if isinstance(exc, ClientAuthenticationError):
            return KeystoreAuthenticationFailed(
                f"Entra ID refused the credentials of app {self._client_id} in tenant {self._tenant}",
                fix="Check tenant_id and client_id and store a current client secret for the app registration.",
            )
        if isinstance(exc, ServiceRequestError | ServiceResponseError):
            return KeystoreUnreachable(f"Azure Key Vault {self._vault_url} is unreachable ({type(exc).__name__})")
        if not isinstance(exc, HttpResponseError):
            return None
        status = exc.status_code or 0
        code = str(getattr(getattr(exc, "error", None), "code", "") or "")
        text = str(getattr(getattr(exc, "error", None), "message", "") or "")
        permission = {"wrap": "wrapKey", "unwrap": "unwrapKey"}.get(operation, "get/list")
        if status == 401:
            return KeystoreAuthenticationFailed(f"Azure Key Vault rejected OpenKCM's token ({code or status})")
        if status == 403 and "disabled" in text.lower():
            return KeystoreKeyDisabled(
                f"Azure key {key or self._vault_url} is disabled",
                fix="Enable the key (or the key version) in the vault, then test the connection again.",
            )
        if status == 403:
            return KeystorePermissionMissing(
                f"permission keys/{permission} missing on {key or self._vault_url} for app {self._client_id}",
                fix=(
                    "Grant the app the role 'Key Vault Crypto Service Encryption User' on the key (or an access "
                    "policy with get, wrapKey and unwrapKey); check the vault's firewall allows OpenKCM."
                ),
                action=f"keys/{permission}",
            )
        if status == 404:
            return KeystoreKeyNotFound(f"Azure key {key or key_ref} was not found")
        if status == 400 and operation == "unwrap":
            return IntegrityFailure()
        if status in (429, 500, 502, 503, 504):
            return KeystoreUnreachable(f"Azure Key Vault could not serve {operation} right now ({status})")
        return KeystoreError(f"Azure Key Vault refused {operation} ({code or status})")


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()
