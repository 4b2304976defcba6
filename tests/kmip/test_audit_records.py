"""What the KMIP core keeps in the audit trail when a field of an event is text the audit schema refuses
(client-chosen identifiers or values echoed into a reason): the event, without that text."""

from __future__ import annotations

import pytest

from openkcm.domain.audit import read_events
from openkcm.domain.pki import ClientIdentity

SINCE = "2000-01-01T00:00:00+00:00"


@pytest.mark.parametrize(
    ("object_id", "reason", "kept"),
    [
        ("9f" * 48, "item not found", ("<unprintable>", "item not found")),  # a key-shaped identifier
        ("uid-1", "echo: -----BEGIN PRIVATE KEY-----", ("uid-1", "<unprintable>")),  # an echoed value
        ("9f" * 48, "PRIVATE KEY", ("<unprintable>", "<unprintable>")),
        ("uid-2", "item not found", ("uid-2", "item not found")),  # nothing to replace
    ],
)
def test_refused_text_is_replaced_not_dropped(kmip_core, tenant_factory, object_id, reason, kept):
    tenant = tenant_factory().tenant_id
    identity = ClientIdentity(tenant_id=tenant, service_id="svc", subject="CN=svc", serial_hex="a1")
    kmip_core._audit(
        identity, tenant, "Get", result="failure", object_id=object_id, reason=reason, request_id="r-1"
    )
    kmip_core.services.audit.flush()
    gets = [e for e in read_events(tenant, since=SINCE) if e["operation"] == "Get"]
    assert len(gets) == 1
    assert (gets[0]["object_id"], gets[0]["reason"], gets[0]["result"]) == (*kept, "failure")
