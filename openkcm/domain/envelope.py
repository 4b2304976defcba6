"""AES-256-GCM envelopes with associated data that names what the blob belongs to.

Every wrapped key in OpenKCM is ``version byte || 96-bit random nonce || ciphertext || tag``. The AAD is
a canonical, length-prefixed encoding of ``purpose`` and the binding fields (tenant, object id, key
version ...), so a blob copied to another tenant, object or version fails authentication. Random 96-bit
nonces are safe here: each key wraps far fewer than 2**32 messages (NIST SP 800-38D, 8.3).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from openkcm.errors import IntegrityFailure, InvalidRequest

ENVELOPE_V1 = b"\x01"
NONCE_BYTES = 12
_MIN_BLOB = 1 + NONCE_BYTES + 16


def binding(purpose: str, fields: Mapping[str, str | int]) -> bytes:
    """Canonical AAD: purpose and sorted fields, each length-prefixed (no delimiter ambiguity)."""
    parts = [purpose.encode()]
    for name in sorted(fields):
        parts.append(name.encode())
        parts.append(str(fields[name]).encode())
    return b"".join(len(p).to_bytes(4, "big") + p for p in parts)


def seal(key: bytes, plaintext: bytes, aad: bytes) -> bytes:
    if len(key) != 32:
        raise InvalidRequest("envelope keys are 256-bit")
    nonce = os.urandom(NONCE_BYTES)
    return ENVELOPE_V1 + nonce + AESGCM(key).encrypt(nonce, plaintext, aad)


def open_sealed(key: bytes, blob: bytes, aad: bytes) -> bytes:
    if len(blob) < _MIN_BLOB or blob[:1] != ENVELOPE_V1:
        raise IntegrityFailure()
    nonce = blob[1 : 1 + NONCE_BYTES]
    try:
        return AESGCM(key).decrypt(nonce, blob[1 + NONCE_BYTES :], aad)
    except InvalidTag as exc:
        raise IntegrityFailure() from exc
