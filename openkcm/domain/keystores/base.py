"""The keystore connector: one template for every L1 backend (AWS KMS, PKCS#11 HSM, Azure Key Vault,
GCP Cloud KMS).

The public methods — :meth:`KeystoreConnector.test_connection`, :meth:`~KeystoreConnector.describe_key`,
:meth:`~KeystoreConnector.list_keys`, :meth:`~KeystoreConnector.wrap`, :meth:`~KeystoreConnector.unwrap`
— live here and do what every backend needs the same way: argument checks before any call, a hard
timeout per call, one log line per call (never a key, a plaintext or a credential) and the mapping of
backend failures to the typed errors below. A subclass implements only the ``_``-prefixed backend call
and says how its SDK's exceptions map (``_map_error``).

Every error a connector raises that means "the L1 key cannot be used right now" is a subclass of
:class:`openkcm.errors.KeyUnavailable`: that is what the hierarchy's grace period catches (seed 002
REQ-030), and it is what the tenant's requests fail closed with once the grace period is over. Each one
carries ``fix`` — one sentence telling the customer what to change — and ``check`` — which validation
step it belongs to. Messages name keys and ARNs, never secrets.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import hmac
import logging
import os
import re
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar, TypeVar

from openkcm.domain.envelope import binding
from openkcm.domain.wrapping import Context, WrappingKey
from openkcm.errors import IntegrityFailure, InvalidRequest, KeyUnavailable, OpenKCMError

log = logging.getLogger("openkcm.keystores")

T = TypeVar("T")

MAX_WRAP_BYTES = 512  # an L2 key is 32 bytes; anything much larger is a caller mistake
DEFAULT_CALL_TIMEOUT = 10.0
CONTEXT_DIGEST_BYTES = 16


# ---- typed errors -------------------------------------------------------------------------------
class KeystoreError(KeyUnavailable):
    """The L1 keystore could not do what was asked."""

    code = "keystore_error"
    check = "keystore"
    default_fix = "Check the keystore configuration and try the connection test again."

    def __init__(self, message: str = "", *, fix: str = "", **details: object) -> None:
        self.fix = fix or self.default_fix
        super().__init__(message, fix=self.fix, **details)


class KeystoreUnreachable(KeystoreError):
    """The keystore did not answer (network path, DNS, TLS, endpoint down)."""

    code = "keystore_unreachable"
    check = "connection"
    default_fix = (
        "Check the endpoint and the network path from OpenKCM to the keystore (VPC endpoint, VPN or "
        "Direct Connect, firewall), then test the connection again."
    )


class KeystoreTimeout(KeystoreUnreachable):
    """The keystore did not answer within the time allowed for one call."""

    code = "keystore_timeout"


class KeystoreAuthenticationFailed(KeystoreError):
    """The keystore refused the credentials OpenKCM presented."""

    http_status = 422
    code = "keystore_authentication_failed"
    check = "authentication"
    default_fix = "Update the keystore credentials (access key, role and external id, client secret or PIN)."


class KeystorePermissionMissing(KeystoreError):
    """The credentials work but lack a permission on the key."""

    http_status = 422
    code = "keystore_permission_missing"
    check = "permission"


class KeystoreKeyNotFound(KeystoreError):
    """The key does not exist in the keystore (or OpenKCM may not see it)."""

    http_status = 422
    kmip_reason = "ITEM_NOT_FOUND"
    code = "keystore_key_not_found"
    check = "key"
    default_fix = "Check the key reference (ARN, alias, label, key name) and that OpenKCM may read the key."


class KeystoreKeyDisabled(KeystoreError):
    """The key exists but is disabled, scheduled for deletion, destroyed or not yet usable."""

    http_status = 422
    kmip_reason = "WRONG_KEY_LIFECYCLE_STATE"
    code = "keystore_key_disabled"
    check = "key"
    default_fix = "Enable the key (or cancel its deletion) in the keystore, then test the connection again."


class KeystoreKeyUnsuitable(KeystoreError):
    """The key cannot serve as an L1 key (wrong type, usage, algorithm or it is extractable)."""

    http_status = 422
    code = "keystore_key_unsuitable"
    check = "key"
    default_fix = "Choose a symmetric (or RSA wrapping) key whose usage allows encrypt/decrypt or wrap/unwrap."


class KeystoreConfigInvalid(InvalidRequest):
    """The keystore configuration is incomplete or not allowed."""

    code = "keystore_config_invalid"
    check = "configuration"

    def __init__(self, message: str = "", *, fix: str = "", **details: object) -> None:
        self.fix = fix or "Correct the keystore configuration."
        super().__init__(message, fix=self.fix, **details)


KEYSTORE_ERRORS = (KeystoreError, KeystoreConfigInvalid)


# ---- results ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class KeyInfo:
    """What a keystore tells about one key. Only public facts: no material, no policy text."""

    key_ref: str
    key_id: str = ""
    state: str = ""  # backend wording, e.g. Enabled / Disabled / PendingDeletion / ENABLED
    usable: bool = False
    algorithm: str = ""  # e.g. SYMMETRIC_DEFAULT, AES-256, RSA-OAEP-256, GOOGLE_SYMMETRIC_ENCRYPTION
    origin: str = ""  # e.g. AWS_KMS, EXTERNAL, HSM
    description: str = ""
    extra: Mapping[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["extra"] = dict(self.extra)
        return data


# One executor for every connector of the process: a backend call that hangs keeps a worker busy but
# never the caller, who gets KeystoreTimeout after its deadline. A hung call cannot be cancelled (PKCS#11
# calls have no timeout of their own), so each backend (``KeystoreConnector.backend_key``: an HSM module,
# a cloud provider) may hold at most MAX_IN_FLIGHT workers; past that its calls fail at once. One
# customer's unresponsive HSM then cannot take the workers every other tenant's keystore calls need.
MAX_IN_FLIGHT = 4
_POOL = concurrent.futures.ThreadPoolExecutor(max_workers=32, thread_name_prefix="keystore")
_GATES: dict[str, threading.BoundedSemaphore] = {}
_GATES_GUARD = threading.Lock()


def _gate(backend: str) -> threading.BoundedSemaphore:
    with _GATES_GUARD:
        return _GATES.setdefault(backend, threading.BoundedSemaphore(MAX_IN_FLIGHT))


def context_digest(context: Context) -> bytes:
    """A short digest of the wrap context for backends whose wrap mechanism has no associated data
    (AES-KWP, RSA-OAEP): it is wrapped together with the key and compared on unwrap."""
    return hashlib.sha256(binding("openkcm/l1-context", context)).digest()[:CONTEXT_DIGEST_BYTES]


def bind_plaintext(plaintext: bytes, context: Context) -> bytes:
    return context_digest(context) + plaintext


def unbind_plaintext(data: bytes, context: Context) -> bytes:
    expected = context_digest(context)
    if len(data) <= CONTEXT_DIGEST_BYTES or not hmac.compare_digest(data[:CONTEXT_DIGEST_BYTES], expected):
        raise IntegrityFailure()
    return data[CONTEXT_DIGEST_BYTES:]


# Blobs of keystores whose key reference can move (an AWS alias re-pointed, a new Azure key version) carry
# the concrete key that wrapped them, so that they open after the customer rotates: the envelope is
# PINNED_MAGIC, a 2-byte length, that key's id (ARN / versioned key URL), then the keystore's own blob.
PINNED_MAGIC = b"\x00OKP1"


def pin(key_id: str, blob: bytes) -> bytes:
    raw = key_id.encode()
    if not raw or len(raw) > 0xFFFF:
        return blob
    return PINNED_MAGIC + len(raw).to_bytes(2, "big") + raw + blob


def unpin(blob: bytes) -> tuple[str | None, bytes]:
    """(the key that wrapped it, the keystore's blob); None for a blob wrapped before pinning."""
    if not blob.startswith(PINNED_MAGIC) or len(blob) < len(PINNED_MAGIC) + 2:
        return None, blob
    start = len(PINNED_MAGIC) + 2
    size = int.from_bytes(blob[len(PINNED_MAGIC) : start], "big")
    if len(blob) <= start + size:
        raise IntegrityFailure()
    try:
        return blob[start : start + size].decode(), blob[start + size :]
    except UnicodeDecodeError:
        raise IntegrityFailure() from None


class KeystoreConnector(WrappingKey, ABC):
    """Template for an L1 connector bound to one keystore and (usually) one key.

    ``keystore_id`` and ``key_ref`` make the stable parent reference stored beside every L2 blob:
    ``l1:<keystore_id>/<key_ref>``. ``timeout`` bounds every single backend call.
    """

    provider: ClassVar[str] = ""
    # Configuration fields the provider accepts (required, optional) and the secret fields it takes.
    required_config: ClassVar[frozenset[str]] = frozenset()
    optional_config: ClassVar[frozenset[str]] = frozenset()
    secret_fields: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, *, keystore_id: str = "", key_ref: str | None = None, timeout: float = DEFAULT_CALL_TIMEOUT):
        if timeout <= 0:
            raise InvalidRequest("keystore call timeout must be positive")
        self.keystore_id = keystore_id
        self.key_ref = key_ref or None
        self.timeout = timeout

    # ---- identity ------------------------------------------------------------------------------
    @property
    def backend_key(self) -> str:
        """What one unresponsive backend is: calls sharing it share MAX_IN_FLIGHT workers."""
        return f"{self.provider}:{self.keystore_id}"

    @property
    def ref(self) -> str:
        return f"l1:{self.keystore_id}/{self._require_key()}"

    def with_key(self, key_ref: str) -> KeystoreConnector:
        """The same keystore connection, bound to another key (connections are cheap to share)."""
        clone = object.__new__(type(self))
        clone.__dict__.update(self.__dict__)
        clone.key_ref = key_ref
        return clone

    def _require_key(self, key_ref: str | None = None) -> str:
        ref = key_ref or self.key_ref
        if not ref:
            raise KeystoreConfigInvalid("no L1 key reference given", fix="Name the key (ARN, alias, label or URL).")
        return ref

    # ---- public template methods ---------------------------------------------------------------
    def test_connection(self, timeout: float | None = None) -> None:
        """Reach the keystore and authenticate; raises a typed error saying what is wrong."""
        self._call("test_connection", self._test_connection, timeout=timeout)

    def describe_key(self, key_ref: str | None = None, timeout: float | None = None) -> KeyInfo:
        ref = self._require_key(key_ref)
        return self._call("describe_key", lambda: self._describe_key(ref), timeout=timeout, key_ref=ref)

    def check_key(self, key_ref: str | None = None, timeout: float | None = None) -> KeyInfo:
        """describe_key, then refuse a key that cannot serve as L1 with the reason in the error."""
        info = self.describe_key(key_ref, timeout)
        if not info.usable:
            self._raise_unusable(info)
        return info

    def list_keys(self, timeout: float | None = None) -> list[KeyInfo]:
        """Keys the credentials can see, where the store can list (AWS KMS, Azure, GCP, PKCS#11)."""
        return self._call("list_keys", self._list_keys, timeout=timeout)

    def wrap(self, plaintext: bytes, context: Context, timeout: float | None = None) -> bytes:
        ref = self._require_key()
        self._check_args(plaintext, context)
        return self._call("wrap", lambda: self._wrap(ref, plaintext, context), timeout=timeout, key_ref=ref)

    def unwrap(self, blob: bytes, context: Context, timeout: float | None = None) -> bytes:
        ref = self._require_key()
        self._check_args(blob, context)
        return self._call("unwrap", lambda: self._unwrap(ref, blob, context), timeout=timeout, key_ref=ref)

    def close(self) -> None:
        """Release sessions and connections (subclasses that hold any)."""

    # ---- what a backend implements -------------------------------------------------------------
    @abstractmethod
    def _test_connection(self) -> None: ...

    @abstractmethod
    def _describe_key(self, key_ref: str) -> KeyInfo: ...

    def _list_keys(self) -> list[KeyInfo]:
        raise KeystoreConfigInvalid(f"{self.provider} keystores cannot list keys", fix="Enter the key reference.")

    @abstractmethod
    def _wrap(self, key_ref: str, plaintext: bytes, context: Context) -> bytes: ...

    @abstractmethod
    def _unwrap(self, key_ref: str, blob: bytes, context: Context) -> bytes: ...

    def _map_error(self, exc: BaseException, operation: str, key_ref: str) -> OpenKCMError | None:
        """Turn a backend exception into a typed error; None means "not recognised"."""
        return None

    def _raise_unusable(self, info: KeyInfo) -> None:
        raise KeystoreKeyUnsuitable(f"key {info.key_ref} cannot be used as an L1 key ({info.state})")

    # ---- internals -----------------------------------------------------------------------------
    @staticmethod
    def _check_args(data: bytes, context: Context) -> None:
        if not isinstance(data, bytes | bytearray) or not data:
            raise InvalidRequest("nothing to wrap or unwrap")
        if len(data) > MAX_WRAP_BYTES:
            raise InvalidRequest(f"at most {MAX_WRAP_BYTES} bytes can be wrapped by an L1 key")
        for name, value in context.items():
            if not isinstance(name, str) or not isinstance(value, str):
                raise InvalidRequest("wrap context keys and values are strings")

    def _call(self, operation: str, fn: Callable[[], T], *, timeout: float | None = None, key_ref: str = "") -> T:
        limit = self.timeout if timeout is None else min(timeout, self.timeout)
        if limit <= 0:
            raise KeystoreTimeout(
                f"no time left for {operation} on the {self.provider} keystore",
                fix="The validation budget ran out; check the keystore's latency and try again.",
            )
        started = time.monotonic()
        gate = _gate(self.backend_key)
        if not gate.acquire(blocking=False):
            raise KeystoreTimeout(
                f"{self.provider} keystore has {MAX_IN_FLIGHT} calls that have not returned; {operation} refused",
                fix="The keystore is not answering; check its health and network path. Calls resume once it does.",
            )
        try:
            future = _POOL.submit(fn)
        except BaseException:
            gate.release()
            raise
        future.add_done_callback(lambda _done: gate.release())  # when the backend returns, not the caller
        outcome = "ok"
        try:
            return future.result(timeout=limit)
        except concurrent.futures.TimeoutError:
            outcome = "timeout"
            future.cancel()
            raise KeystoreTimeout(
                f"{self.provider} keystore did not answer {operation} within {limit:.1f} s"
            ) from None
        except KEYSTORE_ERRORS as exc:
            outcome = exc.code
            raise
        except IntegrityFailure:
            outcome = "integrity_failure"
            raise
        except InvalidRequest as exc:
            outcome = exc.code
            raise
        except Exception as exc:
            mapped = self._map_error(exc, operation, key_ref) or self._map_common(exc, operation)
            outcome = mapped.code
            raise mapped from exc
        finally:
            # One line per call: identifiers and outcome only (never data, context values or secrets).
            log.info(
                "keystore call",
                extra={
                    "keystore_provider": self.provider,
                    "keystore_id": self.keystore_id,
                    "keystore_operation": operation,
                    "keystore_outcome": outcome,
                    "duration_ms": round((time.monotonic() - started) * 1000, 1),
                },
            )

    def _map_common(self, exc: BaseException, operation: str) -> OpenKCMError:
        if isinstance(exc, TimeoutError):
            return KeystoreTimeout(f"{self.provider} keystore timed out during {operation}")
        if isinstance(exc, ConnectionError | OSError):
            return KeystoreUnreachable(f"{self.provider} keystore is unreachable ({type(exc).__name__})")
        # Unknown failure: name its type only — backend messages may echo request data.
        return KeystoreError(f"{self.provider} keystore call {operation} failed ({type(exc).__name__})")


def random_test_value() -> bytes:
    return os.urandom(32)


_LONG_RUN = re.compile(r"[A-Za-z0-9+/=_-]{60,}")


def audit_safe(text: str, limit: int = 480) -> str:
    """Shorten long unbroken runs (a long GCP key name, a key URL) so identifiers never trip the audit
    sink's "looks like key material" guard, and cap the length. Keeps both ends readable."""
    text = _LONG_RUN.sub(lambda m: m.group(0)[:24] + "..." + m.group(0)[-24:], text)
    return text if len(text) <= limit else text[: limit - 3] + "..."
