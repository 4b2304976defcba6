"""Identifiers are matched whole: Python's ``$`` also matches before a final newline, so ``acme\\n``
passed every ``^...$`` check that used ``re.match`` (a second spelling of one id, a certificate whose
service reads back without the newline)."""

from __future__ import annotations

import pytest

from openkcm.domain.pki import SERVICE_PATTERN, SPIFFE_PATTERN
from openkcm.domain.tenants import ACCOUNT_PATTERN, ID_PATTERN
from openkcm.errors import InvalidRequest


def test_domain_patterns_refuse_a_trailing_newline(runtime):
    assert ID_PATTERN.fullmatch("acme") and not ID_PATTERN.fullmatch("acme\n")
    assert ACCOUNT_PATTERN.fullmatch("Acme") and not ACCOUNT_PATTERN.fullmatch("Acme\n")
    assert SERVICE_PATTERN.match("svc") and not SERVICE_PATTERN.match("svc\n")
    assert not SPIFFE_PATTERN.match("spiffe://openkcm.local/tenant/acme/service/svc\n")
    with pytest.raises(InvalidRequest):
        runtime.tenants.create("acme-account", tenant_id="acme-newline\n")
    with pytest.raises(InvalidRequest):
        runtime.tenants.create("acme-account\n", tenant_id="acme-newline")
    with pytest.raises(InvalidRequest):
        runtime.certificate_authority().issue_client("acme", "svc\n")
