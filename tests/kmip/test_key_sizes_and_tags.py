"""Key sizes are checked where keys enter (Register, Derive Key) so nothing later fails inside the crypto
library or allocates what a client claims; a shortened GCM tag that Encrypt hands out verifies on
Decrypt; deleting an attribute the object does not have is a KMIP error, not an internal one."""

from __future__ import annotations

from openkcm.protocol import ttlv
from openkcm.protocol.tags import Alg, KeyFormat, Mode, ObjectType, Op, Reason, Status, Tag
from tests.kmip.test_protocol import call, create_payload
from tests.kmip.wire import request, uid


def _register(
    material: bytes, length: int | None, alg: int | None = Alg.AES, template_alg: int | None = None
) -> list[ttlv.TTLV]:
    block = [
        ttlv.enumeration(Tag.KEY_FORMAT_TYPE, KeyFormat.RAW),
        ttlv.structure(Tag.KEY_VALUE, [ttlv.byte_string(Tag.KEY_MATERIAL, material)]),
    ]
    if alg is not None:
        block.append(ttlv.enumeration(Tag.CRYPTOGRAPHIC_ALGORITHM, alg))
    if length is not None:
        block.append(ttlv.integer(Tag.CRYPTOGRAPHIC_LENGTH, length))
    template = []
    if template_alg is not None:
        template.append(
            ttlv.structure(
                Tag.ATTRIBUTE,
                [
                    ttlv.text(Tag.ATTRIBUTE_NAME, "Cryptographic Algorithm"),
                    ttlv.enumeration(Tag.ATTRIBUTE_VALUE, template_alg),
                ],
            )
        )
    return [
        ttlv.enumeration(Tag.OBJECT_TYPE, ObjectType.SYMMETRIC_KEY),
        ttlv.structure(Tag.TEMPLATE_ATTRIBUTE, template),
        ttlv.structure(Tag.SYMMETRIC_KEY, [ttlv.structure(Tag.KEY_BLOCK, block)]),
    ]


def test_register_refuses_a_length_that_is_not_the_materials(kmip_core, tenant_factory):
    tenant_factory(tenant_id="sizes")
    # the claimed length used to be stored as is, and ReKey allocated it: 2**31 bits took ~3 GiB
    _, results = call(
        kmip_core, "sizes", request((1, 2), (Op.REGISTER, _register(b"k" * 32, 2**31 - 1)), (Op.REKEY, []))
    )
    assert results[0].status == Status.OPERATION_FAILED and "Cryptographic Length" in results[0].message
    _, results = call(kmip_core, "sizes", request((1, 2), (Op.REGISTER, _register(b"k" * 5, None))))
    assert results[0].status == Status.OPERATION_FAILED and "128, 192 or 256 bits" in results[0].message
    _, results = call(
        kmip_core, "sizes", request((1, 2), (Op.REGISTER, _register(b"k" * 24, 192)), (Op.REKEY, []))
    )
    assert [r.status for r in results] == [Status.SUCCESS, Status.SUCCESS]
    _, results = call(
        kmip_core, "sizes", request((1, 2), (Op.REGISTER, _register(b"k" * 64, 512, Alg.HMAC_SHA256)))
    )
    assert results[0].status == Status.SUCCESS  # other algorithms keep their own sizes
    # the algorithm Register stores (a template attribute wins over the Key Block's) is the one checked
    sneaky = _register(b"k" * 5, None, Alg.HMAC_SHA256, template_alg=Alg.AES)
    _, results = call(kmip_core, "sizes", request((1, 2), (Op.REGISTER, sneaky)))
    assert results[0].status == Status.OPERATION_FAILED and "128, 192 or 256 bits" in results[0].message
    hmac_in_template = _register(b"k" * 64, None, None, template_alg=Alg.HMAC_SHA512)
    _, results = call(kmip_core, "sizes", request((1, 2), (Op.REGISTER, hmac_in_template)))
    assert results[0].status == Status.SUCCESS, results[0].message
    triple_des = _register(b"k" * 24, 168, Alg.TRIPLE_DES)  # 168 effective bits in 24 bytes
    _, results = call(kmip_core, "sizes", request((1, 2), (Op.REGISTER, triple_des)))
    assert results[0].status == Status.SUCCESS, results[0].message


def test_derive_key_refuses_an_aes_size_aes_does_not_have(kmip_core, tenant_factory):
    from openkcm.protocol.tags import Derivation

    tenant_factory(tenant_id="derive-sizes")

    def derive(bits: int) -> list[ttlv.TTLV]:
        return [
            ttlv.enumeration(Tag.OBJECT_TYPE, ObjectType.SYMMETRIC_KEY),
            ttlv.enumeration(Tag.DERIVATION_METHOD, Derivation.HKDF),
            ttlv.structure(Tag.DERIVATION_PARAMETERS, [ttlv.byte_string(Tag.DERIVATION_DATA, b"x")]),
            ttlv.structure(Tag.ATTRIBUTES, [ttlv.integer(Tag.CRYPTOGRAPHIC_LENGTH, bits)]),
        ]

    attrs = ttlv.structure(
        Tag.ATTRIBUTES,
        [ttlv.enumeration(Tag.CRYPTOGRAPHIC_ALGORITHM, Alg.AES), ttlv.integer(Tag.CRYPTOGRAPHIC_LENGTH, 256)],
    )
    create = (Op.CREATE, [ttlv.enumeration(Tag.OBJECT_TYPE, ObjectType.SYMMETRIC_KEY), attrs])
    _, results = call(
        kmip_core, "derive-sizes", request((2, 0), create, (Op.ACTIVATE, []), (Op.DERIVE_KEY, derive(136)))
    )
    assert (
        results[2].status == Status.OPERATION_FAILED and results[2].reason == Reason.INVALID_ATTRIBUTE_VALUE
    )
    _, results = call(
        kmip_core, "derive-sizes", request((2, 0), create, (Op.ACTIVATE, []), (Op.DERIVE_KEY, derive(192)))
    )
    assert results[2].status == Status.SUCCESS


def test_a_shortened_gcm_tag_from_encrypt_verifies_on_decrypt(kmip_core, tenant_factory):
    tenant_factory(tenant_id="gcm-tags")
    _, results = call(
        kmip_core, "gcm-tags", request((1, 4), (Op.CREATE, create_payload()), (Op.ACTIVATE, []))
    )
    key = results[0].payload.child_value(Tag.UNIQUE_IDENTIFIER)

    def params(tag_length: int) -> ttlv.TTLV:
        return ttlv.structure(
            Tag.CRYPTOGRAPHIC_PARAMETERS,
            [
                ttlv.enumeration(Tag.BLOCK_CIPHER_MODE, Mode.GCM),
                ttlv.enumeration(Tag.CRYPTOGRAPHIC_ALGORITHM, Alg.AES),
                ttlv.integer(Tag.TAG_LENGTH, tag_length),
            ],
        )

    aad = ttlv.byte_string(Tag.AUTHENTICATED_ENCRYPTION_ADDITIONAL_DATA, b"header")
    for tag_length in (12, 14, 16):
        encrypt = [uid(key), params(tag_length), ttlv.byte_string(Tag.DATA, b"field value"), aad]
        _, [sealed] = call(kmip_core, "gcm-tags", request((1, 4), (Op.ENCRYPT, encrypt)))
        assert sealed.status == Status.SUCCESS, sealed.message
        tag = sealed.payload.child_value(Tag.AUTHENTICATED_ENCRYPTION_TAG)
        assert len(tag) == tag_length
        opened = [
            uid(key),
            params(tag_length),
            ttlv.byte_string(Tag.DATA, sealed.payload.child_value(Tag.DATA)),
            ttlv.byte_string(Tag.IV_COUNTER_NONCE, sealed.payload.child_value(Tag.IV_COUNTER_NONCE)),
            aad,
            ttlv.byte_string(Tag.AUTHENTICATED_ENCRYPTION_TAG, tag),
        ]
        _, [plain] = call(kmip_core, "gcm-tags", request((1, 4), (Op.DECRYPT, opened)))
        assert plain.status == Status.SUCCESS and plain.payload.child_value(Tag.DATA) == b"field value", (
            plain.message
        )
        forged = [*opened[:-1], ttlv.byte_string(Tag.AUTHENTICATED_ENCRYPTION_TAG, bytes(tag_length))]
        _, [refused] = call(kmip_core, "gcm-tags", request((1, 4), (Op.DECRYPT, forged)))
        assert refused.status == Status.OPERATION_FAILED and refused.reason == Reason.CRYPTOGRAPHIC_FAILURE


def test_deleting_an_attribute_the_object_lacks_is_a_kmip_error(kmip_core, tenant_factory):
    tenant_factory(tenant_id="del-attr")
    attrs = ttlv.structure(
        Tag.ATTRIBUTES,
        [ttlv.enumeration(Tag.CRYPTOGRAPHIC_ALGORITHM, Alg.AES), ttlv.integer(Tag.CRYPTOGRAPHIC_LENGTH, 256)],
    )
    create = [ttlv.enumeration(Tag.OBJECT_TYPE, ObjectType.SYMMETRIC_KEY), attrs]
    _, results = call(kmip_core, "del-attr", request((2, 0), (Op.CREATE, create)))
    key = results[0].payload.child_value(Tag.UNIQUE_IDENTIFIER)
    current = ttlv.structure(
        Tag.CURRENT_ATTRIBUTE, [ttlv.text(Tag.CONTACT_INFORMATION, "nobody@example.com")]
    )
    _, [result] = call(kmip_core, "del-attr", request((2, 0), (Op.DELETE_ATTRIBUTE, [uid(key), current])))
    assert result.status == Status.OPERATION_FAILED and result.reason == Reason.ATTRIBUTE_NOT_FOUND, (
        result.message
    )


def test_one_message_of_many_locates_reads_the_tenants_objects_once(kmip_core, tenant_factory, monkeypatch):
    """Locate without a Name reads the partition: once per message, not once per item. Locate by Name reads
    only that name's objects through the index, never the partition."""
    tenant_factory(tenant_id="locating")
    store = kmip_core.services.store
    reads = []
    original = store.all

    def counted(tenant_id):
        reads.append(tenant_id)
        return original(tenant_id)

    monkeypatch.setattr(store, "all", counted)
    name = ttlv.structure(
        Tag.ATTRIBUTE,
        [
            ttlv.text(Tag.ATTRIBUTE_NAME, "Name"),
            ttlv.structure(
                Tag.ATTRIBUTE_VALUE, [ttlv.text(Tag.NAME_VALUE, "wanted"), ttlv.enumeration(Tag.NAME_TYPE, 1)]
            ),
        ],
    )
    of_type = ttlv.structure(
        Tag.ATTRIBUTE,
        [
            ttlv.text(Tag.ATTRIBUTE_NAME, "Object Type"),
            ttlv.enumeration(Tag.ATTRIBUTE_VALUE, ObjectType.SYMMETRIC_KEY),
        ],
    )
    _, results = call(kmip_core, "locating", request((1, 2), *[(Op.LOCATE, [of_type])] * 40))
    assert [r.status for r in results] == [Status.SUCCESS] * 40 and len(reads) == 1
    reads.clear()
    _, results = call(kmip_core, "locating", request((1, 2), *[(Op.LOCATE, [name])] * 40))
    assert [r.status for r in results] == [Status.SUCCESS] * 40 and reads == []
    # an item that may change objects in between: the next Locate sees the change
    for wanted in (of_type, name):
        reads.clear()
        _, results = call(
            kmip_core,
            "locating",
            request((1, 2), (Op.LOCATE, [wanted]), (Op.CREATE, create_payload(name="wanted")), (Op.LOCATE, [wanted])),
        )
        first, _, second = (len(r.payload.all(Tag.UNIQUE_IDENTIFIER)) for r in results)
        assert second == first + 1
        assert len(reads) == (2 if wanted is of_type else 0)
