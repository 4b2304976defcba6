"""``GET /v1/health``: unauthenticated liveness (no storage call, so it cannot be used to probe data)."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.event_handler.api_gateway import Router

router = Router()


@router.get("/health")
def health() -> dict[str, Any]:
    return {"status": "ok", "service": "openkcm-cmk-api", "version": "v1"}
