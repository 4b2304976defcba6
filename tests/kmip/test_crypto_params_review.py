"""Crypto parameters and attribute bounds (found by a review of the operations; each test failed before):
GCM nonces come from the server, a truncated tag or a short nonce is refused cleanly, a repeated compromise
keeps its first date, y- attributes are the server's, and a key's attributes stay small enough to revoke."""

from __future__ import annotations

from openkcm.protocol import ttlv
from openkcm.protocol.tags import Alg, Mode, ObjectType, Op, Reason, RevocationCode, Status, Tag, Usage
from tests.kmip.test_protocol import call
from tests.kmip.wire import request, uid

V = (1, 4)


def attr(name, value):
    return ttlv.structure(Tag.ATTRIBUTE, [ttlv.text(Tag.ATTRIBUTE_NAME, name), value])


def create(core, tenant, mask=None, extra=()):
    attrs = [
        attr("Cryptographic Algorithm", ttlv.enumeration(Tag.ATTRIBUTE_VALUE, Alg.AES)),
        attr("Cryptographic Length", ttlv.integer(Tag.ATTRIBUTE_VALUE, 256)),
        *extra,
    ]
    if mask is not None:
        attrs.append(attr("Cryptographic Usage Mask", ttlv.integer(Tag.ATTRIBUTE_VALUE, mask)))
    payload = [
        ttlv.enumeration(Tag.OBJECT_TYPE, ObjectType.SYMMETRIC_KEY),
        ttlv.structure(Tag.TEMPLATE_ATTRIBUTE, attrs),
    ]
    _, res = call(core, tenant, request(V, (Op.CREATE, payload), (Op.ACTIVATE, [])))
    assert [r.status for r in res] == [Status.SUCCESS] * 2, [(r.reason, r.message) for r in res]
    return res[0].payload.child_value(Tag.UNIQUE_IDENTIFIER)


def gcm_params(tag_length=None):
    kids = [ttlv.enumeration(Tag.BLOCK_CIPHER_MODE, Mode.GCM)]
    if tag_length is not None:
        kids.append(ttlv.integer(Tag.TAG_LENGTH, tag_length))
    return ttlv.structure(Tag.CRYPTOGRAPHIC_PARAMETERS, kids)


def one(core, tenant, op, payload):
    _, res = call(core, tenant, request(V, (op, payload)))
    return res[0]


def revoke_payload(key, code=RevocationCode.KEY_COMPROMISE):
    return [
        uid(key),
        ttlv.structure(Tag.REVOCATION_REASON, [ttlv.enumeration(Tag.REVOCATION_REASON_CODE, code)]),
    ]


# ---- 1. GCM with a client-chosen nonce turns an Encrypt-only key into a decryption oracle -------------
def test_gcm_client_nonce_reuse_decrypts_with_encrypt_only_key(kmip_core, tenant_factory):
    tenant_factory(tenant_id="rv-gcm")
    key = create(kmip_core, "rv-gcm", mask=Usage.ENCRYPT)  # write-only key: Decrypt is refused
    secret = b"attack at dawn, bring 42 coins!!"
    r = one(kmip_core, "rv-gcm", Op.ENCRYPT, [uid(key), gcm_params(), ttlv.byte_string(Tag.DATA, secret)])
    assert r.status == Status.SUCCESS
    c1, iv1 = r.payload.child_value(Tag.DATA), r.payload.child_value(Tag.IV_COUNTER_NONCE)
    r = one(kmip_core, "rv-gcm", Op.DECRYPT, [uid(key), gcm_params(), ttlv.byte_string(Tag.DATA, c1),
                                             ttlv.byte_string(Tag.IV_COUNTER_NONCE, iv1),
                                             ttlv.byte_string(Tag.AUTHENTICATED_ENCRYPTION_TAG, b"\0" * 16)])
    assert r.status == Status.OPERATION_FAILED  # usage mask refuses Decrypt (mapped to 1.x Permission Denied)
    # the same caller re-uses the server's nonce: the reply is the keystream
    r = one(kmip_core, "rv-gcm", Op.ENCRYPT, [uid(key), gcm_params(), ttlv.byte_string(Tag.DATA, bytes(len(c1))),
                                             ttlv.byte_string(Tag.IV_COUNTER_NONCE, iv1)])
    recovered = None
    if r.status == Status.SUCCESS:
        stream = r.payload.child_value(Tag.DATA)
        recovered = bytes(a ^ b for a, b in zip(c1, stream))
    assert recovered != secret, "plaintext recovered with an Encrypt-only key via GCM nonce reuse"


# ---- 2. Decrypt accepts a GCM tag truncated to 12 bytes (Tag Length ignored on Decrypt) ----------------
def test_gcm_decrypt_refuses_truncated_tag(kmip_core, tenant_factory):
    tenant_factory(tenant_id="rv-tag")
    key = create(kmip_core, "rv-tag")
    r = one(kmip_core, "rv-tag", Op.ENCRYPT, [uid(key), gcm_params(), ttlv.byte_string(Tag.DATA, b"x" * 20)])
    data, iv, tag = (r.payload.child_value(t) for t in (Tag.DATA, Tag.IV_COUNTER_NONCE, Tag.AUTHENTICATED_ENCRYPTION_TAG))
    assert len(tag) == 16
    r = one(kmip_core, "rv-tag", Op.DECRYPT, [uid(key), gcm_params(16), ttlv.byte_string(Tag.DATA, data),
                                             ttlv.byte_string(Tag.IV_COUNTER_NONCE, iv),
                                             ttlv.byte_string(Tag.AUTHENTICATED_ENCRYPTION_TAG, tag[:12])])
    assert r.status == Status.OPERATION_FAILED, "a 16-byte-tag ciphertext verified against 12 bytes of tag"


# ---- 3. GCM Decrypt with a short IV escapes as an internal error ------------------------------------
def test_gcm_decrypt_short_iv_is_a_clean_refusal(kmip_core, tenant_factory):
    tenant_factory(tenant_id="rv-iv")
    key = create(kmip_core, "rv-iv")
    r = one(kmip_core, "rv-iv", Op.DECRYPT, [uid(key), gcm_params(), ttlv.byte_string(Tag.DATA, b"x" * 16),
                                           ttlv.byte_string(Tag.IV_COUNTER_NONCE, b"1234"),
                                           ttlv.byte_string(Tag.AUTHENTICATED_ENCRYPTION_TAG, b"t" * 16)])
    assert r.status == Status.OPERATION_FAILED
    assert r.reason != Reason.GENERAL_FAILURE, (r.reason, r.message)


# ---- 4. y- (server-only) custom attributes can be set by a client at Create -------------------------
def test_client_cannot_create_y_attributes(kmip_core, tenant_factory):
    tenant_factory(tenant_id="rv-y")
    payload = [
        ttlv.enumeration(Tag.OBJECT_TYPE, ObjectType.SYMMETRIC_KEY),
        ttlv.structure(Tag.TEMPLATE_ATTRIBUTE, [
            attr("Cryptographic Algorithm", ttlv.enumeration(Tag.ATTRIBUTE_VALUE, Alg.AES)),
            attr("Cryptographic Length", ttlv.integer(Tag.ATTRIBUTE_VALUE, 256)),
            attr("y-server-verified", ttlv.text(Tag.ATTRIBUTE_VALUE, "yes")),
        ]),
    ]
    r = one(kmip_core, "rv-y", Op.CREATE, payload)
    assert r.status == Status.OPERATION_FAILED, "client created a y- (server-owned) attribute"


# ---- 5. No bound on the number of distinct custom attributes: the item hits DynamoDB's 400 KB limit --
def test_custom_attributes_are_bounded(kmip_core, tenant_factory):
    tenant_factory(tenant_id="rv-big")
    key = create(kmip_core, "rv-big")
    big = "v" * 1024
    added = 0
    for i in range(600):
        a = attr(f"x-{i}", ttlv.text(Tag.ATTRIBUTE_VALUE, big))
        r = one(kmip_core, "rv-big", Op.ADD_ATTRIBUTE, [uid(key), a])
        if r.status != Status.SUCCESS:
            assert "would exceed" in r.message, r.message  # the bound, not a storage error
            break
        added += 1
    rev = one(kmip_core, "rv-big", Op.REVOKE, revoke_payload(key))
    assert 0 < added < 600
    assert rev.status == Status.SUCCESS, (
        f"after {added} client-added custom attributes the key can no longer be revoked: {rev.reason} {rev.message}")


# ---- 6. A second compromise Revoke rewrites the Compromise Date of an already Compromised key ---------
def test_second_compromise_keeps_the_first_compromise_date(kmip_core, tenant_factory):
    import time

    tenant_factory(tenant_id="rv-cd")
    key = create(kmip_core, "rv-cd")

    def compromise_date():
        r = one(kmip_core, "rv-cd", Op.GET_ATTRIBUTES, [uid(key), ttlv.text(Tag.ATTRIBUTE_NAME, "Compromise Date")])
        return r.payload.get(Tag.ATTRIBUTE).child_value(Tag.ATTRIBUTE_VALUE)

    assert one(kmip_core, "rv-cd", Op.REVOKE, revoke_payload(key)).status == Status.SUCCESS
    first = compromise_date()
    time.sleep(1.1)
    one(kmip_core, "rv-cd", Op.REVOKE, revoke_payload(key))
    assert compromise_date() == first, "Compromise Date overwritten by a repeated Revoke"
