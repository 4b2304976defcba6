"""Fixtures shared by the audit tests."""

from __future__ import annotations

import pytest

from openkcm.storage.audit_models import AuditLinkModel


@pytest.fixture
def links_read(monkeypatch):
    """How many link items the time-index queries handed to the reader."""
    seen = {"links": 0, "from": []}
    original = AuditLinkModel.time_index.query

    def counting(tenant_id, condition, **kwargs):
        values = getattr(condition, "values", ())  # BETWEEN: (path, lower, upper) as DynamoDB values
        seen["from"].append(values[1].value["S"] if len(values) == 3 else "")
        for item in original(tenant_id, condition, **kwargs):
            seen["links"] += 1
            yield item

    monkeypatch.setattr(AuditLinkModel.time_index, "query", counting)
    return seen
