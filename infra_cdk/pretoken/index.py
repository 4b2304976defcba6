"""Cognito pre-token-generation (V2) trigger: puts the DECISIONS 12 claims into the access token.

``custom:account`` -> ``openkcm:account``; ``custom:roles`` (comma-separated) -> ``openkcm:roles``,
keeping only the four known roles. Cognito's pool requires MFA, so every token is MFA-backed and the
trigger says so in ``openkcm:mfa``; ``amr`` itself is reserved by Cognito (see infra_cdk/README.md).
No logging of attributes: nothing here is secret, but nothing here needs to be logged either.
"""

from __future__ import annotations

from typing import Any

ROLES = ("account-admin", "key-admin", "auditor", "platform-operator")


def claims(attributes: dict[str, str]) -> dict[str, Any]:
    roles = [r.strip() for r in attributes.get("custom:roles", "").split(",") if r.strip() in ROLES]
    out: dict[str, Any] = {"openkcm:roles": sorted(set(roles)), "openkcm:mfa": "true"}
    account = attributes.get("custom:account", "").strip()
    if account:
        out["openkcm:account"] = account
    return out


def handler(event: dict[str, Any], context: object) -> dict[str, Any]:
    extra = claims(event.get("request", {}).get("userAttributes", {}))
    event.setdefault("response", {})["claimsAndScopeOverrideDetails"] = {
        "accessTokenGeneration": {"claimsToAddOrOverride": extra},
        "idTokenGeneration": {"claimsToAddOrOverride": extra},
    }
    return event
