"""Who is calling and what they may do: the verified JWT claims API Gateway puts in the v2 event.

The API never verifies a token itself. In AWS the HTTP API's JWT authorizer checks signature, issuer,
audience and expiry and passes the claims in ``requestContext.authorizer.jwt.claims``; locally the HTTP
adapter (:mod:`openkcm.local.http_adapter`) does the same verification against the local issuer. Claims
(DECISIONS 12): ``sub``, ``openkcm:account``, ``openkcm:roles``, ``amr``.

API Gateway flattens array claims into a string such as ``"[account-admin auditor]"``; both that form and
a real JSON list are accepted.

The role matrix lives in :data:`ROLE_PERMISSIONS` and nowhere else. Scope is checked before permission,
so a caller learns nothing about another account: its objects answer 404 exactly like missing ones.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from openkcm.errors import NotFound, PermissionDenied, Unauthenticated

ACCOUNT_ADMIN, KEY_ADMIN, AUDITOR, PLATFORM_OPERATOR = "account-admin", "key-admin", "auditor", "platform-operator"
ROLES = (ACCOUNT_ADMIN, KEY_ADMIN, AUDITOR, PLATFORM_OPERATOR)
CLAIM_ACCOUNT, CLAIM_ROLES = "openkcm:account", "openkcm:roles"
CLAIM_MFA = "openkcm:mfa"

# Permissions, one per kind of action. Reading key *metadata* is not key material: the API has no
# route that returns key material, wrapped or not, to anybody.
TENANT_READ, TENANT_WRITE, TENANT_DELETE = "tenant:read", "tenant:write", "tenant:delete"
KEYSTORE_READ, KEYSTORE_WRITE, L1_WRITE = "keystore:read", "keystore:write", "l1:write"
ROTATION_READ, ROTATION_WRITE = "rotation:read", "rotation:write"
CERT_READ, CERT_WRITE, KEYS_READ = "cert:read", "cert:write", "keys:read"
AUDIT_READ, NOTIFICATIONS_READ = "audit:read", "notifications:read"

ALL_PERMISSIONS = frozenset(
    {
        TENANT_READ, TENANT_WRITE, TENANT_DELETE, KEYSTORE_READ, KEYSTORE_WRITE, L1_WRITE, ROTATION_READ,
        ROTATION_WRITE, CERT_READ, CERT_WRITE, KEYS_READ, AUDIT_READ, NOTIFICATIONS_READ,
    }
)
_READ = frozenset({TENANT_READ, KEYSTORE_READ, ROTATION_READ, CERT_READ, KEYS_READ})

ROLE_PERMISSIONS: Mapping[str, frozenset[str]] = {
    # everything in its own account
    ACCOUNT_ADMIN: ALL_PERMISSIONS,
    # keystores, L1 keys and rotation (and reading what it needs to do that)
    KEY_ADMIN: _READ | {KEYSTORE_WRITE, L1_WRITE, ROTATION_WRITE},
    # read-only plus the audit trail
    AUDITOR: _READ | {AUDIT_READ, NOTIFICATIONS_READ},
    # every account; tenant lifecycle and reading, never keystores, L1 keys, key rotation or certificates
    PLATFORM_OPERATOR: _READ | {TENANT_WRITE, AUDIT_READ, NOTIFICATIONS_READ},
}

_SUB = re.compile(r"^[^\x00-\x1f]{1,256}\Z")


def _as_list(value: Any) -> list[str]:
    """A claim that should be a list of strings, in any of the shapes API Gateway may hand over."""
    if value is None:
        return []
    if isinstance(value, list | tuple):
        return [str(v) for v in value]
    text = str(value).strip()
    if text.startswith("[") and text.endswith("]"):
        try:
            parsed = json.loads(text)
        except ValueError:
            return text[1:-1].replace(",", " ").split()  # API Gateway's "[a b]" flattening
        return [str(v) for v in parsed] if isinstance(parsed, list) else []
    return text.replace(",", " ").split()


@dataclass(frozen=True)
class Principal:
    subject: str
    account_id: str
    roles: frozenset[str]
    mfa: bool

    @classmethod
    def from_claims(cls, claims: Mapping[str, Any] | None) -> Principal:
        if not claims:
            raise Unauthenticated("a bearer token is required")
        subject = str(claims.get("sub") or "")
        if not _SUB.match(subject):
            raise Unauthenticated("token has no usable subject")
        roles = frozenset(r for r in _as_list(claims.get(CLAIM_ROLES)) if r in ROLE_PERMISSIONS)
        if not roles:
            raise PermissionDenied("token carries no OpenKCM role")
        account = str(claims.get(CLAIM_ACCOUNT) or "")
        if not account and roles != {PLATFORM_OPERATOR}:
            raise PermissionDenied("token names no account")
        # ``amr`` is the standard place; Cognito reserves it, so the stack's pre-token trigger of a pool that
        # requires MFA for every sign-in states it as ``openkcm:mfa`` = "true" (infra_cdk/pretoken).
        mfa = "mfa" in _as_list(claims.get("amr")) or str(claims.get(CLAIM_MFA, "")).lower() == "true"
        return cls(subject, account, roles, mfa)

    @property
    def is_operator(self) -> bool:
        return PLATFORM_OPERATOR in self.roles

    @property
    def role_label(self) -> str:
        return ",".join(sorted(self.roles))

    def permissions(self, account_id: str) -> frozenset[str]:
        """What the caller may do in ``account_id``: the operator role everywhere, the account roles only in
        the token's own account (a token with both must not carry its account role into other accounts)."""
        granted: set[str] = set()
        for role in self.roles:
            if role == PLATFORM_OPERATOR or account_id == self.account_id:
                granted |= ROLE_PERMISSIONS[role]
        return frozenset(granted)

    def in_scope(self, account_id: str) -> bool:
        return self.is_operator or account_id == self.account_id

    def require(self, permission: str, account_id: str) -> None:
        """Scope first (404, indistinguishable from missing), then permission (403)."""
        if not self.in_scope(account_id):
            raise NotFound("no such object")
        if permission not in self.permissions(account_id):
            raise PermissionDenied(f"your role(s) {self.role_label} may not do this ({permission})")

    def require_mfa(self, what: str) -> None:
        if not self.mfa:
            raise PermissionDenied(
                f"{what} changes a hold-your-own-key (PKCS#11) keystore and needs a multi-factor login: "
                "sign in again with MFA (the token's amr claim must contain 'mfa')",
                required_amr="mfa",
            )
