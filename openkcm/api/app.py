"""The CMK API application: one Powertools ``APIGatewayHttpResolver``, one Router per resource joined
under ``/v1``, request validation from the pydantic models, one error map, and the OpenAPI 3.1 document
Powertools generates from the routes, served at ``GET /v1/openapi.json``.

Routes that need no token (API Gateway routes without the JWT authorizer): :data:`PUBLIC_ROUTES`.
"""

from __future__ import annotations

import base64
import json
from functools import lru_cache
from typing import Any

from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response
from aws_lambda_powertools.event_handler.openapi.models import Server

from openkcm.api.errors import register_error_handlers
from openkcm.api.routes import accounts, audit, certificates, health, keys, rotation, tenants

TITLE = "OpenKCM CMK API"
API_VERSION = "1.0.0"
PUBLIC_ROUTES = frozenset({("GET", "/v1/health"), ("GET", "/v1/openapi.json")})

app = APIGatewayHttpResolver(enable_validation=True)
register_error_handlers(app)


app.include_router(health.router, prefix="/v1")
app.include_router(certificates.ca_router, prefix="/v1")
app.include_router(accounts.router, prefix="/v1/accounts")
app.include_router(tenants.router, prefix="/v1/tenants")
app.include_router(certificates.router, prefix="/v1/tenants")
app.include_router(keys.router, prefix="/v1/tenants")
app.include_router(rotation.router, prefix="/v1/tenants")
app.include_router(audit.router, prefix="/v1/tenants")


def _include_keystores() -> None:
    from openkcm.api.routes import keystores

    app.include_router(keystores.account_router, prefix="/v1/accounts")
    app.include_router(keystores.tenant_router, prefix="/v1/tenants")


_include_keystores()


CREATED = frozenset({
    ("post", "/v1/accounts/{account_id}/tenants"),
    ("post", "/v1/accounts/{account_id}/keystores"),
    ("post", "/v1/tenants/{tenant_id}/certificates"),
})
NDJSON = frozenset({("get", "/v1/tenants/{tenant_id}/audit/export")})
_ERROR_SCHEMA = {
    "type": "object",
    "title": "Error",
    "required": ["error", "message", "details"],
    "properties": {
        "error": {"type": "string", "description": "machine-readable code, e.g. invalid_request, not_found"},
        "message": {"type": "string"},
        "details": {"type": "object", "description": "for 400: field, reason and errors[]"},
    },
}
_ERRORS = {
    "400": "Invalid request (details.field, details.reason)",
    "401": "No valid bearer token",
    "403": "The role may not do this, the tenant is disabled, or MFA is required",
    "404": "No such object, or it belongs to another account",
    "409": "Conflicts with the current state",
    "415": "The body is not application/json",
}


def _finish(document: dict[str, Any]) -> dict[str, Any]:
    """Make the generated document say what the API does: errors are 400 with our error body (not
    Powertools' 422), creates answer 201, the export is JSON lines, health needs no token."""
    error_ref = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    for path, operations in document.get("paths", {}).items():
        for method, operation in operations.items():
            responses = operation.setdefault("responses", {})
            responses.pop("422", None)
            if (method, path) in CREATED and "200" in responses:
                responses["201"] = {**responses.pop("200"), "description": "Created"}
            if (method, path) in NDJSON and "200" in responses:
                responses["200"] = {"description": "One audit event per line",
                                    "content": {"application/x-ndjson": {"schema": {"type": "string"}}}}
            if ("GET", path) in PUBLIC_ROUTES and method == "get":
                operation["security"] = []
                continue
            for status, description in _ERRORS.items():
                responses.setdefault(status, {"description": description, "content": error_ref})
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    for unused in ("HTTPValidationError", "ValidationError", "ResponseValidationError"):
        schemas.pop(unused, None)
    schemas["Error"] = _ERROR_SCHEMA
    return document


@lru_cache(maxsize=1)
def openapi_document() -> str:
    return json.dumps(_finish(json.loads(_generated_document())), separators=(",", ":"))


def _generated_document() -> str:
    from aws_lambda_powertools.event_handler.openapi.models import (
        HTTPBearer,
    )

    return app.get_openapi_json_schema(
        title=TITLE,
        version=API_VERSION,
        description=(
            "Manage OpenKCM accounts, tenants, keystores (L1), certificates, rotation and audit. "
            "Every route except /v1/health and /v1/openapi.json needs a bearer JWT (OIDC) whose claims "
            "name the account (openkcm:account) and roles (openkcm:roles). Errors answer "
            '{"error", "message", "details"}.'
        ),
        servers=[Server(url="/")],
        security_schemes={"bearer": HTTPBearer(scheme="bearer", bearerFormat="JWT")},
        security=[{"bearer": []}],
    )


@app.get("/v1/openapi.json", include_in_schema=False)
def openapi_json() -> Response[str]:
    return Response(200, "application/json", openapi_document())


# The recursion limit (1,000 nesting levels) and the integer digit limit (4,300) both need a longer body.
_PARSER_LIMIT_CHARS = 1000


def _unsupported_body(event: dict[str, Any]) -> dict[str, Any] | None:
    """Every request body of this API is JSON. Anything else is refused with 415 (or 400) before Powertools
    tries to parse it (its form/multipart parsing raises on malformed input)."""
    if not event.get("body"):
        return None
    headers = {str(k).lower(): str(v) for k, v in (event.get("headers") or {}).items()}
    content_type = headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type and content_type != "application/json" and not content_type.endswith("+json"):
        return _error(415, "unsupported_media_type", "send the request body as application/json",
                      "Content-Type", "must be application/json")
    text = event["body"]
    if event.get("isBase64Encoded"):
        try:
            text = base64.b64decode(event["body"], validate=True).decode("utf-8")
        except (ValueError, UnicodeDecodeError):
            return _error(400, "invalid_request", "the request body is not UTF-8 JSON", "body", "not UTF-8 text")
    # Bodies the JSON parser itself gives up on (Powertools would raise them out of the route as a 500):
    # a number of thousands of digits, nesting thousands of levels deep. Invalid JSON is left to the
    # validation layer, which names it. A shorter body can be neither, and is not parsed twice.
    if len(text) < _PARSER_LIMIT_CHARS:
        return None
    try:
        json.loads(text)
    except RecursionError:
        return _error(400, "invalid_request", "body: nested too deeply", "body", "nested too deeply")
    except json.JSONDecodeError:
        pass
    except ValueError:  # Python's limit on the digits of an integer
        return _error(400, "invalid_request", "body: a number is too long", "body", "number too long")
    return None


def _error(status: int, code: str, message: str, field: str, reason: str) -> dict[str, Any]:
    body = {"error": code, "message": message, "details": {"field": field, "reason": reason}}
    return {"statusCode": status, "headers": {"Content-Type": "application/json"}, "body": json.dumps(body),
            "isBase64Encoded": False, "cookies": []}


def resolve(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """The API's entry point for the Lambda handler."""
    return _unsupported_body(event) or app.resolve(event, context)


def openapi_dict() -> dict[str, Any]:
    return json.loads(openapi_document())
