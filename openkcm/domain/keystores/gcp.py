"""Google Cloud KMS as an L1 keystore (BYOK), through the official ``google-cloud-kms`` client with its
REST transport (DECISIONS 11: its default gRPC transport would bypass HTTP-level tests and needs HTTP/2
egress; REST is plain HTTPS to ``cloudkms.googleapis.com``).

Configuration: ``key_ring`` (``projects/<p>/locations/<l>/keyRings/<r>``) and optionally ``api_endpoint``
(a Private Service Connect or regional endpoint host). Secret: ``service_account_json`` (the JSON key of a
service account holding ``roles/cloudkms.cryptoKeyEncrypterDecrypter`` on the key). The key is named by its
CryptoKey id in the key ring or by its full resource name.

Wrap is Encrypt and unwrap Decrypt with ``additional_authenticated_data`` = the canonical encoding of the
context (tenant and L2 version): Cloud KMS binds it in its AEAD, so a blob moved to another tenant or
version does not decrypt.
"""

from __future__ import annotations

import json
import re
from typing import Any

from openkcm.domain.envelope import binding
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
from openkcm.domain.wrapping import Context
from openkcm.errors import IntegrityFailure, OpenKCMError

PROVIDER = "gcp-kms"
_KEY_RING = re.compile(r"^projects/[a-z][a-z0-9-]{4,28}[a-z0-9]/locations/[a-z0-9-]{1,63}/keyRings/[A-Za-z0-9_-]{1,63}\Z")
_KEY_ID = re.compile(r"^[A-Za-z0-9_-]{1,63}\Z")
_ENDPOINT = re.compile(r"^[a-z0-9.-]+\.(googleapis\.com|p\.googleapis\.com)\Z")
_PERMISSIONS = {
    "wrap": "cloudkms.cryptoKeyVersions.useToEncrypt",
    "unwrap": "cloudkms.cryptoKeyVersions.useToDecrypt",
    "describe_key": "cloudkms.cryptoKeys.get",
    "list_keys": "cloudkms.cryptoKeys.list",
    "test_connection": "cloudkms.keyRings.get",
}


class GcpKmsConnector(KeystoreConnector):
    provider = PROVIDER
    required_config = frozenset({"key_ring"})
    optional_config = frozenset({"api_endpoint"})
    secret_fields = frozenset({"service_account_json"})

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
        self._key_ring = str(config["key_ring"])
        self._endpoint = config.get("api_endpoint") or None
        self._sa_json = (secrets or {}).get("service_account_json") or ""
        self._client: Any = None
        self._principal = ""
        if self._sa_json:
            try:
                self._principal = str(json.loads(self._sa_json).get("client_email", ""))
            except ValueError:
                raise KeystoreConfigInvalid("service_account_json is not a service-account JSON key") from None

    @classmethod
    def validate_config(cls, config: dict[str, Any]) -> None:
        if not _KEY_RING.match(str(config.get("key_ring", ""))):
            raise KeystoreConfigInvalid(
                "key_ring must read projects/<project>/locations/<location>/keyRings/<ring>", field="key_ring"
            )
        if config.get("api_endpoint") and not _ENDPOINT.match(str(config["api_endpoint"])):
            raise KeystoreConfigInvalid("api_endpoint must be a googleapis.com host", field="api_endpoint")

    @staticmethod
    def validate_key_ref(key_ref: str) -> str:
        if _KEY_ID.match(key_ref) or re.match(_KEY_RING.pattern[:-2] + r"/cryptoKeys/[A-Za-z0-9_-]{1,63}\Z", key_ref):
            return key_ref
        raise KeystoreConfigInvalid("a Cloud KMS key is named by its CryptoKey id or full resource name", field="key_ref")

    def _name(self, key_ref: str) -> str:
        self.validate_key_ref(key_ref)
        if key_ref.startswith("projects/"):
            if not key_ref.startswith(self._key_ring + "/cryptoKeys/"):
                raise KeystoreConfigInvalid("the key must belong to this keystore's key ring", field="key_ref")
            return key_ref
        return f"{self._key_ring}/cryptoKeys/{key_ref}"

    def _kms(self) -> Any:
        if self._client is None:
            if not self._sa_json:
                raise KeystoreAuthenticationFailed("no service-account key is stored for this keystore")
            from google.api_core.client_options import ClientOptions
            from google.cloud import kms_v1
            from google.oauth2 import service_account

            try:
                credentials = service_account.Credentials.from_service_account_info(
                    json.loads(self._sa_json), scopes=["https://www.googleapis.com/auth/cloudkms"]
                )
            except (ValueError, KeyError) as exc:
                raise KeystoreConfigInvalid("service_account_json is not a usable service-account key") from exc
            options = ClientOptions(api_endpoint=self._endpoint) if self._endpoint else None
            self._client = kms_v1.KeyManagementServiceClient(
                credentials=credentials, transport="rest", client_options=options
            )
        return self._client

    @staticmethod
    def _aad(context: Context) -> bytes:
        return binding("openkcm/l1-gcp", context)

    # ---- backend calls -------------------------------------------------------------------------
    def _test_connection(self) -> None:
        self._kms().get_key_ring(request={"name": self._key_ring}, timeout=self.timeout)

    def _describe_key(self, key_ref: str) -> KeyInfo:
        from google.cloud import kms_v1

        key = self._kms().get_crypto_key(request={"name": self._name(key_ref)}, timeout=self.timeout)
        purpose = kms_v1.CryptoKey.CryptoKeyPurpose(key.purpose).name
        primary = key.primary
        state = kms_v1.CryptoKeyVersion.CryptoKeyVersionState(primary.state).name if primary else "NO_PRIMARY"
        algorithm = kms_v1.CryptoKeyVersion.CryptoKeyVersionAlgorithm(primary.algorithm).name if primary else ""
        level = kms_v1.ProtectionLevel(primary.protection_level).name if primary else ""
        return KeyInfo(
            key_ref=key_ref,
            key_id=key.name,
            state=state,
            usable=purpose == "ENCRYPT_DECRYPT" and state == "ENABLED",
            algorithm=algorithm,
            origin=level,
            extra={"purpose": purpose},
        )

    def _raise_unusable(self, info: KeyInfo) -> None:
        if info.extra.get("purpose") != "ENCRYPT_DECRYPT":
            raise KeystoreKeyUnsuitable(
                f"Cloud KMS key {info.key_id} has purpose {info.extra.get('purpose')}, not ENCRYPT_DECRYPT",
                fix="Link a symmetric key (purpose ENCRYPT_DECRYPT, GOOGLE_SYMMETRIC_ENCRYPTION).",
            )
        raise KeystoreKeyDisabled(
            f"the primary version of Cloud KMS key {info.key_id} is {info.state}",
            fix="Enable (or restore) the key's primary version in Cloud KMS, then test the connection again.",
        )

    def _list_keys(self) -> list[KeyInfo]:
        keys = []
        for key in self._kms().list_crypto_keys(request={"parent": self._key_ring}, timeout=self.timeout):
            keys.append(KeyInfo(key_ref=key.name.rsplit("/", 1)[-1], key_id=key.name))
        return keys

    def _wrap(self, key_ref: str, plaintext: bytes, context: Context) -> bytes:
        reply = self._kms().encrypt(
            request={"name": self._name(key_ref), "plaintext": bytes(plaintext), "additional_authenticated_data": self._aad(context)},
            timeout=self.timeout,
        )
        return bytes(reply.ciphertext)

    def _unwrap(self, key_ref: str, blob: bytes, context: Context) -> bytes:
        reply = self._kms().decrypt(
            request={"name": self._name(key_ref), "ciphertext": bytes(blob), "additional_authenticated_data": self._aad(context)},
            timeout=self.timeout,
        )
        return bytes(reply.plaintext)

    # ---- error mapping -------------------------------------------------------------------------
    def _map_error(self, exc: BaseException, operation: str, key_ref: str) -> OpenKCMError | None:
        from google.api_core import exceptions as gexc
        from google.auth import exceptions as auth_exc

        name = f"{self._key_ring}/cryptoKeys/{key_ref}" if key_ref and not key_ref.startswith("projects/") else key_ref
        if isinstance(exc, auth_exc.RefreshError):
            return KeystoreAuthenticationFailed(
                f"Google refused the service-account credentials{' of ' + self._principal if self._principal else ''}",
                fix="Store a current JSON key of the service account (or re-enable the account).",
            )
        if isinstance(exc, auth_exc.TransportError):
            return KeystoreUnreachable("Google's token endpoint is unreachable")
        if isinstance(exc, gexc.DeadlineExceeded | gexc.GatewayTimeout):
            return KeystoreTimeout(f"Cloud KMS timed out during {operation}")
        if isinstance(exc, gexc.Unauthorized):
            return KeystoreAuthenticationFailed("Cloud KMS rejected the service account's token")
        if isinstance(exc, gexc.Forbidden):
            permission = _PERMISSIONS.get(operation, "cloudkms.*")
            target = name or self._key_ring
            return KeystorePermissionMissing(
                f"permission {permission} missing on {target}" + (f" for {self._principal}" if self._principal else ""),
                fix=(
                    f"Grant {self._principal or 'the service account'} the role "
                    f"roles/cloudkms.cryptoKeyEncrypterDecrypter on {target} (it includes {permission})."
                ),
                action=permission,
            )
        if isinstance(exc, gexc.NotFound):
            return KeystoreKeyNotFound(f"Cloud KMS key {name or self._key_ring} was not found")
        status = _rpc_status(exc)
        if isinstance(exc, gexc.FailedPrecondition) or status == "FAILED_PRECONDITION":
            return KeystoreKeyDisabled(
                f"Cloud KMS key {name} cannot be used: {_short(exc)}",
                fix="Enable (or restore) the key's primary version in Cloud KMS, then test the connection again.",
            )
        if operation == "unwrap" and (isinstance(exc, gexc.InvalidArgument) or status == "INVALID_ARGUMENT"):
            return IntegrityFailure()
        if isinstance(exc, gexc.ServiceUnavailable | gexc.InternalServerError | gexc.TooManyRequests):
            return KeystoreUnreachable(f"Cloud KMS could not serve {operation} right now ({type(exc).__name__})")
        if isinstance(exc, gexc.GoogleAPICallError):
            return KeystoreError(f"Cloud KMS refused {operation} ({type(exc).__name__})")
        return None


def _rpc_status(exc: BaseException) -> str:
    """The google.rpc status name of a REST error body (the REST transport maps only the HTTP code)."""
    response = getattr(exc, "response", None)
    try:
        return str(response.json()["error"]["status"]) if response is not None else ""
    except (ValueError, KeyError, TypeError, AttributeError):
        return ""


def _short(exc: BaseException) -> str:
    """The service's own error message (not the request URL the client library prefixes it with)."""
    response = getattr(exc, "response", None)
    try:
        message = str(response.json()["error"]["message"]) if response is not None else ""
    except (ValueError, KeyError, TypeError, AttributeError):
        message = ""
    return re.sub(r"\s+", " ", message)[:200] or type(exc).__name__
