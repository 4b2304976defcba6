"""AWS KMS as an L1 keystore (BYOK): an existing symmetric KMS key in the customer's account.

Reached either through a cross-account IAM role (``role_arn`` + secret ``external_id``: STS AssumeRole,
the recommended way — no long-lived keys) or with given credentials (secrets ``access_key_id`` /
``secret_access_key`` [/ ``session_token``]). The key is named by key ARN, alias name (``alias/…``) or
alias ARN. Wrap is kms:Encrypt and unwrap kms:Decrypt with an encryption context naming tenant and L2
version, so the customer's key policy can condition on it and their CloudTrail shows which tenant's key
was unwrapped. Decrypt always pins ``KeyId``: a blob made under another key is refused.

The EXTERNAL-origin path of seed 000 is a guided flow (DECISIONS 5): :meth:`AwsKmsConnector.create_import_key`
creates a key without material, :meth:`~AwsKmsConnector.get_import_parameters` returns the public
wrapping key and import token, the customer wraps their material on their side, and
:meth:`~AwsKmsConnector.import_key_material` forwards only that wrapped blob. OpenKCM never sees L1
material.
"""

from __future__ import annotations

import base64
import os
import re
import threading
import time
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
    pin,
    unpin,
)
from openkcm.domain.wrapping import Context
from openkcm.errors import IntegrityFailure, OpenKCMError

PROVIDER = "aws-kms"
_KEY_REF = re.compile(
    r"^(arn:aws[a-z-]*:kms:[a-z0-9-]+:\d{12}:(key/[A-Za-z0-9-]+|alias/[A-Za-z0-9/_-]+)"
    r"|alias/[A-Za-z0-9/_-]{1,250}|[A-Za-z0-9-]{36}|mrk-[a-f0-9]{32})$"
)
_ROLE_ARN = re.compile(r"^arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]{1,512}\Z")
_REGION = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d\Z")
# A customer-chosen endpoint receives requests signed with OpenKCM's own credentials when the keystore has
# no keys or role of its own: only AWS KMS endpoints (regional, FIPS, VPC interface endpoints; the China
# partition) qualify, and the deployment's own AWS endpoint (AWS_ENDPOINT_URL: moto in the local stack).
_KMS_ENDPOINT = re.compile(
    r"https://((vpce-[a-z0-9-]+\.)?kms(-fips)?\.[a-z]{2}(-[a-z]+)+-\d\.(vpce\.)?amazonaws\.com(\.cn)?"
    r"|kms(-fips)?\.[a-z]{2}(-[a-z]+)+-\d\.api\.aws)(:443)?/?",
    re.IGNORECASE,
)
_ACTIONS = {
    "wrap": "kms:Encrypt",
    "unwrap": "kms:Decrypt",
    "describe_key": "kms:DescribeKey",
    "test_connection": "kms:ListAliases",
    "list_keys": "kms:ListKeys",
    "get_import_parameters": "kms:GetParametersForImport",
    "import_key_material": "kms:ImportKeyMaterial",
    "create_import_key": "kms:CreateKey",
}
_AUTH_CODES = {
    "UnrecognizedClientException",
    "InvalidClientTokenId",
    "ExpiredTokenException",
    "SignatureDoesNotMatch",
    "IncompleteSignature",
    "InvalidSignatureException",
    "AuthFailure",
}
_UNREACHABLE_CODES = {
    "KMSInternalException",
    "DependencyTimeoutException",
    "ServiceUnavailable",
    "ThrottlingException",
}
_STATE_FIX = {
    "Disabled": "Enable the key in the AWS KMS console (or aws kms enable-key), then test the connection again.",
    "PendingDeletion": "Cancel the key deletion (aws kms cancel-key-deletion) and enable the key.",
    "PendingImport": "Import the key material first (the EXTERNAL-origin import flow), then test again.",
    "Unavailable": "The key's custom key store is disconnected; reconnect it in AWS KMS.",
    "PendingReplicaDeletion": "The replica key is being deleted; link another key.",
}


def _role_session_name(keystore_id: str) -> str:
    return ("openkcm-" + re.sub(r"[^\w+=,.@-]", "-", keystore_id or "keystore"))[:64]


def _arn_home(arn: str) -> tuple[str, str, str] | None:
    """(partition, region, account) of a KMS key ARN."""
    parts = arn.split(":")
    return (parts[1], parts[3], parts[4]) if len(parts) >= 6 and parts[0] == "arn" and parts[2] == "kms" else None


def external_id_for(account_id: str) -> str:
    """The ``sts:ExternalId`` OpenKCM sends when it assumes a customer's role: set by OpenKCM from the
    caller's own account, never chosen by a customer (AWS's confused-deputy guidance: another customer
    cannot make OpenKCM present this account's value, whatever role ARN it configures)."""
    return f"openkcm:{account_id}"


def ambient_credentials_allowed() -> bool:
    """Whether a keystore without role_arn or access keys may use the process's own AWS credentials: only
    against an emulator (AWS_ENDPOINT_URL set: the local stack, tests) or when the operator says so
    (OPENKCM_KMS_AMBIENT_CREDENTIALS=true, a single-customer installation). In a deployment those are
    OpenKCM's credentials, and a keystore of any account could use whatever KMS key they reach."""
    flag = os.environ.get("OPENKCM_KMS_AMBIENT_CREDENTIALS", "").strip().lower() in ("1", "true", "yes")
    return flag or bool(os.environ.get("AWS_ENDPOINT_URL", "").strip())


def require_own_credentials(config: dict[str, Any], secrets: dict[str, Any]) -> None:
    if config.get("role_arn") or secrets.get("access_key_id") or ambient_credentials_allowed():
        return
    raise KeystoreConfigInvalid(
        "an AWS KMS keystore needs role_arn (a role in your account that OpenKCM assumes) or access keys: "
        "OpenKCM does not lend its own credentials to a keystore",
        field="role_arn",
    )


def _endpoint_allowed(endpoint: str) -> bool:
    """An AWS KMS endpoint, the deployment's own AWS endpoint, or one the operator lists (comma-separated,
    exact) in OPENKCM_KMS_ENDPOINTS_ALLOWED: a proxy of their own, or a test's unreachable address."""
    if _KMS_ENDPOINT.fullmatch(endpoint):
        return True
    listed = [
        os.environ.get("AWS_ENDPOINT_URL", ""),
        *os.environ.get("OPENKCM_KMS_ENDPOINTS_ALLOWED", "").split(","),
    ]
    return _loopback_same(endpoint) in {_loopback_same(e) for e in listed if e.strip()}


def _loopback_same(url: str) -> str:
    """An endpoint as compared: no trailing slash, lower case, ``localhost`` spelled as 127.0.0.1."""
    return url.strip().rstrip("/").lower().replace("://localhost", "://127.0.0.1")


class AwsKmsConnector(KeystoreConnector):
    provider = PROVIDER
    required_config = frozenset({"region"})
    optional_config = frozenset({"role_arn", "endpoint_url", "account_id"})
    secret_fields = frozenset({"access_key_id", "secret_access_key", "session_token", "external_id"})

    def __init__(
        self,
        config: dict[str, Any],
        secrets: Any = None,
        *,
        keystore_id: str = "",
        key_ref: str | None = None,
        timeout: float = 10.0,
        client: Any = None,
        external_id: str = "",
    ) -> None:
        super().__init__(keystore_id=keystore_id, key_ref=key_ref, timeout=timeout)
        self.validate_config(config)
        secrets = dict(secrets or {})
        # A keystore stored before OpenKCM set external ids keeps the one its customer chose (its role's
        # trust policy names it); new keystores cannot store one (ops.keystores refuses it).
        self._external_id = secrets.get("external_id") or external_id
        if bool(secrets.get("access_key_id")) != bool(secrets.get("secret_access_key")):
            raise KeystoreConfigInvalid("give both access_key_id and secret_access_key, or neither")
        if client is None:
            require_own_credentials(config, secrets)
        self._region = config["region"]
        self._role_arn = config.get("role_arn") or ""
        self._endpoint = config.get("endpoint_url") or None
        self._secrets = secrets
        self._client = client  # injected (tests: a Stubber-armed client); else built on demand
        self._client_expires = float("inf") if client is not None else 0.0
        self._lock = threading.Lock()

    @classmethod
    def validate_config(cls, config: dict[str, Any]) -> None:
        if not _REGION.match(str(config.get("region", ""))):
            raise KeystoreConfigInvalid("region must be an AWS region such as eu-central-1", field="region")
        endpoint = config.get("endpoint_url")
        if endpoint and not _endpoint_allowed(str(endpoint)):
            raise KeystoreConfigInvalid(
                "endpoint_url must be an AWS KMS endpoint (https://kms[-fips].<region>.amazonaws.com or a VPC "
                "endpoint's https://vpce-....kms.<region>.vpce.amazonaws.com)",
                field="endpoint_url",
            )
        role = config.get("role_arn")
        if role and not _ROLE_ARN.match(str(role)):
            raise KeystoreConfigInvalid(
                "role_arn must be an IAM role ARN (arn:aws:iam::<account>:role/<name>)", field="role_arn"
            )

    @staticmethod
    def validate_key_ref(key_ref: str) -> str:
        if not _KEY_REF.match(key_ref or ""):
            raise KeystoreConfigInvalid(
                "an AWS KMS key is named by key ARN, alias (alias/<name>), alias ARN or key id",
                field="key_ref",
            )
        return key_ref

    # ---- clients -------------------------------------------------------------------------------
    def _kms(self) -> Any:
        with self._lock:
            if self._client is not None and time.time() < self._client_expires:
                return self._client
            import boto3
            from botocore.config import Config

            cfg = Config(
                connect_timeout=min(5.0, self.timeout),
                read_timeout=self.timeout,
                retries={"max_attempts": 2, "mode": "standard"},
            )
            creds: dict[str, Any] = {}
            if self._secrets.get("access_key_id"):
                creds = {
                    "aws_access_key_id": self._secrets["access_key_id"],
                    "aws_secret_access_key": self._secrets["secret_access_key"],
                    "aws_session_token": self._secrets.get("session_token") or None,
                }
            session = boto3.session.Session(region_name=self._region, **creds)
            expires = float("inf")
            if self._role_arn:
                sts = session.client("sts", config=cfg)
                kwargs: dict[str, Any] = {
                    "RoleArn": self._role_arn,
                    "RoleSessionName": _role_session_name(self.keystore_id),
                }
                if self._external_id:
                    kwargs["ExternalId"] = self._external_id
                try:
                    assumed = sts.assume_role(**kwargs)["Credentials"]
                except Exception as exc:
                    raise self._assume_role_error(exc) from exc
                session = boto3.session.Session(
                    region_name=self._region,
                    aws_access_key_id=assumed["AccessKeyId"],
                    aws_secret_access_key=assumed["SecretAccessKey"],
                    aws_session_token=assumed["SessionToken"],
                )
                expires = assumed["Expiration"].timestamp() - 300  # refresh 5 minutes early
            self._client = session.client("kms", endpoint_url=self._endpoint, config=cfg)
            self._client_expires = expires
            return self._client

    def _assume_role_error(self, exc: Exception) -> OpenKCMError:
        code = _code(exc)
        if code in ("AccessDenied", "AccessDeniedException") or code in _AUTH_CODES:
            return KeystoreAuthenticationFailed(
                f"OpenKCM could not assume role {self._role_arn} ({code})",
                fix=(
                    "Check the role's trust policy: it must trust OpenKCM's principal and require the external "
                    "id configured for this keystore (sts:ExternalId)."
                ),
            )
        return self._map_error(exc, "assume_role", "") or KeystoreUnreachable(
            f"STS AssumeRole failed ({code})"
        )

    # ---- backend calls -------------------------------------------------------------------------
    def _test_connection(self) -> None:
        # Authenticates and reaches KMS without naming a key: one page of aliases.
        self._kms().list_aliases(Limit=1)

    def _describe_key(self, key_ref: str) -> KeyInfo:
        meta = self._kms().describe_key(KeyId=key_ref)["KeyMetadata"]
        state = meta.get("KeyState", "")
        spec = meta.get("KeySpec") or meta.get("CustomerMasterKeySpec", "")
        usage = meta.get("KeyUsage") or "ENCRYPT_DECRYPT"  # the API default when a reply omits it
        usable = state == "Enabled" and spec == "SYMMETRIC_DEFAULT" and usage == "ENCRYPT_DECRYPT"
        return KeyInfo(
            key_ref=key_ref,
            key_id=meta.get("Arn", ""),
            state=state,
            usable=usable,
            algorithm=spec,
            origin=meta.get("Origin", ""),
            description=meta.get("Description", ""),
            extra={"key_usage": usage, "key_manager": meta.get("KeyManager", "")},
        )

    def _raise_unusable(self, info: KeyInfo) -> None:
        if info.state != "Enabled":
            raise KeystoreKeyDisabled(
                f"KMS key {info.key_id or info.key_ref} is {info.state}",
                fix=_STATE_FIX.get(info.state, "Enable the key, then test the connection again."),
                key_state=info.state,
            )
        raise KeystoreKeyUnsuitable(
            f"KMS key {info.key_id or info.key_ref} is not symmetric "
            f"(KeySpec {info.algorithm}, KeyUsage {info.extra.get('key_usage', '')})",
            fix="Link a symmetric key: KeySpec SYMMETRIC_DEFAULT with KeyUsage ENCRYPT_DECRYPT.",
        )

    def _list_keys(self) -> list[KeyInfo]:
        kms = self._kms()
        aliases: dict[str, list[str]] = {}
        for page in kms.get_paginator("list_aliases").paginate(PaginationConfig={"MaxItems": 1000}):
            for alias in page.get("Aliases", []):
                if alias.get("TargetKeyId") and not alias["AliasName"].startswith("alias/aws/"):
                    aliases.setdefault(alias["TargetKeyId"], []).append(alias["AliasName"])
        keys = []
        for page in kms.get_paginator("list_keys").paginate(PaginationConfig={"MaxItems": 1000}):
            for key in page.get("Keys", []):
                names = aliases.get(key["KeyId"], [])
                keys.append(
                    KeyInfo(
                        key_ref=key["KeyArn"],
                        key_id=key["KeyArn"],
                        extra={"aliases": ",".join(sorted(names))},
                    )
                )
        return keys

    def _wrap(self, key_ref: str, plaintext: bytes, context: Context) -> bytes:
        reply = self._kms().encrypt(
            KeyId=key_ref, Plaintext=bytes(plaintext), EncryptionContext=dict(context)
        )
        # Pinned to the key ARN KMS used: an alias the customer re-points later (AWS's manual rotation)
        # must not strand the blobs the old key wrapped.
        return pin(str(reply.get("KeyId") or ""), reply["CiphertextBlob"])

    def _unwrap(self, key_ref: str, blob: bytes, context: Context) -> bytes:
        pinned, ciphertext = unpin(bytes(blob))
        key = pinned or key_ref
        if pinned is not None and pinned != key_ref:
            # The key the alias named then; it must be in the account and region of the key it names
            # now (a customer's rotation stays in its account; a blob of someone else's key does not open).
            current = self._describe_key(key_ref).key_id
            if _arn_home(pinned) is None or _arn_home(pinned) != _arn_home(current):
                raise IntegrityFailure()
        # KMS refuses a Disabled or PendingDeletion key by itself; asking its state first makes the error
        # specific (and keeps emulators that do not enforce key state honest).
        info = self._describe_key(key)
        if info.state != "Enabled":
            self._raise_unusable(info)
        reply = self._kms().decrypt(KeyId=key, CiphertextBlob=ciphertext, EncryptionContext=dict(context))
        return reply["Plaintext"]

    # ---- EXTERNAL-origin import (DECISIONS 5) --------------------------------------------------
    def create_import_key(self, description: str = "OpenKCM L1 key (imported material)") -> KeyInfo:
        """Create a symmetric KMS key with Origin EXTERNAL (no material yet: state PendingImport)."""

        def call() -> KeyInfo:
            meta = self._kms().create_key(
                Origin="EXTERNAL",
                KeySpec="SYMMETRIC_DEFAULT",
                KeyUsage="ENCRYPT_DECRYPT",
                Description=description[:8192],
            )["KeyMetadata"]
            return KeyInfo(
                key_ref=meta["Arn"], key_id=meta["Arn"], state=meta.get("KeyState", ""), origin="EXTERNAL"
            )

        return self._call("create_import_key", call, key_ref="")

    def get_import_parameters(
        self,
        key_ref: str | None = None,
        *,
        wrapping_algorithm: str = "RSAES_OAEP_SHA_256",
        wrapping_key_spec: str = "RSA_4096",
    ) -> dict[str, str]:
        """The public key the customer wraps their material with, the import token and its expiry.
        Everything returned is public (base64 strings), safe to show in the API."""
        ref = self._require_key(key_ref)

        def call() -> dict[str, str]:
            reply = self._kms().get_parameters_for_import(
                KeyId=ref, WrappingAlgorithm=wrapping_algorithm, WrappingKeySpec=wrapping_key_spec
            )
            return {
                "key_id": reply["KeyId"],
                "wrapping_algorithm": wrapping_algorithm,
                "wrapping_key_spec": wrapping_key_spec,
                "public_key": base64.b64encode(reply["PublicKey"]).decode(),
                "import_token": base64.b64encode(reply["ImportToken"]).decode(),
                "parameters_valid_to": reply["ParametersValidTo"].isoformat(),
            }

        return self._call("get_import_parameters", call, key_ref=ref)

    def import_key_material(
        self,
        import_token_b64: str,
        encrypted_material_b64: str,
        key_ref: str | None = None,
        *,
        valid_to: Any = None,
    ) -> KeyInfo:
        """Forward the customer's wrapped material (never plaintext L1) with the import token."""
        ref = self._require_key(key_ref)
        try:
            token = base64.b64decode(import_token_b64, validate=True)
            material = base64.b64decode(encrypted_material_b64, validate=True)
        except ValueError as exc:
            raise KeystoreConfigInvalid("import_token and encrypted_key_material must be base64") from exc
        if not token or not 32 <= len(material) <= 4096:
            raise KeystoreConfigInvalid("the wrapped key material has an implausible length")
        kwargs: dict[str, Any] = {"KeyId": ref, "ImportToken": token, "EncryptedKeyMaterial": material}
        if valid_to is None:
            kwargs["ExpirationModel"] = "KEY_MATERIAL_DOES_NOT_EXPIRE"
        else:
            kwargs.update(ExpirationModel="KEY_MATERIAL_EXPIRES", ValidTo=valid_to)

        def call() -> None:
            self._kms().import_key_material(**kwargs)

        self._call("import_key_material", call, key_ref=ref)
        return self.describe_key(ref)

    # ---- error mapping -------------------------------------------------------------------------
    def _map_error(self, exc: BaseException, operation: str, key_ref: str) -> OpenKCMError | None:
        from botocore.exceptions import (
            ClientError,
            ConnectTimeoutError,
            EndpointConnectionError,
            NoCredentialsError,
            ReadTimeoutError,
        )

        if isinstance(exc, ConnectTimeoutError | ReadTimeoutError):
            return KeystoreTimeout(f"AWS KMS in {self._region} timed out during {operation}")
        if isinstance(exc, EndpointConnectionError):
            return KeystoreUnreachable(f"AWS KMS endpoint in {self._region} is unreachable")
        if isinstance(exc, NoCredentialsError):
            return KeystoreAuthenticationFailed("no AWS credentials are configured for this keystore")
        if not isinstance(exc, ClientError):
            return None
        code = _code(exc)
        key = key_ref or "the key"
        action = _ACTIONS.get(operation, "kms:*")
        if code == "AccessDeniedException" or code == "AccessDenied":
            principal = _principal(exc)
            return KeystorePermissionMissing(
                f"permission {action} missing on {key}" + (f" for {principal}" if principal else ""),
                fix=(
                    f"Add a statement to the key policy of {key} (or the IAM policy of "
                    f"{principal or 'the role OpenKCM uses'}) that allows {action}."
                ),
                action=action,
            )
        if code in _AUTH_CODES:
            return KeystoreAuthenticationFailed(f"AWS rejected the keystore credentials ({code})")
        if code == "DisabledException":
            return KeystoreKeyDisabled(f"KMS key {key} is disabled", fix=_STATE_FIX["Disabled"])
        if code == "KMSInvalidStateException":
            return KeystoreKeyDisabled(
                f"KMS key {key} is not in a usable state (pending deletion, pending import or unavailable)",
                fix="Enable the key or cancel its deletion; for an EXTERNAL key, import its material.",
            )
        if code == "NotFoundException":
            return KeystoreKeyNotFound(f"KMS key {key} was not found in {self._region}")
        if code == "InvalidKeyUsageException":
            return KeystoreKeyUnsuitable(f"KMS key {key} does not allow {action}")
        if code in ("InvalidCiphertextException", "IncorrectKeyException"):
            return IntegrityFailure()
        if code in _UNREACHABLE_CODES:
            return KeystoreUnreachable(f"AWS KMS could not serve {operation} right now ({code})")
        if code in (
            "ExpiredImportTokenException",
            "InvalidImportTokenException",
            "IncorrectKeyMaterialException",
        ):
            return KeystoreConfigInvalid(
                f"AWS KMS refused the key material import ({code})",
                fix="Fetch fresh import parameters and wrap the key material again with the new public key.",
            )
        if code == "UnsupportedOperationException":
            return KeystoreKeyUnsuitable(f"AWS KMS does not support {operation} on {key}")
        return KeystoreError(f"AWS KMS refused {operation} ({code})")


def _code(exc: BaseException) -> str:
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code", type(exc).__name__))


def _principal(exc: BaseException) -> str:
    """The principal AWS names in an AccessDenied message ("User: <arn> is not authorized ...")."""
    message = str((getattr(exc, "response", None) or {}).get("Error", {}).get("Message", ""))
    match = re.search(r"User: (arn:aws[a-z-]*:(?:iam|sts)::\d{12}:[\w+=,.@/-]+)", message)
    return match.group(1) if match else ""


__all__ = ["AwsKmsConnector", "KeystoreError"]
