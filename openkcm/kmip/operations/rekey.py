"""ReKey (spec 4.4): a new Symmetric Key replacing an existing one: same algorithm, length, usage mask,
groups and custom attributes; the Names move to the new key; Replacement/Replaced Object Links join them.
The new key is Active when the old one was (else Pre-Active). Two conditional writes (new key, then the
old one's links/names); a failure of the second leaves a usable new key and the old key unchanged."""

from __future__ import annotations

import os

from openkcm.domain.objects import ACTIVE, PRE_ACTIVE
from openkcm.kmip.common import AES_BITS, load, require_state, target_uid
from openkcm.kmip.context import BatchState, Outcome, RequestContext
from openkcm.kmip.errors import invalid
from openkcm.kmip.lifecycle import names_of, now
from openkcm.protocol import ttlv
from openkcm.protocol.tags import Alg, LinkType, Reason, Tag
from openkcm.protocol.ttlv import TTLV

CARRIED = (
    "Cryptographic Algorithm",
    "Cryptographic Length",
    "Cryptographic Usage Mask",
    "Object Group",
    "Contact Information",
    "Name",
    "_kft",
)


def handle(ctx: RequestContext, payload: TTLV, batch: BatchState) -> Outcome:
    old = load(ctx, target_uid(payload, batch), batch)
    if old.object_type != "SYMMETRIC_KEY" or old.derived_from is not None:
        raise invalid("ReKey applies to stored symmetric keys", Reason.INVALID_OBJECT_TYPE)
    require_state(old, PRE_ACTIVE, ACTIVE)
    t = now(ctx)
    attributes = {k: list(v) for k, v in old.attributes.items() if k in CARRIED or k.startswith("x-")}
    attributes.update(
        {
            "Initial Date": [t],
            "Last Change Date": [t],
            "Original Creation Date": [t],
            "Link": [{"t": LinkType.REPLACED_OBJECT_LINK, "id": old.object_id}],
        }
    )
    state = PRE_ACTIVE
    if old.state == ACTIVE:
        state = ACTIVE
        attributes["Activation Date"] = [t]
    length = int(old.first("Cryptographic Length", 256))
    aes = old.first("Cryptographic Algorithm", Alg.AES) == Alg.AES
    # Register keeps lengths honest; an object stored before may not be
    if length % 8 or not 8 <= length <= 8192 * 8 or (aes and length not in AES_BITS):
        raise invalid("the key's Cryptographic Length cannot be re-keyed", Reason.INVALID_ATTRIBUTE_VALUE)
    store = ctx.services.store
    new = store.create(
        ctx.tenant_id,
        object_type="SYMMETRIC_KEY",
        material=os.urandom(length // 8),
        attributes=attributes,
        names=names_of(attributes),
        state=state,
        created_by=ctx.service_id,
    )
    remaining = {k: list(v) for k, v in old.attributes.items() if k != "Name"}
    remaining.setdefault("Link", []).append({"t": LinkType.REPLACEMENT_OBJECT_LINK, "id": new.object_id})
    remaining["Last Change Date"] = [t]
    store.update(old, attributes=remaining, names=[])
    batch.placeholder = new.object_id
    return Outcome([ttlv.text(Tag.UNIQUE_IDENTIFIER, new.object_id)], new.object_id, new.l2_version)
