"""Keystore credentials (AWS access keys and role external ids, HSM PINs, Azure client secrets, GCP
service-account keys), sealed by the internal root key.

The sealed blob is ``KeystoreModel.secret_wrapped``; the root key's AAD names the purpose, the account
and the keystore id, so a blob copied onto another keystore or account does not open. Plaintext
secrets exist only in memory, inside :class:`Secrets`, whose ``repr`` shows the field names only — a
stray log line or traceback never prints a value.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping

from openkcm.domain.rootkey import RootKeyProvider
from openkcm.errors import InvalidRequest

PURPOSE = "openkcm-keystore-credentials"
MAX_SECRET_CHARS = 16_384  # a GCP service-account JSON key is ~2.4 KB


class Secrets(Mapping[str, str]):
    """Read-only secret values that never print themselves."""

    __slots__ = ("_values",)

    def __init__(self, values: Mapping[str, str] | None = None) -> None:
        self._values = dict(values or {})

    def __getitem__(self, name: str) -> str:
        return self._values[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return f"Secrets({sorted(self._values)} redacted)"

    __str__ = __repr__

    def merged(self, update: Mapping[str, str | None]) -> Secrets:
        """A copy with ``update`` applied; a value of None or "" removes the field."""
        values = dict(self._values)
        for name, value in update.items():
            if value in (None, ""):
                values.pop(name, None)
            else:
                values[name] = value  # type: ignore[assignment]
        return Secrets(values)


def _context(account_id: str, keystore_id: str) -> dict[str, str]:
    return {"purpose": PURPOSE, "account_id": account_id, "keystore_id": keystore_id}


def validate_secrets(secrets: Mapping[str, object], allowed: frozenset[str]) -> Secrets:
    if not isinstance(secrets, Mapping):
        raise InvalidRequest("secrets must be an object of strings", field="secrets")
    unknown = sorted(set(secrets) - allowed)
    if unknown:
        raise InvalidRequest(
            f"unknown secret fields {unknown}; this provider takes {sorted(allowed)}", field="secrets"
        )
    values: dict[str, str] = {}
    for name, value in secrets.items():
        if value is None or value == "":
            continue
        if not isinstance(value, str) or len(value) > MAX_SECRET_CHARS:
            raise InvalidRequest(f"secret field {name!r} must be a string of at most {MAX_SECRET_CHARS} chars")
        values[name] = value
    return Secrets(values)


class CredentialVault:
    """Seals and opens keystore secrets with the root key (any version it still holds)."""

    def __init__(self, root: RootKeyProvider) -> None:
        self._root = root

    def seal(self, account_id: str, keystore_id: str, secrets: Mapping[str, str]) -> bytes | None:
        if not secrets:
            return None
        payload = json.dumps(dict(secrets), sort_keys=True, separators=(",", ":")).encode()
        return self._root.wrap(payload, _context(account_id, keystore_id))

    def open(self, account_id: str, keystore_id: str, blob: bytes | None) -> Secrets:
        if not blob:
            return Secrets()
        payload = self._root.unwrap(bytes(blob), _context(account_id, keystore_id))
        return Secrets(json.loads(payload))
