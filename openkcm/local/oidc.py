"""A small OpenID Connect issuer for the local stack (DECISIONS 12): discovery, JWKS, an authorization
endpoint with a login form, and a token endpoint for the authorization-code flow with PKCE (S256 only).

It stands in for Cognito or the platform's IdP. It is a *development* issuer: the login form lets you say
who you are (subject, account, roles, whether you used a second factor) without a password, so it only
ever listens on the local stack's loopback address. The signing key (ES256, P-256) is a 0600 file in the
data directory, so tokens survive restarts of ``openkcm local up``.

Everything here is transport-free: :class:`LocalIssuer.handle` takes method, path, query and form and
returns ``(status, headers, body)``; the HTTP adapter serves it under ``/oidc``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import html
import json
import re
import secrets
import threading
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from openkcm.errors import InvalidRequest, Unauthenticated
from openkcm.files import write_private

AUDIENCE = "openkcm-api"
ALGORITHM = "ES256"
ROLES = ("account-admin", "key-admin", "auditor", "platform-operator")
CODE_TTL = 120
DEFAULT_TTL = 3600
MAX_TTL = 12 * 3600
_CHALLENGE = re.compile(r"^[A-Za-z0-9_-]{43,128}\Z")
_VERIFIER = re.compile(r"^[A-Za-z0-9._~-]{43,128}\Z")
_CLIENT = re.compile(r"^[A-Za-z0-9._-]{1,64}\Z")
_LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})

Reply = tuple[int, dict[str, str], bytes]


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def load_signing_key(data_dir: Path) -> ec.EllipticCurvePrivateKey:
    """The issuer's key: ``<data-dir>/oidc/signing-key.pem`` (0600), created on first use."""
    directory = Path(data_dir) / "oidc"
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = directory / "signing-key.pem"
    if path.exists():
        key = serialization.load_pem_private_key(path.read_bytes(), None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise InvalidRequest(f"{path} is not an EC private key")
        return key
    key = ec.generate_private_key(ec.SECP256R1())
    write_private(path, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return key


def public_jwk(key: ec.EllipticCurvePrivateKey) -> dict[str, str]:
    numbers = key.public_key().public_numbers()
    jwk = {"crv": "P-256", "kty": "EC", "x": _b64url(numbers.x.to_bytes(32, "big")),
           "y": _b64url(numbers.y.to_bytes(32, "big"))}
    # RFC 7638 thumbprint as the key id
    thumb = _b64url(hashlib.sha256(json.dumps(jwk, sort_keys=True, separators=(",", ":")).encode()).digest())
    return {**jwk, "kid": thumb, "use": "sig", "alg": ALGORITHM}


@dataclass
class _Code:
    client_id: str
    redirect_uri: str
    challenge: str
    claims: dict[str, Any]
    nonce: str
    expires: float


class LocalIssuer:
    def __init__(self, data_dir: Path, issuer_url: str, *, audience: str = AUDIENCE,
                 allowed_redirect_hosts: frozenset[str] = _LOOPBACK_HOSTS) -> None:
        self.issuer = issuer_url.rstrip("/")
        self.audience = audience
        self._key = load_signing_key(data_dir)
        self._jwk = public_jwk(self._key)
        self._public = self._key.public_key()
        self._allowed_hosts = allowed_redirect_hosts
        self._codes: dict[str, _Code] = {}
        self._lock = threading.Lock()

    # ---- tokens ---------------------------------------------------------------------------------
    @property
    def kid(self) -> str:
        return self._jwk["kid"]

    def mint(self, *, subject: str, account: str, roles: list[str], mfa: bool = False, ttl: int = DEFAULT_TTL,
             audience: str | None = None, nonce: str = "", client_id: str = "openkcm-cli") -> str:
        unknown = [r for r in roles if r not in ROLES]
        if unknown or not roles:
            raise InvalidRequest(f"roles must be some of {', '.join(ROLES)}", field="roles")
        if not 60 <= ttl <= MAX_TTL:
            raise InvalidRequest(f"token lifetime must be 60..{MAX_TTL} seconds", field="ttl")
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.issuer, "aud": audience or self.audience, "sub": subject, "iat": now, "nbf": now,
            "exp": now + ttl, "jti": secrets.token_hex(16), "client_id": client_id,
            "openkcm:account": account, "openkcm:roles": list(roles), "amr": ["pwd", "mfa"] if mfa else ["pwd"],
        }
        if nonce:
            claims["nonce"] = nonce
        return jwt.encode(claims, self._key, algorithm=ALGORITHM, headers={"kid": self.kid})

    def verify(self, token: str) -> dict[str, Any]:
        """What API Gateway's JWT authorizer checks: signature, issuer, audience, expiry, not-before."""
        try:
            header = jwt.get_unverified_header(token)
            if header.get("kid") not in (None, self.kid):
                raise Unauthenticated("token was signed by an unknown key")
            return jwt.decode(
                token, self._public, algorithms=[ALGORITHM], audience=self.audience, issuer=self.issuer,
                options={"require": ["exp", "iat", "iss", "aud", "sub"]}, leeway=5,
            )
        except jwt.PyJWTError as exc:
            raise Unauthenticated(f"invalid token: {type(exc).__name__}") from None

    # ---- documents ------------------------------------------------------------------------------
    def discovery(self) -> dict[str, Any]:
        return {
            "issuer": self.issuer,
            "authorization_endpoint": f"{self.issuer}/authorize",
            "token_endpoint": f"{self.issuer}/token",
            "jwks_uri": f"{self.issuer}/jwks.json",
            "response_types_supported": ["code"],
            "grant_types_supported": ["authorization_code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": [ALGORITHM],
            "code_challenge_methods_supported": ["S256"],
            "token_endpoint_auth_methods_supported": ["none"],
            "scopes_supported": ["openid", "profile"],
            "claims_supported": ["sub", "openkcm:account", "openkcm:roles", "amr"],
        }

    def jwks(self) -> dict[str, Any]:
        return {"keys": [self._jwk]}

    # ---- HTTP -----------------------------------------------------------------------------------
    def handle(self, method: str, path: str, query: dict[str, str], form: dict[str, str]) -> Reply:
        """Serve one request below the issuer (``path`` is what follows ``/oidc``)."""
        try:
            if method == "GET" and path == "/.well-known/openid-configuration":
                return _json(200, self.discovery())
            if method == "GET" and path == "/jwks.json":
                return _json(200, self.jwks())
            if path == "/authorize" and method == "GET":
                return self._login_form(query)
            if path == "/authorize" and method == "POST":
                return self._login(form)
            if path == "/token" and method == "POST":
                return self._token(form)
            return _json(404, {"error": "not_found", "error_description": "no such issuer endpoint"})
        except InvalidRequest as exc:
            return _json(400, {"error": "invalid_request", "error_description": exc.message})

    def _check_authorize(self, params: dict[str, str]) -> dict[str, str]:
        if params.get("response_type") != "code":
            raise InvalidRequest("response_type must be code")
        if not _CLIENT.match(params.get("client_id", "")):
            raise InvalidRequest("client_id is missing or malformed")
        redirect = params.get("redirect_uri", "")
        parsed = urllib.parse.urlsplit(redirect)
        if parsed.scheme not in ("http", "https") or parsed.hostname not in self._allowed_hosts or parsed.fragment:
            raise InvalidRequest("redirect_uri must be an http(s) URL on this machine (loopback) without fragment")
        if params.get("code_challenge_method") != "S256" or not _CHALLENGE.match(params.get("code_challenge", "")):
            raise InvalidRequest("PKCE is required: code_challenge (base64url) with code_challenge_method=S256")
        return {k: params.get(k, "") for k in ("client_id", "redirect_uri", "state", "code_challenge", "nonce", "scope")}

    def _login_form(self, query: dict[str, str]) -> Reply:
        params = self._check_authorize(query)
        hidden = "".join(
            f'<input type="hidden" name="{html.escape(k)}" value="{html.escape(v)}">' for k, v in params.items()
        )
        roles = "".join(
            f'<label><input type="checkbox" name="role" value="{r}"{" checked" if r == "account-admin" else ""}> {r}</label><br>'
            for r in ROLES
        )
        page = f"""<!doctype html><html lang="en"><head><meta charset="utf-8"><title>OpenKCM local sign-in</title></head>
<body><main><h1>OpenKCM local sign-in</h1>
<p>Development issuer of <code>openkcm local up</code>: choose who you are. Never expose it beyond this machine.</p>
<form method="post" action="{html.escape(self.issuer)}/authorize">{hidden}
<p><label>User <input name="username" required maxlength="128" value="dev@example.com"></label></p>
<p><label>Account <input name="account" maxlength="128" value="acme-corp-12345"></label></p>
<fieldset><legend>Roles</legend>{roles}</fieldset>
<p><label><input type="checkbox" name="mfa" value="1"> I signed in with a second factor (MFA)</label></p>
<p><button type="submit">Sign in</button></p></form></main></body></html>"""
        return 200, {"Content-Type": "text/html; charset=utf-8", "Cache-Control": "no-store"}, page.encode()

    def _login(self, form: dict[str, str]) -> Reply:
        params = self._check_authorize({**form, "response_type": "code", "code_challenge_method": "S256"})
        username = form.get("username", "").strip()
        if not username or len(username) > 128 or any(ord(c) < 32 for c in username):
            raise InvalidRequest("user name is required")
        roles = [r for r in form.get("role", "").split(",") if r]
        if not roles or any(r not in ROLES for r in roles):
            raise InvalidRequest("choose at least one role")
        claims = {"subject": username, "account": form.get("account", "").strip(), "roles": roles,
                  "mfa": form.get("mfa") == "1"}
        code = secrets.token_urlsafe(32)
        with self._lock:
            now = time.time()
            self._codes = {k: v for k, v in self._codes.items() if v.expires > now}
            self._codes[code] = _Code(params["client_id"], params["redirect_uri"], params["code_challenge"], claims,
                                      params["nonce"], now + CODE_TTL)
        query = {"code": code}
        if params["state"]:
            query["state"] = params["state"]
        separator = "&" if "?" in params["redirect_uri"] else "?"
        location = params["redirect_uri"] + separator + urllib.parse.urlencode(query)
        return 302, {"Location": location, "Cache-Control": "no-store"}, b""

    def _token(self, form: dict[str, str]) -> Reply:
        if form.get("grant_type") != "authorization_code":
            return _json(400, {"error": "unsupported_grant_type"})
        with self._lock:
            entry = self._codes.pop(form.get("code", ""), None)  # single use, even when the rest is wrong
        verifier = form.get("code_verifier", "")
        if entry is None or entry.expires < time.time():
            return _json(400, {"error": "invalid_grant", "error_description": "unknown or expired code"})
        if not _VERIFIER.match(verifier):
            return _json(400, {"error": "invalid_grant", "error_description": "code_verifier is malformed"})
        challenge = _b64url(hashlib.sha256(verifier.encode("ascii")).digest())
        if not (hmac.compare_digest(challenge, entry.challenge)
                and hmac.compare_digest(form.get("redirect_uri", ""), entry.redirect_uri)
                and hmac.compare_digest(form.get("client_id", ""), entry.client_id)):
            return _json(400, {"error": "invalid_grant", "error_description": "PKCE, client or redirect mismatch"})
        c = entry.claims
        access = self.mint(subject=c["subject"], account=c["account"], roles=c["roles"], mfa=c["mfa"],
                           client_id=entry.client_id)
        id_token = self.mint(subject=c["subject"], account=c["account"], roles=c["roles"], mfa=c["mfa"],
                             audience=entry.client_id, nonce=entry.nonce, client_id=entry.client_id)
        return _json(200, {"access_token": access, "id_token": id_token, "token_type": "Bearer",
                           "expires_in": DEFAULT_TTL, "scope": "openid"})


def _json(status: int, body: dict[str, Any]) -> Reply:
    headers = {"Content-Type": "application/json", "Cache-Control": "no-store"}
    return status, headers, json.dumps(body).encode()
