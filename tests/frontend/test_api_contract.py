"""The web UI's API client calls only routes the CMK API serves.

`frontend/src/api/client.ts` builds every URL with ``route("/v1/…")`` from the saved OpenAPI copy, so
TypeScript checks the UI against that copy; this test checks the copy's routes the UI uses (with their
methods) against the API's live document, so drift shows up here and not as a 404 in a browser.
Regenerate the copy with ``npm run api:spec`` in frontend/.
"""

from __future__ import annotations

import re
from pathlib import Path

from openkcm.api.app import openapi_dict

CLIENT = Path(__file__).resolve().parents[2] / "frontend" / "src" / "api" / "client.ts"
CALL = re.compile(r'"(GET|POST|PUT|PATCH|DELETE)",\s*route\("([^"]+)"', re.S)


def test_every_route_the_ui_calls_exists_in_the_live_openapi_document() -> None:
    used = {(method.lower(), path) for method, path in CALL.findall(CLIENT.read_text())}
    assert len(used) >= 20, f"the client's calls were not found: {sorted(used)}"
    paths = openapi_dict()["paths"]
    missing = sorted(f"{m.upper()} {p}" for m, p in used if m not in paths.get(p, {}))
    assert not missing, f"the UI calls routes the API does not serve: {missing} (run `npm run api:spec`)"


TYPES = CLIENT.with_name("types.ts")
SAVED = CLIENT.with_name("openapi.json")


def test_request_bodies_the_ui_sends_match_the_live_schemas() -> None:
    """The UI's request bodies are typed (``satisfies``) against the saved schemas; those must be the API's
    current ones, else TypeScript checked the UI against a stale contract."""
    import json

    names = sorted(set(re.findall(r'Schemas\["(\w+)"\]', TYPES.read_text())))
    assert len(names) >= 8, names
    saved = json.loads(SAVED.read_text())["components"]["schemas"]
    live = openapi_dict()["components"]["schemas"]
    stale = [n for n in names if saved.get(n) != live.get(n)]
    assert not stale, f"request schemas changed in the API: {stale} (run `npm run api:spec` in frontend/ and fix the types)"
