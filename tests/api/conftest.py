"""Fixtures of the CMK API tests: one runtime (own tables on the session's moto server) per test module,
a caller that drives the real Lambda handler with API Gateway v2 events, and the local HTTP adapter on a
free loopback port with the local OIDC issuer."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("POWERTOOLS_METRICS_DISABLED", "true")  # no EMF lines in the test output
from tests.conftest import free_port


@pytest.fixture(scope="module")
def api_runtime(aws_endpoint: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from openkcm.api.context import bind_runtime
    from openkcm.config import Settings
    from openkcm.ops.runtime import build_runtime

    settings = Settings(table_prefix=f"api{uuid.uuid4().hex[:10]}", data_dir=tmp_path_factory.mktemp("apidata"))
    runtime = build_runtime(settings, create=True)
    bind_runtime(runtime)
    yield runtime
    bind_runtime(None)
    runtime.close()


@pytest.fixture(autouse=True)
def _bound_tables(request: pytest.FixtureRequest) -> None:
    """Other test modules rebind the pynamodb models; point them back at this module's tables."""
    if "api_runtime" in request.fixturenames:
        from openkcm.api.context import bind_runtime
        from openkcm.storage import bind_tables

        runtime = request.getfixturevalue("api_runtime")
        bind_tables(runtime.settings.table_prefix, runtime.settings.region)
        bind_runtime(runtime)


def claims(account: str = "", *roles: str, sub: str = "", mfa: bool = False, flattened: bool = False) -> dict[str, Any]:
    """Verified claims as API Gateway passes them (``flattened``: arrays as "[a b]" strings, as AWS does)."""
    role_list = list(roles) or ["account-admin"]
    amr = ["pwd", "mfa"] if mfa else ["pwd"]
    out: dict[str, Any] = {
        "sub": sub or f"user-{role_list[0]}",
        "openkcm:account": account,
        "openkcm:roles": f"[{' '.join(role_list)}]" if flattened else role_list,
        "amr": f"[{' '.join(amr)}]" if flattened else amr,
        "iss": "https://issuer.example", "aud": "openkcm-api",
    }
    return out


def v2_event(method: str, path: str, *, body: Any = None, query: dict[str, str] | None = None,
             claims_: dict[str, Any] | None = None, headers: dict[str, str] | None = None) -> dict[str, Any]:
    from urllib.parse import urlencode

    event: dict[str, Any] = {
        "version": "2.0", "routeKey": "$default", "rawPath": path, "rawQueryString": urlencode(query or {}),
        "headers": {"content-type": "application/json", "user-agent": "pytest", **(headers or {})},
        "requestContext": {
            "accountId": "123456789012", "apiId": "api", "domainName": "api.example", "domainPrefix": "api",
            "http": {"method": method, "path": path, "protocol": "HTTP/1.1", "sourceIp": "192.0.2.10",
                     "userAgent": "pytest"},
            "requestId": uuid.uuid4().hex, "routeKey": "$default", "stage": "$default", "time": "", "timeEpoch": 0,
        },
        "isBase64Encoded": False,
    }
    if query:
        event["queryStringParameters"] = query
    if claims_ is not None:
        event["requestContext"]["authorizer"] = {"jwt": {"claims": claims_, "scopes": None}}
    if body is not None:
        event["body"] = body if isinstance(body, str) else json.dumps(body)
    return event


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    text: str

    def json(self) -> Any:
        return json.loads(self.text)


class HandlerClient:
    """Calls ``functions.cmk_api.handler.handler`` with v2 events, as API Gateway does."""

    def __init__(self) -> None:
        from functions.cmk_api.handler import handler
        from openkcm.local.http_adapter import LocalLambdaContext

        self._handler = handler
        self._context = LocalLambdaContext

    def call(self, method: str, path: str, who: dict[str, Any] | None = None, **kwargs: Any) -> Reply:
        result = self._handler(v2_event(method, path, claims_=who, **kwargs), self._context("openkcm-cmk-api-test"))
        return Reply(int(result["statusCode"]), dict(result.get("headers") or {}), result.get("body") or "")


@pytest.fixture
def api(api_runtime: Any) -> HandlerClient:
    return HandlerClient()


@pytest.fixture
def account() -> str:
    return f"acct-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def make_tenant(api_runtime: Any):
    from openkcm.ops.tenants import create_platform_tenant

    def make(account_id: str, **kwargs: Any) -> Any:
        return create_platform_tenant(api_runtime, account_id, actor="test", source="cli", **kwargs)

    return make


@pytest.fixture(scope="module")
def adapter(api_runtime: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from openkcm.local.http_adapter import LocalHttpAdapter

    ui = tmp_path_factory.mktemp("ui")
    (ui / "index.html").write_text("<!doctype html><title>OpenKCM</title><div id=app></div>")
    (ui / "assets").mkdir()
    (ui / "assets" / "app.js").write_text("console.log('openkcm')")
    server = LocalHttpAdapter(data_dir=Path(api_runtime.settings.data_dir), port=free_port(), ui_dir=ui)
    server.start()
    yield server
    server.stop()


def pytest_configure(config: pytest.Config) -> None:
    # metrics are disabled in these tests, so Powertools says there is nothing to publish on every call
    config.addinivalue_line("filterwarnings", "ignore:No application metrics to publish:UserWarning")


@pytest.fixture(autouse=True)
def _fresh_probe_counts() -> Iterator[None]:
    """Probe records are rate-limited per process; each test starts with none counted."""
    from openkcm.api import context

    context._probes.clear()
    yield
    context._probes.clear()
