"""The one error -> HTTP map of the CMK API. Every answer that is not a success has the body
``{"error": <code>, "message": <text>, "details": {...}}``.

- :class:`openkcm.errors.OpenKCMError` and its subclasses answer with their own ``http_status`` and
  ``code`` (one handler catches the whole family).
- Request validation (pydantic models with ``extra="forbid"``, query and path parameters) answers 400
  with ``details.field`` / ``details.reason`` of the first problem and the full list in
  ``details.errors``. The offending *input* is never echoed back: it may be a secret.
- Powertools' own errors (no such route, ...) keep their status.
- Anything else is logged with its stack trace and answers a bare 500: nothing internal leaks.
"""

from __future__ import annotations

import json
import os
from http import HTTPStatus
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.event_handler import ApiGatewayResolver, Response
from aws_lambda_powertools.event_handler.exceptions import ServiceError
from aws_lambda_powertools.event_handler.openapi.exceptions import (
    RequestUnsupportedContentType,
    RequestValidationError,
)
from aws_lambda_powertools.utilities.idempotency.exceptions import (
    IdempotencyAlreadyInProgressError,
    IdempotencyValidationError,
)

from openkcm.errors import OpenKCMError

# a child of the handler's logger (same service name), so errors come out in the function's JSON log format
logger = Logger(service=os.environ.get("POWERTOOLS_SERVICE_NAME", "openkcm-cmk-api"), child=True)
JSON = "application/json"


def error_response(status: int, code: str, message: str, details: dict[str, Any] | None = None) -> Response:
    body: dict[str, Any] = {"error": code, "message": message, "details": details or {}}
    return Response(status_code=status, content_type=JSON, body=json.dumps(body, default=str))


def _field(loc: Any) -> str:
    parts = [str(p) for p in (loc or ()) if p not in ("body",)]
    source = str(loc[0]) if loc else "body"
    if source in ("query", "path", "header") and len(parts) > 1:
        return f"{parts[1]}"
    return ".".join(parts) or "body"


def register_error_handlers(app: ApiGatewayResolver) -> None:
    @app.exception_handler(OpenKCMError)
    def _domain(exc: OpenKCMError) -> Response:
        if exc.http_status >= 500:
            logger.warning("request failed", extra={"error": exc.code, "reason": exc.message})
        return error_response(exc.http_status, exc.code, exc.message, dict(exc.details))

    @app.exception_handler(RequestValidationError)
    def _validation(exc: RequestValidationError) -> Response:
        errors = [
            {
                "field": "body" if e.get("type") == "json_invalid" else _field(e.get("loc")),
                "reason": str(e.get("msg", "invalid")),
                "type": str(e.get("type", "")),
            }
            for e in exc.errors()
        ]
        first = errors[0] if errors else {"field": "body", "reason": "invalid request"}
        return error_response(
            400,
            "invalid_request",
            f"{first['field']}: {first['reason']}",
            {"field": first["field"], "reason": first["reason"], "errors": errors},
        )

    @app.exception_handler(RequestUnsupportedContentType)
    def _content_type(exc: Exception) -> Response:
        return error_response(415, "unsupported_media_type", "send the request body as application/json",
                              {"field": "Content-Type", "reason": "must be application/json"})

    @app.exception_handler(IdempotencyValidationError)
    def _idem_mismatch(exc: Exception) -> Response:
        return error_response(409, "idempotency_conflict",
                              "this Idempotency-Key was used with a different request body")

    @app.exception_handler(IdempotencyAlreadyInProgressError)
    def _idem_running(exc: Exception) -> Response:
        return error_response(409, "idempotency_in_progress",
                              "a request with this Idempotency-Key is still running; retry shortly")

    @app.exception_handler(ServiceError)
    def _service(exc: ServiceError) -> Response:
        status = int(exc.status_code)
        code = {404: "not_found", 405: "method_not_allowed"}.get(status, HTTPStatus(status).phrase.lower().replace(" ", "_"))
        return error_response(status, code, str(exc.msg))

    @app.exception_handler(Exception)
    def _unexpected(exc: Exception) -> Response:
        logger.exception("unexpected error")
        return error_response(500, "internal_error", "internal error; the request id in the logs has details")


class FeatureUnavailable(OpenKCMError):
    """This deployment has no implementation of the requested feature yet."""

    http_status = 501
    code = "not_implemented"


def optional_ops(module_name: str, feature: str) -> Any:
    """Import a use-case module that a parallel feature provides; 501 (JSON) while it is absent."""
    import importlib

    try:
        return importlib.import_module(module_name)
    except ImportError as exc:
        if exc.name != module_name:
            raise
        raise FeatureUnavailable(f"{feature} is not available in this deployment") from None


def json_response(status: int, body: Any) -> Response:
    """A JSON answer with another status than 200 (Powertools serialises ``body``)."""
    return Response(status_code=status, content_type=JSON, body=body)
