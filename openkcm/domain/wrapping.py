"""The one interface every parent of an L2 key implements: the internal root key and each L1
keystore key. The hierarchy only ever asks a parent to wrap and unwrap; it never sees parent material.

``context`` names tenant and L2 version; each implementation binds it cryptographically (AAD, KMS
encryption context, GCP additional authenticated data) where its backend allows.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping

Context = Mapping[str, str]


class WrappingKey(ABC):
    @property
    @abstractmethod
    def ref(self) -> str:
        """Stable reference stored beside each blob (e.g. ``root:v3`` or ``l1:<keystore>/<key>``)."""

    @abstractmethod
    def wrap(self, plaintext: bytes, context: Context) -> bytes: ...

    @abstractmethod
    def unwrap(self, blob: bytes, context: Context) -> bytes: ...
