"""The local stand-in for API Gateway: HTTP requests in, API Gateway v2 (HTTP API, payload 2.0) events
out, handed to the very same Lambda handlers that run in AWS. There is no second routing here: the
adapter only decides which *function* a path belongs to, as the HTTP API's routes do.

- ``/v1/marketplace/...`` -> ``functions.provision.handler.webhook_handler`` (no JWT; HMAC signed)
- ``/v1/health``, ``/v1/openapi.json`` -> the CMK API without a token
- every other ``/v1/...`` -> ``functions.cmk_api.handler.handler`` after verifying the bearer JWT against
  the local issuer exactly as the HTTP API's JWT authorizer does (signature, issuer, audience, expiry);
  the verified claims go into ``requestContext.authorizer.jwt.claims``. No valid token: 401, and the
  function is never called.
- ``/oidc/...`` -> the local OIDC issuer (:mod:`openkcm.local.oidc`), for loopback clients only (its
  login has no password; even a stack exposed with ``--unsafe-expose`` never signs in another machine)
- everything else -> the built web UI from ``frontend/dist`` with an SPA fallback to ``index.html``

A Lambda container handles one event at a time; so does the adapter (one lock around the handler), which
also keeps Powertools' per-invocation state safe. Request bodies need a Content-Length (API Gateway
buffers chunked bodies; this adapter refuses them with 411), and a client that stays silent for
``REQUEST_TIMEOUT`` seconds is disconnected.
"""

from __future__ import annotations

import base64
import importlib
import json
import mimetypes
import os
import re
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any

from openkcm.errors import Unauthenticated
from openkcm.local.oidc import LocalIssuer
from openkcm.local.stack import is_loopback

if TYPE_CHECKING:
    from openkcm.local.stack import LocalStack
    from openkcm.ops.runtime import Runtime

MAX_BODY = 1024 * 1024
REQUEST_TIMEOUT = 30.0  # seconds a connection may stay silent (headers, body, keep-alive idle)
ALLOWED_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
CMK_HANDLER = "functions.cmk_api.handler:handler"
WEBHOOK_HANDLER = "functions.provision.handler:webhook_handler"
MARKETPLACE_PREFIX = "/v1/marketplace/"
PUBLIC_API_ROUTES = frozenset({("GET", "/v1/health"), ("GET", "/v1/openapi.json")})
DEFAULT_UI_DIR = Path(__file__).resolve().parents[2] / "frontend" / "dist"


def security_headers(frame_ancestors: tuple[str, ...] = ()) -> dict[str, str]:
    ancestors = " ".join(["'self'", *frame_ancestors]) if frame_ancestors else "'none'"
    headers = {
        "Content-Security-Policy": (
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
            f"connect-src 'self'; object-src 'none'; base-uri 'self'; form-action 'self'; frame-ancestors {ancestors}"
        ),
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "Cross-Origin-Opener-Policy": "same-origin",
        "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
    }
    if not frame_ancestors:
        headers["X-Frame-Options"] = "DENY"
    return headers


FRAME_ANCESTORS_ENV = "OPENKCM_UI_FRAME_ANCESTORS"
_ORIGIN = re.compile(r"^https?://[A-Za-z0-9.-]+(?::\d{1,5})?\Z")


def frame_ancestors_from_env() -> tuple[str, ...]:
    """Origins allowed to frame the UI (the platform's console), comma-separated; nothing else may."""
    origins = tuple(o.strip() for o in os.environ.get(FRAME_ANCESTORS_ENV, "").split(",") if o.strip())
    bad = [o for o in origins if not _ORIGIN.match(o)]
    if bad:
        raise ValueError(f"{FRAME_ANCESTORS_ENV} must list origins like https://console.example.com, got {bad}")
    return origins


@dataclass
class LocalLambdaContext:
    """The parts of the Lambda context object that Powertools reads."""

    function_name: str
    memory_limit_in_mb: int = 512
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    deadline: float = field(default_factory=lambda: time.time() + 30)

    @property
    def invoked_function_arn(self) -> str:
        return f"arn:aws:lambda:us-east-1:000000000000:function:{self.function_name}"

    @property
    def function_version(self) -> str:
        return "$LATEST"

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self.deadline - time.time()) * 1000))


def _load(target: str) -> Callable[[dict[str, Any], Any], dict[str, Any]] | None:
    """Import ``module:function`` lazily; None when the module is not there (yet)."""
    module_name, _, attribute = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            return None
        raise
    return getattr(module, attribute, None)


def build_event(method: str, raw_path: str, query: str, headers: list[tuple[str, str]], body: bytes,
                source_ip: str, claims: dict[str, Any] | None) -> dict[str, Any]:
    """An API Gateway HTTP API payload-2.0 event, shaped as AWS sends it."""
    merged: dict[str, str] = {}
    cookies: list[str] = []
    for name, value in headers:
        lower = name.lower()
        if lower == "cookie":
            cookies.extend(c.strip() for c in value.split(";") if c.strip())
            continue
        merged[lower] = f"{merged[lower]},{value}" if lower in merged else value
    params: dict[str, str] = {}
    for key, value in urllib.parse.parse_qsl(query, keep_blank_values=True):
        params[key] = f"{params[key]},{value}" if key in params else value
    path = urllib.parse.unquote(raw_path)
    now = time.time()
    request_id = uuid.uuid4().hex
    context: dict[str, Any] = {
        "accountId": "000000000000",
        "apiId": "local",
        "domainName": merged.get("host", "localhost"),
        "domainPrefix": "local",
        "http": {"method": method, "path": path, "protocol": "HTTP/1.1", "sourceIp": source_ip,
                 "userAgent": merged.get("user-agent", "")},
        "requestId": request_id,
        "routeKey": "$default",
        "stage": "$default",
        "time": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(now)),
        "timeEpoch": int(now * 1000),
    }
    if claims is not None:
        context["authorizer"] = {"jwt": {"claims": claims, "scopes": None}}
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path,
        "rawQueryString": query,
        "headers": merged,
        "requestContext": context,
        "isBase64Encoded": False,
    }
    if cookies:
        event["cookies"] = cookies
    if params:
        event["queryStringParameters"] = params
    if body:
        try:
            event["body"] = body.decode("utf-8")
        except UnicodeDecodeError:
            event["body"] = base64.b64encode(body).decode()
            event["isBase64Encoded"] = True
    return event


class LocalHttpAdapter:
    def __init__(self, *, data_dir: Path, host: str = "127.0.0.1", port: int = 8080,
                 ui_dir: Path | None = None, frame_ancestors: tuple[str, ...] = (),
                 cmk_handler: str = CMK_HANDLER, webhook_handler: str = WEBHOOK_HANDLER) -> None:
        self.data_dir = Path(data_dir)
        self.host, self.requested_port = host, port
        self.ui_dir = Path(ui_dir or os.environ.get("OPENKCM_UI_DIR") or DEFAULT_UI_DIR)
        self.frame_ancestors = frame_ancestors
        self._targets = {"cmk": cmk_handler, "webhook": webhook_handler}
        self._invoke_lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.issuer: LocalIssuer | None = None

    # ---- lifecycle --------------------------------------------------------------------------------
    def start(self) -> dict[str, str]:
        os.environ.setdefault("POWERTOOLS_METRICS_DISABLED", "true")  # no EMF lines on the console
        self._server = ThreadingHTTPServer((self.host, self.requested_port), self._handler_class())
        self._server.daemon_threads = True
        self.issuer = LocalIssuer(self.data_dir, f"{self.base_url}/oidc")
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True, name="http-adapter")
        self._thread.start()
        return self.urls()

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def urls(self) -> dict[str, str]:
        return {"api": f"{self.base_url}/v1", "openapi": f"{self.base_url}/v1/openapi.json",
                "ui": f"{self.base_url}/", "issuer": f"{self.base_url}/oidc"}

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # ---- dispatch ---------------------------------------------------------------------------------
    def dispatch(self, method: str, target: str, headers: list[tuple[str, str]], body: bytes,
                 source_ip: str) -> tuple[int, dict[str, str], bytes]:
        parts = urllib.parse.urlsplit(target)
        path, query = parts.path or "/", parts.query
        if path == "/oidc" or path.startswith("/oidc/"):
            if not is_loopback(source_ip):
                return 403, {"Content-Type": "application/json"}, \
                    b'{"error":"access_denied","error_description":"the local issuer signs in this machine only"}'
            return self._oidc(method, path[len("/oidc"):] or "/", query, headers, body)
        if path.startswith(MARKETPLACE_PREFIX):
            return self._invoke("webhook", method, parts, headers, body, source_ip, claims=None)
        if path == "/v1" or path.startswith("/v1/"):
            claims = None
            if (method, path.rstrip("/") or "/") not in PUBLIC_API_ROUTES:
                try:
                    claims = self._verify(headers)
                except Unauthenticated:
                    # API Gateway's own answer when its JWT authorizer refuses a request
                    return 401, {"Content-Type": "application/json",
                                 "WWW-Authenticate": 'Bearer error="invalid_token"'}, b'{"message":"Unauthorized"}'
            return self._invoke("cmk", method, parts, headers, body, source_ip, claims=claims)
        return self._static(method, path)

    def _verify(self, headers: list[tuple[str, str]]) -> dict[str, Any]:
        assert self.issuer is not None
        value = next((v for k, v in headers if k.lower() == "authorization"), "")
        scheme, _, token = value.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthenticated("missing bearer token")
        return self.issuer.verify(token.strip())

    def _invoke(self, which: str, method: str, parts: urllib.parse.SplitResult, headers: list[tuple[str, str]],
                body: bytes, source_ip: str, claims: dict[str, Any] | None) -> tuple[int, dict[str, str], bytes]:
        handler = _load(self._targets[which])
        if handler is None:
            body_out = {"error": "service_unavailable", "message": f"the {which} function is not installed",
                        "details": {}}
            return 503, {"Content-Type": "application/json"}, json.dumps(body_out).encode()
        event = build_event(method, parts.path, parts.query, headers, body, source_ip, claims)
        context = LocalLambdaContext(function_name=f"openkcm-{which}-local")
        with self._invoke_lock:
            try:
                result = handler(event, context)
            except Exception:  # noqa: BLE001 (a crashed function: API Gateway answers 500 without details)
                return 500, {"Content-Type": "application/json"}, b'{"message":"Internal Server Error"}'
        return _response(result)

    def _oidc(self, method: str, path: str, query: str, headers: list[tuple[str, str]],
              body: bytes) -> tuple[int, dict[str, str], bytes]:
        assert self.issuer is not None

        def flat(text: str) -> dict[str, str]:
            out: dict[str, str] = {}
            for key, value in urllib.parse.parse_qsl(text, keep_blank_values=True):
                out[key] = f"{out[key]},{value}" if key in out else value
            return out

        form = flat(body.decode("utf-8", errors="replace")) if method == "POST" else {}
        return self.issuer.handle(method, path, flat(query), form)

    def _static(self, method: str, path: str) -> tuple[int, dict[str, str], bytes]:
        if method not in ("GET", "HEAD"):
            return 405, {"Content-Type": "text/plain", "Allow": "GET, HEAD"}, b"method not allowed\n"
        root = self.ui_dir.resolve()
        relative = urllib.parse.unquote(path).lstrip("/")
        candidate = (root / relative).resolve() if relative else root / "index.html"
        if not candidate.is_relative_to(root) or not candidate.is_file():
            candidate = root / "index.html"  # SPA fallback: the UI's router handles the path
        if not candidate.is_file():
            return 404, {"Content-Type": "text/plain"}, b"the web UI is not built (frontend/dist is missing)\n"
        content_type = mimetypes.guess_type(candidate.name)[0] or "application/octet-stream"
        if content_type.startswith("text/") or content_type in ("application/javascript", "application/json"):
            content_type += "; charset=utf-8"
        cache = "no-cache" if candidate.name == "index.html" else "public, max-age=3600"
        return 200, {"Content-Type": content_type, "Cache-Control": cache}, candidate.read_bytes()

    # ---- http.server plumbing ---------------------------------------------------------------------
    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        adapter = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body go out in separate writes; with Nagle on, a keep-alive client's delayed
            # ACK stalls every answer ~40 ms (measured by bench/provision.py).
            disable_nagle_algorithm = True
            server_version = "openkcm-local"
            sys_version = ""
            timeout = REQUEST_TIMEOUT  # a silent client's socket read times out and its thread ends

            def _serve(self) -> None:
                if self.command not in ALLOWED_METHODS:
                    self._send(405, {"Content-Type": "application/json", "Allow": ", ".join(sorted(ALLOWED_METHODS))},
                               b'{"message":"Method Not Allowed"}')
                    return
                if self.headers.get("Transfer-Encoding") is not None:
                    # no de-chunking here: the chunk bytes would otherwise be read as the next request
                    self._send(411, {"Content-Type": "application/json", "Connection": "close"},
                               b'{"message":"Length Required"}')
                    self.close_connection = True
                    return
                length_header = self.headers.get("Content-Length") or "0"
                try:
                    length = int(length_header)
                except ValueError:
                    length = -1
                if length < 0 or length > MAX_BODY:
                    self._send(413 if length > MAX_BODY else 400, {"Content-Type": "application/json"},
                               b'{"message":"Request body too large or length invalid"}')
                    self.close_connection = True
                    return
                body = self.rfile.read(length) if length else b""
                try:
                    status, headers, payload = adapter.dispatch(
                        self.command, self.path, list(self.headers.items()), body, self.client_address[0]
                    )
                except Exception:  # noqa: BLE001 (never a stack trace to the client)
                    status, headers, payload = 500, {"Content-Type": "application/json"}, \
                        b'{"message":"Internal Server Error"}'
                self._send(status, headers, payload)

            def _send(self, status: int, headers: dict[str, str], payload: bytes) -> None:
                self.send_response(status)
                merged = {**security_headers(adapter.frame_ancestors), **headers}
                if str(getattr(self, "path", "")).startswith(("/v1", "/oidc")):
                    merged.setdefault("Cache-Control", "no-store")
                for name, value in merged.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                if getattr(self, "command", "") != "HEAD":
                    self.wfile.write(payload)

            def __getattr__(self, name: str) -> Any:
                if name.startswith("do_"):  # every method reaches _serve, which refuses the unknown ones
                    return self._serve
                raise AttributeError(name)

            def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
                """Malformed requests get a JSON answer too (never http.server's HTML page)."""
                self.close_connection = True
                body = json.dumps({"message": message or "Bad Request"}).encode()
                try:
                    self._send(code, {"Content-Type": "application/json", "Connection": "close"}, body)
                except OSError:
                    pass

            def log_message(self, *args: Any) -> None:
                return None

        return Handler


def _response(result: dict[str, Any]) -> tuple[int, dict[str, str], bytes]:
    """A Lambda proxy result (payload 2.0) as status, headers and body."""
    if not isinstance(result, dict) or "statusCode" not in result:
        body = json.dumps(result if result is not None else "").encode()
        return 200, {"Content-Type": "application/json"}, body
    headers = {str(k): str(v) for k, v in (result.get("headers") or {}).items()}
    for name, values in (result.get("multiValueHeaders") or {}).items():
        headers[str(name)] = ", ".join(str(v) for v in values)
    raw = result.get("body") or ""
    payload = base64.b64decode(raw) if result.get("isBase64Encoded") else str(raw).encode()
    return int(result["statusCode"]), headers, payload


class ApiService:
    """``openkcm local up`` service ``api``: the adapter on ``stack.options.ports["api"]`` (default 8080)."""

    name = "api"
    DEFAULT_PORT = 8080

    def __init__(self) -> None:
        self.adapter: LocalHttpAdapter | None = None

    def start(self, stack: LocalStack) -> dict[str, Any]:
        from openkcm.api.context import bind_runtime

        runtime: Runtime | None = stack.runtime
        bind_runtime(runtime)
        self.adapter = LocalHttpAdapter(
            data_dir=stack.data_dir, host=stack.options.host,
            port=stack.options.ports.get("api", self.DEFAULT_PORT),
            frame_ancestors=frame_ancestors_from_env(),
        )
        urls = self.adapter.start()
        return {**urls, "token": "openkcm local token --account <account> --role account-admin"}

    def healthy(self) -> bool:
        return self.adapter is not None and self.adapter.running()

    def stop(self) -> None:
        if self.adapter is not None:
            self.adapter.stop()
