"""The local HTTP adapter over a real loopback socket: JWT verification as API Gateway does it, the
same handler behind it, the OIDC issuer (authorization code + PKCE S256), the web UI and its headers."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import stat
import time
import urllib.parse

import jwt
import pytest
import requests
from cryptography.hazmat.primitives.asymmetric import ec

from openkcm.domain.audit import read_events

EPOCH = "1970-01-01T00:00:00+00:00"


def _token(adapter, account: str, *roles: str, mfa: bool = False, **kwargs) -> str:
    return adapter.issuer.mint(subject="dev@example.com", account=account, roles=list(roles) or ["account-admin"],
                               mfa=mfa, **kwargs)


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_public_routes_and_security_headers(adapter):
    reply = requests.get(f"{adapter.base_url}/v1/health", timeout=10)
    assert reply.status_code == 200 and reply.json()["status"] == "ok"
    assert reply.headers["X-Content-Type-Options"] == "nosniff"
    assert "frame-ancestors 'none'" in reply.headers["Content-Security-Policy"]
    assert reply.headers["Cache-Control"] == "no-store"
    doc = requests.get(f"{adapter.base_url}/v1/openapi.json", timeout=10).json()
    assert doc["openapi"].startswith("3.1") and "/v1/tenants/{tenant_id}/dashboard" in doc["paths"]


def test_requests_without_a_valid_token_never_reach_the_handler(adapter, api_runtime):
    url = f"{adapter.base_url}/v1/accounts/acme/tenants"
    assert requests.get(url, timeout=10).status_code == 401
    assert requests.get(url, headers={"Authorization": "Basic abc"}, timeout=10).status_code == 401
    forged_key = ec.generate_private_key(ec.SECP256R1())
    forged = jwt.encode({"iss": adapter.issuer.issuer, "aud": "openkcm-api", "sub": "x", "iat": int(time.time()),
                         "exp": int(time.time()) + 60, "openkcm:account": "acme",
                         "openkcm:roles": ["account-admin"]}, forged_key, algorithm="ES256")
    for bad in (forged, _token(adapter, "acme", audience="someone-else"), "not.a.jwt"):
        reply = requests.post(url, headers=_auth(bad), json={"name": "x"}, timeout=10)
        assert reply.status_code == 401 and reply.json() == {"message": "Unauthorized"}
        assert reply.headers["WWW-Authenticate"].startswith("Bearer")
    assert list(api_runtime.tenants.list_for_account("acme")) == []


def test_expired_token_is_refused(adapter, api_runtime):
    from openkcm.local.oidc import load_signing_key

    now = int(time.time())
    token = jwt.encode({"iss": adapter.issuer.issuer, "aud": "openkcm-api", "sub": "x", "iat": now - 7200,
                        "exp": now - 3600, "openkcm:account": "acme", "openkcm:roles": ["account-admin"]},
                       load_signing_key(api_runtime.settings.data_dir), algorithm="ES256",
                       headers={"kid": adapter.issuer.kid})
    assert requests.get(f"{adapter.base_url}/v1/accounts/acme", headers=_auth(token), timeout=10).status_code == 401


def test_resources_through_the_adapter(adapter, account):
    admin = _auth(_token(adapter, account))
    base = f"{adapter.base_url}/v1"
    created = requests.post(f"{base}/accounts/{account}/tenants", headers=admin, json={"name": "web"}, timeout=10)
    assert created.status_code == 201, created.text
    tenant_id = created.json()["tenant_id"]
    for i in range(2):
        requests.post(f"{base}/accounts/{account}/tenants", headers=admin, json={"name": f"w{i}"}, timeout=10)
    page = requests.get(f"{base}/accounts/{account}/tenants", params={"limit": 2}, headers=admin, timeout=10).json()
    rest = requests.get(f"{base}/accounts/{account}/tenants", params={"limit": 2, "next_token": page["next_token"]},
                        headers=admin, timeout=10).json()
    assert len(page["items"]) == 2 and len(rest["items"]) == 1 and rest["next_token"] is None
    assert requests.post(f"{base}/tenants/{tenant_id}/rotate", headers=admin, json={}, timeout=10).json()[
        "current_l2_version"] == 2
    dash = requests.get(f"{base}/tenants/{tenant_id}/dashboard", headers=admin, timeout=10).json()
    assert [v["version"] for v in dash["l2_versions"]] == [1, 2]
    bad = requests.post(f"{base}/tenants/{tenant_id}/rotate", headers=admin, json={"force": True}, timeout=10)
    assert bad.status_code == 400 and bad.json()["details"]["field"] == "force"
    export = requests.get(f"{base}/tenants/{tenant_id}/audit/export", headers=admin, timeout=10)
    assert export.headers["Content-Type"] == "application/x-ndjson"
    created_event = next(json.loads(line) for line in export.text.splitlines() if '"CreateTenant"' in line)
    assert created_event["actor"] == "dev@example.com"
    other = _auth(_token(adapter, "another-account"))
    assert requests.get(f"{base}/tenants/{tenant_id}", headers=other, timeout=10).status_code == 404
    auditor = _auth(_token(adapter, account, "auditor"))
    assert requests.post(f"{base}/tenants/{tenant_id}/rotate", headers=auditor, json={}, timeout=10).status_code == 403
    trail = read_events(tenant_id, since=EPOCH)
    assert [(e["operation"], e["result"], e["actor"]) for e in trail] == [
        ("CreateTenant", "success", "dev@example.com"), ("RotateL2", "success", "dev@example.com"),
        ("ApiRequest", "denied", "dev@example.com"), ("ApiRequest", "denied", "dev@example.com")]
    assert trail[2]["account_id"] == account and trail[2]["reason"] == "outside the caller's account"


def test_hyok_keystore_change_needs_mfa_over_http(adapter, account):
    url = f"{adapter.base_url}/v1/accounts/{account}/keystores"
    body = {"provider": "pkcs11", "name": "hsm", "config": {"module": "softhsm"}, "secrets": {"pin": "1234"}}
    reply = requests.post(url, headers=_auth(_token(adapter, account, "key-admin")), json=body, timeout=10)
    assert reply.status_code == 403
    assert "mfa" in reply.json()["message"].lower() and reply.json()["details"] == {"required_amr": "mfa"}
    assert "1234" not in reply.text
    with_mfa = requests.post(url, headers=_auth(_token(adapter, account, "key-admin", mfa=True)), json=body, timeout=10)
    assert with_mfa.status_code != 403


def test_web_ui_static_files_and_spa_fallback(adapter):
    index = requests.get(f"{adapter.base_url}/", timeout=10)
    assert index.status_code == 200 and "<title>OpenKCM</title>" in index.text
    assert index.headers["X-Frame-Options"] == "DENY" and "script-src 'self'" in index.headers["Content-Security-Policy"]
    script = requests.get(f"{adapter.base_url}/assets/app.js", timeout=10)
    assert script.status_code == 200 and "javascript" in script.headers["Content-Type"]
    deep = requests.get(f"{adapter.base_url}/tenants/t-abc/dashboard", timeout=10)
    assert deep.status_code == 200 and "<title>OpenKCM</title>" in deep.text
    escape = requests.get(f"{adapter.base_url}/%2e%2e/%2e%2e/etc/passwd", timeout=10)
    assert "root:" not in escape.text
    assert requests.post(f"{adapter.base_url}/", timeout=10).status_code == 405


def test_marketplace_prefix_goes_to_the_webhook_function(adapter):
    reply = requests.post(f"{adapter.base_url}/v1/marketplace/events", data=b"{}", timeout=10,
                          headers={"Content-Type": "application/json"})
    # the provisioning function answers for itself (unsigned -> 401) or, when absent, the adapter says 503
    assert reply.status_code in (401, 400, 503)
    assert reply.headers["Content-Type"].startswith("application/json")
    assert "error" in reply.json()  # a function's JSON error, not API Gateway's {"message": "Unauthorized"}


def test_oversized_body_is_refused(adapter):
    reply = requests.post(f"{adapter.base_url}/v1/health", data=b"x" * (1024 * 1024 + 1), timeout=10)
    assert reply.status_code == 413


def _pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).decode().rstrip("=")
    return verifier, challenge


def test_oidc_authorization_code_flow_with_pkce(adapter, account):
    oidc = f"{adapter.base_url}/oidc"
    discovery = requests.get(f"{oidc}/.well-known/openid-configuration", timeout=10).json()
    assert discovery["issuer"] == oidc and discovery["code_challenge_methods_supported"] == ["S256"]
    jwks = requests.get(discovery["jwks_uri"], timeout=10).json()
    assert jwks["keys"][0]["kty"] == "EC" and "d" not in jwks["keys"][0]
    verifier, challenge = _pkce()
    params = {"response_type": "code", "client_id": "openkcm-ui", "redirect_uri": f"{adapter.base_url}/callback",
              "state": "s-123", "code_challenge": challenge, "code_challenge_method": "S256", "nonce": "n-1"}
    form = requests.get(discovery["authorization_endpoint"], params=params, timeout=10)
    assert form.status_code == 200 and "<form" in form.text and 'name="code_challenge"' in form.text
    login = {**{k: v for k, v in params.items() if k not in ("response_type", "code_challenge_method")},
             "username": "alice@example.com", "account": account, "role": ["key-admin", "auditor"], "mfa": "1"}
    redirect = requests.post(discovery["authorization_endpoint"], data=login, allow_redirects=False, timeout=10)
    assert redirect.status_code == 302
    location = urllib.parse.urlsplit(redirect.headers["Location"])
    query = dict(urllib.parse.parse_qsl(location.query))
    assert location.path == "/callback" and query["state"] == "s-123"
    exchange = {"grant_type": "authorization_code", "code": query["code"], "client_id": "openkcm-ui",
                "redirect_uri": params["redirect_uri"]}
    wrong = requests.post(discovery["token_endpoint"], data={**exchange, "code_verifier": _pkce()[0]}, timeout=10)
    assert wrong.status_code == 400 and wrong.json()["error"] == "invalid_grant"
    # the code was burnt by the failed attempt: a second try with the right verifier fails too
    again = requests.post(discovery["token_endpoint"], data={**exchange, "code_verifier": verifier}, timeout=10)
    assert again.status_code == 400

    redirect = requests.post(discovery["authorization_endpoint"], data=login, allow_redirects=False, timeout=10)
    code = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(redirect.headers["Location"]).query))["code"]
    tokens = requests.post(discovery["token_endpoint"], timeout=10,
                           data={**exchange, "code": code, "code_verifier": verifier}).json()
    claims = adapter.issuer.verify(tokens["access_token"])
    assert claims["sub"] == "alice@example.com" and claims["openkcm:roles"] == ["key-admin", "auditor"]
    assert "mfa" in claims["amr"] and claims["openkcm:account"] == account
    id_claims = jwt.decode(tokens["id_token"], options={"verify_signature": False})
    assert id_claims["aud"] == "openkcm-ui" and id_claims["nonce"] == "n-1"
    reply = requests.get(f"{adapter.base_url}/v1/accounts/{account}/tenants", headers=_auth(tokens["access_token"]),
                         timeout=10)
    assert reply.status_code == 200


def test_oidc_refuses_foreign_redirects_and_missing_pkce(adapter):
    authorize = f"{adapter.base_url}/oidc/authorize"
    base = {"response_type": "code", "client_id": "ui", "code_challenge": _pkce()[1], "code_challenge_method": "S256"}
    evil = requests.get(authorize, params={**base, "redirect_uri": "https://evil.example/cb"}, timeout=10)
    assert evil.status_code == 400 and "redirect_uri" in evil.json()["error_description"]
    plain = requests.get(authorize, params={**base, "redirect_uri": "http://127.0.0.1/cb",
                                            "code_challenge_method": "plain"}, timeout=10)
    assert plain.status_code == 400
    xss = requests.get(authorize, params={**base, "redirect_uri": "http://127.0.0.1/cb", "state": '"><script>x</script>'},
                       timeout=10)
    assert xss.status_code == 200 and "<script>x</script>" not in xss.text


def test_signing_key_is_private_and_reused(adapter, api_runtime):
    path = os.path.join(api_runtime.settings.data_dir, "oidc", "signing-key.pem")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    from openkcm.local.oidc import LocalIssuer

    again = LocalIssuer(api_runtime.settings.data_dir, adapter.issuer.issuer)
    assert again.kid == adapter.issuer.kid
    assert adapter.issuer.verify(again.mint(subject="s", account="a", roles=["auditor"]))["sub"] == "s"


def test_cli_local_token_mints_a_token_the_adapter_accepts(adapter, api_runtime, capsys, tmp_path):
    from openkcm.cli import main

    data_dir = str(api_runtime.settings.data_dir)
    code = main(["local", "token", "--data-dir", data_dir, "--issuer", adapter.issuer.issuer,
                 "--account", "acme-corp-12345", "--role", "account-admin", "--mfa"])
    assert code == 0
    token = capsys.readouterr().out.strip()
    claims = adapter.issuer.verify(token)
    assert claims["openkcm:account"] == "acme-corp-12345" and "mfa" in claims["amr"]
    with pytest.raises(SystemExit):
        main(["local", "token", "--data-dir", data_dir, "--issuer", "x", "--role", "root"])
    # without --issuer it reads the running stack's api service from stack.json
    (api_runtime.settings.data_dir / "stack.json").write_text(json.dumps({"services": {"api": adapter.urls()}}))
    assert main(["local", "token", "--data-dir", data_dir, "--account", "a", "--role", "auditor"]) == 0
    assert adapter.issuer.verify(capsys.readouterr().out.strip())["openkcm:roles"] == ["auditor"]


def test_missing_function_answers_503_json(api_runtime, tmp_path):
    from openkcm.local.http_adapter import LocalHttpAdapter
    from tests.conftest import free_port

    server = LocalHttpAdapter(data_dir=tmp_path, port=free_port(), ui_dir=tmp_path / "no-ui",
                              webhook_handler="functions.not_installed.handler:webhook_handler")
    server.start()
    try:
        reply = requests.post(f"{server.base_url}/v1/marketplace/events", json={}, timeout=10)
        assert reply.status_code == 503 and reply.json()["error"] == "service_unavailable"
        ui = requests.get(f"{server.base_url}/", timeout=10)
        assert ui.status_code == 404 and "not built" in ui.text
        odd = requests.request("TRACE", f"{server.base_url}/v1/health", timeout=10)
        assert odd.status_code == 405 and odd.headers["Content-Type"] == "application/json"
    finally:
        server.stop()


def test_api_service_starts_under_the_local_stack_contract(api_runtime, tmp_path):
    from types import SimpleNamespace

    from openkcm.local.services import registered_services
    from tests.conftest import free_port

    service = next(s for s in registered_services() if s.name == "api")
    port = free_port()
    stack = SimpleNamespace(runtime=api_runtime, data_dir=tmp_path,
                            options=SimpleNamespace(host="127.0.0.1", ports={"api": port}))
    details = service.start(stack)
    try:
        assert details["api"] == f"http://127.0.0.1:{port}/v1" and details["issuer"].endswith("/oidc")
        assert service.healthy()
        assert requests.get(f"{details['api']}/health", timeout=10).json()["status"] == "ok"
    finally:
        service.stop()


def test_frame_ancestors_list_only_configured_origins(monkeypatch):
    from openkcm.local.http_adapter import frame_ancestors_from_env, security_headers

    monkeypatch.setenv("OPENKCM_UI_FRAME_ANCESTORS", "https://console.example.com, https://admin.example.com:8443")
    origins = frame_ancestors_from_env()
    headers = security_headers(origins)
    assert headers["Content-Security-Policy"].endswith(
        "frame-ancestors 'self' https://console.example.com https://admin.example.com:8443")
    assert "X-Frame-Options" not in headers
    monkeypatch.setenv("OPENKCM_UI_FRAME_ANCESTORS", "*")
    with pytest.raises(ValueError):
        frame_ancestors_from_env()


# ---- found by a review (these fail before the fix) -------------------------------------------------
STUB_EVENTS: list[dict] = []


def stub_handler(event, context):
    STUB_EVENTS.append(event)
    return {"statusCode": 200, "headers": {"Content-Type": "application/json"}, "body": "{}"}


@pytest.fixture
def stub_adapter(tmp_path, monkeypatch):
    from openkcm.local import http_adapter

    monkeypatch.setattr(http_adapter, "REQUEST_TIMEOUT", 1.0, raising=False)  # the class default is 30 s
    STUB_EVENTS.clear()
    target = f"{__name__}:stub_handler"
    server = http_adapter.LocalHttpAdapter(data_dir=tmp_path, port=0, ui_dir=tmp_path, cmk_handler=target,
                                           webhook_handler=target)
    server.start()
    yield server
    server.stop()


def _raw(port: int, data: bytes) -> bytes:
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(data)
        time.sleep(0.5)
        s.settimeout(3)
        out = b""
        try:
            while chunk := s.recv(65536):
                out += chunk
        except TimeoutError:
            pass
        return out


def test_chunked_request_is_refused_not_split_into_two(stub_adapter):
    body = b'{"event_id":"e1"}'
    request = (b"POST /v1/marketplace/events HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
               b"Transfer-Encoding: chunked\r\n\r\n" + f"{len(body):x}".encode() + b"\r\n" + body + b"\r\n0\r\n\r\n")
    reply = _raw(stub_adapter.port, request)
    # before: an empty-body invocation answered 200, then the chunk bytes parsed as a second request
    assert STUB_EVENTS == []
    assert reply.count(b"HTTP/1.1 ") == 1 and reply.startswith(b"HTTP/1.1 411 "), reply
    assert b"Connection: close" in reply


def test_silent_client_is_disconnected(stub_adapter):
    import socket

    assert stub_adapter._handler_class().timeout == 1.0
    with socket.create_connection(("127.0.0.1", stub_adapter.port), timeout=10) as s:
        s.sendall(b"GET /v1/health HTTP/1.1\r\n")  # never finishes its headers
        start = time.monotonic()
        try:
            data = s.recv(1)
        except TimeoutError:
            data = None  # before: the server thread waits forever
        assert data == b"" and time.monotonic() - start < 9


def test_handler_class_default_timeout_is_30_seconds():
    from openkcm.local.http_adapter import LocalHttpAdapter

    handler = LocalHttpAdapter(data_dir=".", port=0)._handler_class()
    assert getattr(handler, "timeout", None) == 30


def test_oidc_issuer_answers_loopback_clients_only(adapter):
    discovery = "/oidc/.well-known/openid-configuration"
    for client in ("127.0.0.1", "::1", "::ffff:127.0.0.1"):
        assert adapter.dispatch("GET", discovery, [], b"", client)[0] == 200, client
    for client in ("192.0.2.7", "10.0.0.5", "::ffff:192.0.2.7", "2001:db8::1"):
        status, _, body = adapter.dispatch("POST", "/oidc/authorize", [], b"username=x&role=platform-operator&mfa=1",
                                           client)
        assert status == 403 and b"access_denied" in body, client
    # the API itself still answers other machines (an --unsafe-expose stack; the JWT decides)
    assert adapter.dispatch("GET", "/v1/health", [], b"", "192.0.2.7")[0] == 200
