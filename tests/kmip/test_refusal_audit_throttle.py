"""Refusal audits of refused certificates: the same certificate from a new address is recorded at once, not
folded into the minute's count of the first address (found by a review; failed before)."""

from __future__ import annotations

from openkcm.domain.audit import read_events
from openkcm.domain.pki import ClientIdentity
from openkcm.protocol.tags import Op
from tests.kmip.wire import request, response, uid

SINCE = "2000-01-01T00:00:00+00:00"


def _records(core, serial):
    core.services.audit.flush()
    return [e for e in read_events("_platform", since=SINCE) if e["details"].get("serial") == serial]


def test_refusal_from_a_new_address_is_recorded(kmip_core, tenant_factory):
    """The same refused certificate used from a second address within the minute: no record names it."""
    tenant_factory(tenant_id="addr")
    stranger = ClientIdentity("addr", "svc", "CN=svc", "addr-serial")
    get = request((1, 2), (Op.GET, [uid("addr." + "0" * 32)]))
    response(kmip_core.handle(get, stranger, "10.0.0.1:1"))
    response(kmip_core.handle(get, stranger, "203.0.113.9:1"))
    addresses = {e.get("client_address") for e in _records(kmip_core, "addr-serial")}
    assert any(a and a.startswith("203.0.113.9") for a in addresses), addresses
