"""Google Cloud KMS at the HTTP boundary. No emulator of Cloud KMS runs here, so the official client
(google-cloud-kms with its REST transport, google-auth service-account credentials) talks to `responses`,
which answers with the documented shapes of the Cloud KMS v1 REST API (keyRings.get, cryptoKeys.get/list,
:encrypt, :decrypt, google.rpc error bodies) and of Google's OAuth token endpoint. The service side checks
the bearer token's signature with the service account's public key and really encrypts with AES-GCM using
the additional authenticated data sent, so a wrong AAD, key or blob fails as it would in Cloud KMS."""

from __future__ import annotations

import base64
import json
import os
import re
import secrets
from dataclasses import dataclass, field
from urllib.parse import parse_qs

import jwt
import pytest
import responses
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from openkcm.domain.keystores.base import (
    KeystoreAuthenticationFailed,
    KeystoreConfigInvalid,
    KeystoreKeyDisabled,
    KeystoreKeyNotFound,
    KeystorePermissionMissing,
)
from openkcm.domain.keystores.gcp import GcpKmsConnector
from openkcm.errors import IntegrityFailure

RING = "projects/acme-prod-4711/locations/europe-west3/keyRings/openkcm"
API = "https://cloudkms.googleapis.com/v1"
TOKEN_URI = "https://oauth2.googleapis.com/token"
SA_EMAIL = "openkcm-l1@acme-prod-4711.iam.gserviceaccount.com"
CTX = {"tenant_id": "t-gcp", "l2_version": "5", "purpose": "openkcm-l2"}
ENUMS = {"ENCRYPT_DECRYPT": 1, "ASYMMETRIC_SIGN": 5, "ENABLED": 1, "DISABLED": 2, "GOOGLE_SYMMETRIC_ENCRYPTION": 1,
         "HSM": 2}


def service_account() -> tuple[dict, rsa.RSAPrivateKey]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    info = {
        "type": "service_account", "project_id": "acme-prod-4711", "private_key_id": secrets.token_hex(20),
        "private_key": pem.decode(), "client_email": SA_EMAIL, "client_id": "112233445566778899",
        "token_uri": TOKEN_URI, "auth_uri": "https://accounts.google.com/o/oauth2/auth",
    }
    return info, key


@dataclass
class CloudKmsSide:
    public_key: rsa.RSAPublicKey
    keys: dict = field(default_factory=dict)  # crypto key id -> {"aes", "state", "purpose"}
    denied: set = field(default_factory=set)  # permissions the service account lacks
    issued: set = field(default_factory=set)
    calls: list = field(default_factory=list)

    def add_key(self, key_id: str, purpose: str = "ENCRYPT_DECRYPT") -> None:
        self.keys[key_id] = {"aes": os.urandom(32), "state": "ENABLED", "purpose": purpose}

    def _enum(self, request, value: str):
        return ENUMS[value] if "enum-encoding=int" in request.url else value

    def _error(self, code: int, status: str, message: str):
        return (code, {}, json.dumps({"error": {"code": code, "message": message, "status": status}}))

    def _authorized(self, request) -> bool:
        token = request.headers.get("Authorization", "").removeprefix("Bearer ")
        if token in self.issued:
            return True
        try:  # a self-signed JWT (google-auth's JWT access for service accounts)
            claims = jwt.decode(token, self.public_key, algorithms=["RS256"], options={"verify_aud": False})
        except jwt.PyJWTError:
            return False
        return claims.get("iss") == SA_EMAIL

    def token(self, request):
        form = {k: v[0] for k, v in parse_qs(request.body if isinstance(request.body, str) else request.body.decode()).items()}
        try:
            jwt.decode(form.get("assertion", ""), self.public_key, algorithms=["RS256"], audience=TOKEN_URI)
        except jwt.PyJWTError:
            return (400, {}, json.dumps({"error": "invalid_grant", "error_description": "Invalid JWT Signature."}))
        access = "ya29." + secrets.token_urlsafe(32)
        self.issued.add(access)
        return (200, {}, json.dumps({"access_token": access, "expires_in": 3599, "token_type": "Bearer"}))

    def handle(self, request):
        path = request.path_url.split("?")[0].removeprefix("/v1/")
        self.calls.append((request.method, path))
        if not self._authorized(request):
            return self._error(401, "UNAUTHENTICATED", "Request had invalid authentication credentials.")
        if path == RING and request.method == "GET":
            return (200, {}, json.dumps({"name": RING, "createTime": "2026-01-01T00:00:00Z"}))
        if path == f"{RING}/cryptoKeys" and request.method == "GET":
            listed = [{"name": f"{RING}/cryptoKeys/{k}", "purpose": self._enum(request, v["purpose"])} for k, v in self.keys.items()]
            return (200, {}, json.dumps({"cryptoKeys": listed, "totalSize": len(listed)}))
        match = re.fullmatch(re.escape(RING) + r"/cryptoKeys/([A-Za-z0-9_-]+)(:encrypt|:decrypt)?", path)
        if not match:
            return self._error(404, "NOT_FOUND", "Not found.")
        key_id, verb = match.group(1), match.group(2)
        name = f"{RING}/cryptoKeys/{key_id}"
        permission = {":encrypt": "useToEncrypt", ":decrypt": "useToDecrypt"}.get(verb, "get")
        if permission in self.denied:
            return self._error(403, "PERMISSION_DENIED",
                               f"Permission 'cloudkms.cryptoKeyVersions.{permission}' denied on resource '{name}' "
                               "(or it may not exist).")
        key = self.keys.get(key_id)
        if key is None:
            return self._error(404, "NOT_FOUND", f"{name} not found.")
        version = f"{name}/cryptoKeyVersions/1"
        if verb is None:
            return (200, {}, json.dumps({
                "name": name, "purpose": self._enum(request, key["purpose"]), "createTime": "2026-01-01T00:00:00Z",
                "primary": {"name": version, "state": self._enum(request, key["state"]),
                            "algorithm": self._enum(request, "GOOGLE_SYMMETRIC_ENCRYPTION"),
                            "protectionLevel": self._enum(request, "HSM")},
            }))
        if key["state"] != "ENABLED":
            return self._error(400, "FAILED_PRECONDITION", f"{version} is not enabled, current state is: {key['state']}.")
        body = json.loads(request.body)
        aad = base64.b64decode(body.get("additionalAuthenticatedData", ""))
        if verb == ":encrypt":
            nonce = os.urandom(12)
            ciphertext = nonce + AESGCM(key["aes"]).encrypt(nonce, base64.b64decode(body["plaintext"]), aad)
            return (200, {}, json.dumps({"name": version, "ciphertext": base64.b64encode(ciphertext).decode(),
                                          "protectionLevel": self._enum(request, "HSM")}))
        blob = base64.b64decode(body["ciphertext"])
        try:
            plaintext = AESGCM(key["aes"]).decrypt(blob[:12], blob[12:], aad)
        except (InvalidTag, ValueError):
            return self._error(400, "INVALID_ARGUMENT", "Decryption failed: the ciphertext is invalid.")
        return (200, {}, json.dumps({"plaintext": base64.b64encode(plaintext).decode(), "usedPrimary": True,
                                      "protectionLevel": self._enum(request, "HSM")}))


@pytest.fixture
def gcp():
    info, private = service_account()
    side = CloudKmsSide(private.public_key())
    side.add_key("tenant-l1")
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        rsps.add_callback(responses.POST, TOKEN_URI, side.token)
        for method in (responses.GET, responses.POST):
            rsps.add_callback(method, re.compile(re.escape(API) + r"/.*"), side.handle)
        yield side, info


def connect(info: dict, key_ref: str | None = "tenant-l1") -> GcpKmsConnector:
    return GcpKmsConnector({"key_ring": RING}, {"service_account_json": json.dumps(info)},
                           keystore_id="ks-gcp", key_ref=key_ref, timeout=10)


def test_encrypt_decrypt_with_aad_round_trip(gcp):
    side, info = gcp
    conn = connect(info)
    conn.test_connection()
    key = conn.check_key()
    assert key.key_id == f"{RING}/cryptoKeys/tenant-l1" and key.state == "ENABLED" and key.origin == "HSM"
    l2 = os.urandom(32)
    blob = conn.wrap(l2, CTX)
    assert conn.unwrap(blob, CTX) == l2
    assert ("POST", f"{RING}/cryptoKeys/tenant-l1:decrypt") in side.calls
    with pytest.raises(IntegrityFailure):  # the AAD names tenant and version
        conn.unwrap(blob, {**CTX, "l2_version": "6"})
    assert connect(info, f"{RING}/cryptoKeys/tenant-l1").unwrap(blob, CTX) == l2
    assert [k.key_ref for k in conn.list_keys()] == ["tenant-l1"]


def test_disabled_version_missing_permission_and_missing_key(gcp):
    side, info = gcp
    blob = connect(info).wrap(os.urandom(32), CTX)
    side.denied.add("useToDecrypt")
    with pytest.raises(KeystorePermissionMissing) as err:
        connect(info).unwrap(blob, CTX)
    assert err.value.message == (
        f"permission cloudkms.cryptoKeyVersions.useToDecrypt missing on {RING}/cryptoKeys/tenant-l1 for {SA_EMAIL}"
    )
    assert "roles/cloudkms.cryptoKeyEncrypterDecrypter" in err.value.fix
    side.denied.clear()
    side.keys["tenant-l1"]["state"] = "DISABLED"
    with pytest.raises(KeystoreKeyDisabled):
        connect(info).check_key()
    with pytest.raises(KeystoreKeyDisabled) as err:
        connect(info).unwrap(blob, CTX)
    assert "DISABLED" in err.value.message
    with pytest.raises(KeystoreKeyNotFound):
        connect(info, "nope").describe_key()


def test_foreign_service_account_key_is_refused(gcp):
    impostor, _ = service_account()  # same e-mail, a key the service side does not know
    with pytest.raises(KeystoreAuthenticationFailed):
        connect(impostor).test_connection()


def test_configuration_is_checked_before_any_call():
    with pytest.raises(KeystoreConfigInvalid):
        GcpKmsConnector({"key_ring": "projects/x"}, {})
    conn = GcpKmsConnector({"key_ring": RING}, {})
    with pytest.raises(KeystoreConfigInvalid):
        conn.wrap(b"x" * 32, CTX)  # no key named
    with pytest.raises(KeystoreAuthenticationFailed):
        conn.with_key("k").wrap(b"x" * 32, CTX)  # no credentials stored


def test_service_account_key_and_tokens_stay_out_of_the_logs(gcp, caplog):
    import logging

    side, info = gcp
    caplog.set_level(logging.DEBUG)
    conn = connect(info)
    conn.unwrap(conn.wrap(os.urandom(32), CTX), CTX)
    logged = "\n".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)
    body = info["private_key"].split("-----")[2].strip().splitlines()
    for value in [info["private_key_id"], *body[1:4], *side.issued]:
        assert value not in logged
