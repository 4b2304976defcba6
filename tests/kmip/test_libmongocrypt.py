"""libmongocrypt (inside pymongocrypt) against the server over real mutual TLS: the mandatory test.

No mongod runs: an in-memory key vault and our own MongoCryptCallback drive libmongocrypt's real KMIP
client, which speaks TTLV over a TLS socket we open to the server (one connection per KMS request, as the
drivers do). Both modes: default (Register + Activate + Get of a 96-byte Secret Data) and delegated
(Create + Activate + Encrypt/Decrypt on the server)."""

from __future__ import annotations

import socket
import uuid

import bson
import pytest
from bson.binary import STANDARD, Binary
from bson.codec_options import CodecOptions
from pymongocrypt.explicit_encrypter import ExplicitEncrypter
from pymongocrypt.options import MongoCryptOptions
from pymongocrypt.state_machine import MongoCryptCallback

from tests.kmip.conftest import client_context

OPTS = CodecOptions(uuid_representation=STANDARD)
ALGORITHM = "AEAD_AES_256_CBC_HMAC_SHA_512-Deterministic"


class VaultCallback(MongoCryptCallback):
    def __init__(self, port: int, paths) -> None:
        self.port = port
        self.ctx = client_context(paths)
        self.keys: dict[bytes, dict] = {}
        self.requests = 0

    def kms_request(self, kms_context) -> None:
        assert kms_context.kms_provider.startswith("kmip")
        self.requests += 1
        raw = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        with self.ctx.wrap_socket(raw, server_hostname="127.0.0.1") as sock:
            sock.sendall(kms_context.message)
            while kms_context.bytes_needed > 0:
                chunk = sock.recv(kms_context.bytes_needed)
                if not chunk:
                    raise ConnectionError("KMIP server closed the connection early")
                kms_context.feed(chunk)

    def collection_info(self, database, filter):
        return None

    def mark_command(self, database, cmd):
        raise AssertionError("explicit encryption never marks commands")

    def fetch_keys(self, filter):
        query = bson.decode(filter, OPTS)
        wanted = {
            bytes(k) if isinstance(k, (bytes, Binary)) else k.bytes for k in query["$or"][0]["_id"]["$in"]
        }
        for key_id, doc in self.keys.items():
            if key_id in wanted:
                yield bson.encode(doc, codec_options=OPTS)

    def insert_data_key(self, data_key):
        doc = bson.decode(data_key, OPTS)
        key_id = doc["_id"]
        raw = key_id.bytes if isinstance(key_id, uuid.UUID) else bytes(key_id)
        self.keys[raw] = doc
        return raw

    def bson_encode(self, doc):
        return bson.encode(doc, codec_options=OPTS)

    def close(self):
        return None


def _roundtrip(port: int, paths, master_key: dict) -> tuple[VaultCallback, dict]:
    callback = VaultCallback(port, paths)
    kms = {"kmip": {"endpoint": f"127.0.0.1:{port}"}}
    encrypter = ExplicitEncrypter(callback, MongoCryptOptions(kms))
    key_id = encrypter.create_data_key("kmip", master_key=master_key)
    doc = callback.keys[key_id]
    value = bson.encode({"v": "4111-1111-1111-1111"})
    ciphertext = encrypter.encrypt(value, ALGORITHM, key_id=key_id)
    assert bson.decode(encrypter.decrypt(ciphertext))["v"] == "4111-1111-1111-1111"
    encrypter.close()
    # A fresh encrypter has no cached data key: decrypting goes back to the KMIP server.
    fresh = ExplicitEncrypter(callback, MongoCryptOptions(kms))
    before = callback.requests
    assert bson.decode(fresh.decrypt(ciphertext))["v"] == "4111-1111-1111-1111"
    assert callback.requests > before
    fresh.close()
    return callback, doc


def test_default_mode_register_activate_get(runtime, tenant_factory, kmip_server, bundle):
    tenant = tenant_factory(tenant_id="mongo-default")
    _, doc = _roundtrip(kmip_server.port, bundle(tenant.tenant_id, "app"), {})
    key_id = doc["masterKey"]["keyId"]
    assert doc["masterKey"]["provider"] == "kmip" and key_id.startswith("mongo-default.")
    obj = kmip_server.core.services.store.get(tenant.tenant_id, key_id)
    assert obj.object_type == "SECRET_DATA" and obj.state == "ACTIVE"
    assert obj.wrapped is not None and len(obj.wrapped) > 96  # sealed, never stored as the 96 bytes


def test_delegated_mode_create_activate_encrypt_decrypt(runtime, tenant_factory, kmip_server, bundle):
    tenant = tenant_factory(tenant_id="mongo-delegated")
    _, doc = _roundtrip(kmip_server.port, bundle(tenant.tenant_id, "app"), {"delegated": True})
    key_id = doc["masterKey"]["keyId"]
    obj = kmip_server.core.services.store.get(tenant.tenant_id, key_id)
    assert obj.object_type == "SYMMETRIC_KEY" and obj.state == "ACTIVE"
    assert obj.first("Cryptographic Length") == 256 and obj.first("Cryptographic Usage Mask") == 12


def test_disabled_tenant_stops_libmongocrypt(runtime, tenant_factory, kmip_server, bundle):
    """Once the tenant is disabled, a fresh client can no longer unwrap its data key (fails closed)."""
    from pymongocrypt.errors import MongoCryptError

    from openkcm.domain.tenants import DISABLED

    tenant = tenant_factory(tenant_id="mongo-disabled")
    callback, doc = _roundtrip(kmip_server.port, bundle(tenant.tenant_id, "app"), {"delegated": True})
    ciphertext_key = bytes(doc["_id"].bytes)
    runtime.tenants.set_status(tenant.tenant_id, DISABLED)
    # what the epoch poll (or the local event bus) does within epoch_poll_seconds
    kmip_server.core.services.keyring.invalidate(tenant.tenant_id)
    kms = {"kmip": {"endpoint": f"127.0.0.1:{kmip_server.port}"}}
    encrypter = ExplicitEncrypter(callback, MongoCryptOptions(kms))
    with pytest.raises(MongoCryptError):
        encrypter.encrypt(bson.encode({"v": "x"}), ALGORITHM, key_id=ciphertext_key)
    encrypter.close()
