"""Golden wire tests: libmongocrypt's captured requests replayed through the bytes-in/bytes-out core.

Our responses must have the same structure (tags, types, enumerations, integers, byte-string lengths) as
the PyKMIP replies libmongocrypt accepted; identifiers, time stamps, IVs and ciphertexts differ by nature."""

from __future__ import annotations

from pathlib import Path

from openkcm.domain.pki import ClientIdentity
from openkcm.protocol import ttlv
from openkcm.protocol.tags import Tag
from openkcm.protocol.ttlv import TTLV
from tests.identities import recorded_identity

CAPTURES = Path(__file__).resolve().parent / "captures" / "libmongocrypt"
VARIABLE = {Tag.UNIQUE_IDENTIFIER, Tag.TIME_STAMP}


def shape(item: TTLV):
    if item.type == ttlv.STRUCTURE:
        return (item.tag, [shape(c) for c in item.value])
    if item.tag in VARIABLE:
        return (item.tag, item.type)
    if item.type == ttlv.BYTE_STRING:
        return (item.tag, item.type, len(item.value))
    return (item.tag, item.type, item.value)


def _replace_uid(item: TTLV, uid: str) -> None:
    if item.type == ttlv.STRUCTURE:
        for child in item.value:
            _replace_uid(child, uid)
    elif item.tag == Tag.UNIQUE_IDENTIFIER:
        item.value = uid


def identity(tenant_id: str) -> ClientIdentity:
    return recorded_identity(tenant_id, "app", f"CN=app.{tenant_id},OU=app,O={tenant_id}", "abc123")


def _replay(kmip_core, tenant_id: str, mode: str) -> list[TTLV]:
    who = identity(tenant_id)
    uid = None
    responses = []
    for index in range(1, 6):
        request = ttlv.decode((CAPTURES / mode / f"{index:02d}-request.ttlv").read_bytes())
        if uid is not None:
            _replace_uid(request, uid)
        if mode == "delegated" and index >= 4:
            # decrypt what OUR server encrypted (the captured ciphertext was made under PyKMIP's key)
            ours = responses[2].get(Tag.BATCH_ITEM).get(Tag.RESPONSE_PAYLOAD)
            payload = request.get(Tag.BATCH_ITEM).get(Tag.REQUEST_PAYLOAD)
            payload.get(Tag.DATA).value = ours.child_value(Tag.DATA)
            payload.get(Tag.IV_COUNTER_NONCE).value = ours.child_value(Tag.IV_COUNTER_NONCE)
        response = ttlv.decode(kmip_core.handle(ttlv.encode(request), who, "127.0.0.1:1"))
        expected = ttlv.decode((CAPTURES / mode / f"{index:02d}-response.ttlv").read_bytes())
        assert shape(response) == shape(expected), f"{mode} step {index}"
        if uid is None:
            uid = response.get(Tag.BATCH_ITEM).get(Tag.RESPONSE_PAYLOAD).child_value(Tag.UNIQUE_IDENTIFIER)
        responses.append(response)
    return responses


def test_default_mode_replay_matches_the_accepted_replies(kmip_core, tenant_factory):
    tenant = tenant_factory(tenant_id="wire-default")
    responses = _replay(kmip_core, tenant.tenant_id, "default")
    registered = ttlv.decode((CAPTURES / "default" / "01-request.ttlv").read_bytes())
    sent = _find(registered, Tag.KEY_MATERIAL).value
    for get in responses[2:]:
        assert _find(get, Tag.KEY_MATERIAL).value == sent  # the 96 bytes come back intact


def test_delegated_mode_replay_matches_the_accepted_replies(kmip_core, tenant_factory):
    tenant = tenant_factory(tenant_id="wire-delegated")
    responses = _replay(kmip_core, tenant.tenant_id, "delegated")
    encrypted = responses[2].get(Tag.BATCH_ITEM).get(Tag.RESPONSE_PAYLOAD)
    assert len(encrypted.child_value(Tag.IV_COUNTER_NONCE)) == 16


def _find(item: TTLV, tag: int) -> TTLV:
    if item.tag == tag:
        return item
    for child in item.children:
        try:
            return _find(child, tag)
        except KeyError:
            continue
    raise KeyError(tag)
