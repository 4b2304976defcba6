"""Azure Key Vault / Managed HSM at the HTTP boundary. No emulator of Key Vault runs here, so the official
SDK (azure-identity + azure-keyvault-keys, their real requests transport) talks to `responses`, which answers
with the documented shapes of the Entra ID token endpoint (client-credentials grant, tenant discovery) and
of the vault's REST API (401 bearer challenge, keys/get, keys list, wrapkey, unwrapkey, error bodies). The
vault side really wraps and unwraps with key material held by the test (RSA-OAEP-256, AES-KW), so a
wrong algorithm, key or blob fails the way the service would."""

from __future__ import annotations

import base64
import json
import os
import re
import secrets
from dataclasses import dataclass, field
from urllib.parse import parse_qs

import pytest
import responses
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap, aes_key_wrap

from openkcm.domain.keystores.azure import AzureKeyVaultConnector
from openkcm.domain.keystores.base import (
    KeystoreAuthenticationFailed,
    KeystoreConfigInvalid,
    KeystoreKeyDisabled,
    KeystoreKeyNotFound,
    KeystorePermissionMissing,
    unpin,
)
from openkcm.errors import IntegrityFailure

TENANT = "3f1c2b7a-9d4e-4c1b-8a6f-2e5d7c9b1a04"
CLIENT = "8b7e6d5c-4a3b-4c2d-9e1f-0a1b2c3d4e5f"
SECRET = "s3cr3t~client~value~" + "x" * 12
LOGIN = "https://login.microsoftonline.com"
CTX = {"tenant_id": "t-azure", "l2_version": "2", "purpose": "openkcm-l2"}
OAEP = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)


def b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64u(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass
class VaultSide:
    """The service side of one vault, answering through `responses` callbacks."""

    url: str
    resource: str
    key_name: str
    kty: str  # RSA-HSM | oct-HSM
    version: str = field(default_factory=lambda: secrets.token_hex(16))
    enabled: bool = True
    allowed: set = field(default_factory=lambda: {"get", "list", "wrapKey", "unwrapKey"})
    issued: set = field(default_factory=set)
    calls: list = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.kty.startswith("RSA"):
            self.private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        else:
            self.aes = os.urandom(32)

    @property
    def kid(self) -> str:
        return f"{self.url}/keys/{self.key_name}/{self.version}"

    def bundle(self) -> dict:
        jwk = {"kid": self.kid, "kty": self.kty, "key_ops": ["wrapKey", "unwrapKey", "encrypt", "decrypt"]}
        if self.kty.startswith("RSA"):
            numbers = self.private.public_key().public_numbers()
            jwk |= {"n": b64u(numbers.n.to_bytes(256, "big")), "e": b64u(numbers.e.to_bytes(3, "big"))}
        attributes = {"enabled": self.enabled, "created": 1767225600, "updated": 1767225600,
                      "recoveryLevel": "Recoverable+Purgeable", "exportable": False}
        return {"key": jwk, "attributes": attributes}

    def register(self, rsps: responses.RequestsMock) -> None:
        rsps.add_callback(responses.GET, re.compile(re.escape(self.url) + r"/keys(\?.*)?$"), self.list_keys)
        rsps.add_callback(responses.GET, re.compile(re.escape(self.url) + r"/keys/[^/?]+(/[0-9a-f]*)?(\?.*)?$"), self.get_key)
        rsps.add_callback(responses.POST, re.compile(re.escape(self.url) + r"/keys/[^/]+/[0-9a-f]*/?wrapkey.*"), self.wrap)
        rsps.add_callback(responses.POST, re.compile(re.escape(self.url) + r"/keys/[^/]+/[0-9a-f]*/?unwrapkey.*"), self.unwrap)

    # -- request handling, as the service does it --
    def _auth(self, request):
        header = request.headers.get("Authorization", "")
        if not header:
            challenge = f'Bearer authorization="{LOGIN}/{TENANT}", resource="{self.resource}"'
            return (401, {"WWW-Authenticate": challenge}, json.dumps({"error": {"code": "Unauthorized",
                    "message": "AKV10000: Request is missing a Bearer or PoP token."}}))
        if header.removeprefix("Bearer ") not in self.issued:
            return (401, {}, json.dumps({"error": {"code": "Unauthorized", "message": "AKV10022: Invalid audience."}}))
        return None

    def _forbidden(self, op: str):
        return (403, {}, json.dumps({"error": {"code": "Forbidden", "message": (
            f"Caller is not authorized to perform action on resource. If role assignments were recently changed, "
            f"please wait several minutes. Caller: appid={CLIENT};oid=0000;iss=https://sts.windows.net/{TENANT}/ "
            f"Action: 'Microsoft.KeyVault/vaults/keys/{op}/action' Resource: '{self.key_name}'"),
            "innererror": {"code": "ForbiddenByRbac"}}}))

    def list_keys(self, request):
        self.calls.append("list")
        if (denied := self._auth(request)) is not None:
            return denied
        item = {"kid": f"{self.url}/keys/{self.key_name}", "attributes": self.bundle()["attributes"]}
        return (200, {}, json.dumps({"value": [item], "nextLink": None}))

    def get_key(self, request):
        self.calls.append("get")
        if (denied := self._auth(request)) is not None:
            return denied
        name = request.path_url.split("/keys/")[1].split("?")[0].split("/")[0]
        if name != self.key_name:
            return (404, {}, json.dumps({"error": {"code": "KeyNotFound", "message":
                    f"A key with (name/id) {name} was not found in this key vault."}}))
        return (200, {}, json.dumps(self.bundle()))

    def _operation(self, request, op: str):
        self.calls.append(op)
        if (denied := self._auth(request)) is not None:
            return denied, None
        if op not in self.allowed:
            return self._forbidden(op), None
        if not self.enabled:
            return (403, {}, json.dumps({"error": {"code": "Forbidden",
                    "message": f"Operation {op} is not allowed on a disabled key."}})), None
        if not request.body:  # the SDK's challenge round sends no body first
            return (400, {}, "{}"), None
        body = json.loads(request.body)
        expected = "RSA-OAEP-256" if self.kty.startswith("RSA") else "A256KW"
        if body.get("alg") != expected:
            return (400, {}, json.dumps({"error": {"code": "BadParameter", "message": "Invalid algorithm."}})), None
        return None, unb64u(body["value"])

    def wrap(self, request):
        error, value = self._operation(request, "wrapKey")
        if error:
            return error
        out = self.private.public_key().encrypt(value, OAEP) if self.kty.startswith("RSA") else aes_key_wrap(self.aes, value)
        return (200, {}, json.dumps({"kid": self.kid, "value": b64u(out)}))

    def unwrap(self, request):
        error, value = self._operation(request, "unwrapKey")
        if error:
            return error
        try:
            out = self.private.decrypt(value, OAEP) if self.kty.startswith("RSA") else aes_key_unwrap(self.aes, value)
        except (ValueError, InvalidUnwrap):
            return (400, {}, json.dumps({"error": {"code": "BadParameter", "message": "Unwrap failed."}}))
        return (200, {}, json.dumps({"kid": self.kid, "value": b64u(out)}))


def register_entra(rsps: responses.RequestsMock, vaults: list[VaultSide], token_log: list) -> None:
    discovery = {
        "token_endpoint": f"{LOGIN}/{TENANT}/oauth2/v2.0/token",
        "authorization_endpoint": f"{LOGIN}/{TENANT}/oauth2/v2.0/authorize",
        "issuer": f"{LOGIN}/{TENANT}/v2.0",
        "device_authorization_endpoint": f"{LOGIN}/{TENANT}/oauth2/v2.0/devicecode",
    }
    rsps.add(responses.GET, re.compile(re.escape(LOGIN) + r"/common/discovery/instance.*"), json={
        "tenant_discovery_endpoint": f"{LOGIN}/{TENANT}/v2.0/.well-known/openid-configuration",
        "api-version": "1.1",
        "metadata": [{"preferred_network": "login.microsoftonline.com", "preferred_cache": "login.windows.net",
                      "aliases": ["login.microsoftonline.com", "login.windows.net"]}],
    })
    rsps.add(responses.GET, re.compile(re.escape(f"{LOGIN}/{TENANT}/v2.0/.well-known/openid-configuration") + ".*"),
             json=discovery)

    def token(request):
        form = {k: v[0] for k, v in parse_qs(request.body if isinstance(request.body, str) else request.body.decode()).items()}
        token_log.append(form.get("scope", ""))
        if form.get("client_id") != CLIENT or form.get("client_secret") != SECRET:
            return (401, {}, json.dumps({"error": "invalid_client", "error_codes": [7000215],
                    "error_description": "AADSTS7000215: Invalid client secret provided."}))
        access = secrets.token_urlsafe(24)
        for vault in vaults:
            vault.issued.add(access)
        return (200, {}, json.dumps({"token_type": "Bearer", "expires_in": 3599, "ext_expires_in": 3599,
                                      "access_token": access}))

    rsps.add_callback(responses.POST, f"{LOGIN}/{TENANT}/oauth2/v2.0/token", token)


@pytest.fixture
def azure():
    vault = VaultSide("https://acme-l1.vault.azure.net", "https://vault.azure.net", "openkcm-l1", "RSA-HSM")
    mhsm = VaultSide("https://acme-hsm.managedhsm.azure.net", "https://managedhsm.azure.net", "l1-aes", "oct-HSM")
    tokens: list = []
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        register_entra(rsps, [vault, mhsm], tokens)
        vault.register(rsps)
        mhsm.register(rsps)
        yield vault, mhsm, tokens


def connect(vault: VaultSide, key_ref=None, secret=SECRET, algorithm=None) -> AzureKeyVaultConnector:
    config = {"vault_url": vault.url, "tenant_id": TENANT, "client_id": CLIENT}
    if algorithm:
        config["algorithm"] = algorithm
    return AzureKeyVaultConnector(config, {"client_secret": secret}, keystore_id="ks-az", key_ref=key_ref, timeout=10)


def test_rsa_oaep_256_round_trip_through_the_vault(azure):
    vault, _, tokens = azure
    conn = connect(vault, vault.key_name)
    conn.test_connection()
    info = conn.check_key()
    assert info.key_id == vault.kid and info.extra["key_type"] == "RSA-HSM"
    l2 = os.urandom(32)
    blob = conn.wrap(l2, CTX)
    assert conn.unwrap(blob, CTX) == l2
    assert "unwrapKey" in vault.calls  # unwrap ran in the vault, not locally
    assert tokens and all(scope == "https://vault.azure.net/.default" for scope in tokens)
    with pytest.raises(IntegrityFailure):  # bound to tenant and version
        conn.unwrap(blob, {**CTX, "tenant_id": "t-other"})
    assert [k.key_ref for k in conn.list_keys()] == [vault.key_name]
    # By full key id URL as well.
    assert connect(vault, vault.kid).unwrap(blob, CTX) == l2


def test_a256kw_on_managed_hsm(azure):
    _, mhsm, tokens = azure
    conn = connect(mhsm, mhsm.key_name, algorithm="A256KW")
    assert conn.check_key().extra["key_type"] == "oct-HSM"
    l2 = os.urandom(32)
    blob = conn.wrap(l2, CTX)
    pinned, wrapped = unpin(blob)  # pinned to the key version that wrapped it
    assert pinned == mhsm.kid
    assert aes_key_unwrap(mhsm.aes, wrapped)[16:] == l2  # the vault's AES-KW, context digest first
    assert conn.unwrap(blob, CTX) == l2
    assert {"wrapKey", "unwrapKey"} <= set(mhsm.calls)
    assert "https://managedhsm.azure.net/.default" in tokens


def test_wrong_client_secret_is_an_authentication_error(azure):
    vault, _, _ = azure
    with pytest.raises(KeystoreAuthenticationFailed) as err:
        connect(vault, vault.key_name, secret="wrong").test_connection()
    assert CLIENT in err.value.message and "client secret" in err.value.fix


def test_disabled_key_missing_permission_and_missing_key(azure):
    vault, _, _ = azure
    conn = connect(vault, vault.key_name)
    blob = conn.wrap(os.urandom(32), CTX)
    vault.allowed.discard("unwrapKey")
    with pytest.raises(KeystorePermissionMissing) as err:
        connect(vault, vault.key_name).unwrap(blob, CTX)
    assert err.value.message == f"permission keys/unwrapKey missing on {vault.url}/keys/{vault.key_name} for app {CLIENT}"
    vault.allowed.add("unwrapKey")
    vault.enabled = False
    with pytest.raises(KeystoreKeyDisabled):
        connect(vault, vault.key_name).check_key()
    with pytest.raises(KeystoreKeyDisabled):
        connect(vault, vault.key_name).unwrap(blob, CTX)
    with pytest.raises(KeystoreKeyNotFound):
        connect(vault, "no-such-key").describe_key()


def test_configuration_is_checked_before_any_call():
    with pytest.raises(KeystoreConfigInvalid):
        AzureKeyVaultConnector({"vault_url": "https://evil.example.com", "tenant_id": TENANT, "client_id": CLIENT}, {})
    with pytest.raises(KeystoreConfigInvalid):
        AzureKeyVaultConnector.validate_key_ref("https://other.example.com/keys/x")


def test_client_secret_and_tokens_stay_out_of_the_logs(azure, caplog):
    import logging

    vault, _, _ = azure
    caplog.set_level(logging.DEBUG)
    conn = connect(vault, vault.key_name)
    conn.unwrap(conn.wrap(os.urandom(32), CTX), CTX)
    with pytest.raises(KeystoreAuthenticationFailed) as err:
        connect(vault, vault.key_name, secret="wrong-" + SECRET).test_connection()
    logged = "\n".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)
    assert logged  # the SDKs did log their requests
    for value in [SECRET, *vault.issued]:
        assert value not in logged and value not in str(err.value.to_dict())
