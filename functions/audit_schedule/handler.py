"""Audit schedule Lambda (issue 11): run by an EventBridge rate (e.g. every 5 minutes). Signs a checkpoint
for every tenant whose writer chains moved (KMS ``kms:Sign`` on the ECC_NIST_P256 key) and archives
records older than ``OPENKCM_AUDIT_RETENTION_DAYS`` to the Object Lock bucket before letting DynamoDB
expire them. Its role needs: audit table Query/PutItem/UpdateItem, tenants table Scan, kms:Sign/Verify
on the signing key, s3:PutObject/GetObject/ListBucket on the archive prefix."""

from __future__ import annotations

from typing import Any

from openkcm.ops import audit
from openkcm.ops.runtime import Runtime, build_runtime

_RUNTIME: Runtime | None = None


def _runtime() -> Runtime:
    global _RUNTIME
    if _RUNTIME is None:
        _RUNTIME = build_runtime()
    return _RUNTIME


def handler(event: dict[str, Any], context: Any = None, runtime: Runtime | None = None) -> dict[str, Any]:
    runtime = runtime or _runtime()
    budget = context.get_remaining_time_in_millis() / 1000 - 10 if context is not None else 600.0
    return audit.run_schedule(runtime, budget_seconds=max(budget, 1.0))
