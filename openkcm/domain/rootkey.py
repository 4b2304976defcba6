"""The internal versioned root key: parent of every platform-managed L2 key.

Versioned so that rotation never strands data: a new version wraps new material, every old version
still unwraps until the re-wrap has moved everything forward. Blob layout:
``b"R" || version (4 bytes, big endian) || backend ciphertext``.

- :class:`LocalRootKey` (embedded default): each version is a 32-byte file ``root-key-v<N>.bin`` with
  0600 permissions in the data directory — the one documented exception to "nothing stored unwrapped"
  (DECISIONS 6).
- :class:`AwsKmsRootKey` (production): each version is a KMS key; kms:Encrypt/Decrypt with an encryption
  context naming tenant and L2 version, so the key policy can condition on it and CloudTrail shows it.
"""

from __future__ import annotations

import os
import re
import threading
from abc import abstractmethod
from pathlib import Path
from typing import Any

from openkcm.domain.envelope import binding, open_sealed, seal
from openkcm.domain.wrapping import Context, WrappingKey
from openkcm.errors import IntegrityFailure, InvalidRequest, KeyUnavailable
from openkcm.files import fsync_dir

_MAGIC = b"R"
_FILE = re.compile(r"^root-key-v(\d{4,})\.bin\Z")


class RootKeyProvider(WrappingKey):
    """Template: version framing and checks here, the backend call in subclasses."""

    @property
    def ref(self) -> str:
        return f"root:v{self.current_version}"

    @property
    @abstractmethod
    def current_version(self) -> int: ...

    @abstractmethod
    def rotate(self) -> int:
        """Create a new current version and return it."""

    @abstractmethod
    def _wrap(self, version: int, plaintext: bytes, context: Context) -> bytes: ...

    @abstractmethod
    def _unwrap(self, version: int, ciphertext: bytes, context: Context) -> bytes: ...

    def wrap(self, plaintext: bytes, context: Context) -> bytes:
        if not plaintext:
            raise InvalidRequest("nothing to wrap")
        version = self.current_version
        return _MAGIC + version.to_bytes(4, "big") + self._wrap(version, plaintext, context)

    def unwrap(self, blob: bytes, context: Context) -> bytes:
        if len(blob) < 6 or blob[:1] != _MAGIC:
            raise IntegrityFailure()
        return self._unwrap(int.from_bytes(blob[1:5], "big"), blob[5:], context)

    @staticmethod
    def blob_version(blob: bytes) -> int:
        return int.from_bytes(blob[1:5], "big")


class LocalRootKey(RootKeyProvider):
    def __init__(self, directory: Path) -> None:
        self._dir = Path(directory)
        self._dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._lock = threading.Lock()
        self._keys: dict[int, bytes] = {}
        self._load()
        if not self._keys:
            self.rotate()

    def _load(self) -> None:
        for path in self._dir.iterdir():
            match = _FILE.match(path.name)
            if match and int(match.group(1)) not in self._keys:
                material = path.read_bytes()
                if len(material) != 32:
                    raise KeyUnavailable(f"root key file {path.name} is damaged")
                self._keys[int(match.group(1))] = material

    @property
    def current_version(self) -> int:
        with self._lock:
            self._load()  # another process may have rotated
            return max(self._keys)

    def rotate(self) -> int:
        with self._lock:
            self._load()
            version = max(self._keys, default=0) + 1
            path = self._dir / f"root-key-v{version:04d}.bin"
            # Written whole to a temporary file, then linked into place: a crash leaves no torn key file
            # (which would fail every root operation), and link() refuses an existing version, so two
            # processes rotating at once cannot both create it. The directory is fsync'd before L2
            # versions are re-wrapped under the new key: the file must outlive a machine crash.
            tmp = self._dir / f".root-key-v{version:04d}.{os.getpid()}.tmp"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            material = os.urandom(32)
            try:
                os.write(fd, material)
                os.fsync(fd)
            finally:
                os.close(fd)
            try:
                os.link(tmp, path)
            finally:
                tmp.unlink(missing_ok=True)
            fsync_dir(self._dir)
            self._keys[version] = material
            return version

    def _key(self, version: int) -> bytes:
        with self._lock:
            if version not in self._keys:
                self._load()
            try:
                return self._keys[version]
            except KeyError:
                raise KeyUnavailable(f"root key version {version} is not available") from None

    def _wrap(self, version: int, plaintext: bytes, context: Context) -> bytes:
        return seal(self._key(version), plaintext, binding("openkcm/root", context))

    def _unwrap(self, version: int, ciphertext: bytes, context: Context) -> bytes:
        return open_sealed(self._key(version), ciphertext, binding("openkcm/root", context))


class AwsKmsRootKey(RootKeyProvider):
    """Versions are KMS keys listed oldest first; the last is current. KMS also rotates each key's
    backing material yearly by itself; our versions exist so an operator can move to a new key."""

    def __init__(self, kms_client: Any, key_ids: list[str]) -> None:
        if not key_ids:
            raise InvalidRequest("OPENKCM_ROOT_KMS_KEY_IDS names no KMS key")
        self._kms = kms_client
        self._key_ids = list(key_ids)

    @property
    def current_version(self) -> int:
        return len(self._key_ids)

    def rotate(self) -> int:
        # A new version is a new KMS key that every process must learn of; that is a deployment
        # change (append its ARN to OPENKCM_ROOT_KMS_KEY_IDS), not something one process can do alone.
        raise InvalidRequest(
            "AWS root key versions come from OPENKCM_ROOT_KMS_KEY_IDS: create a KMS key, append its ARN, "
            "redeploy, then run the rotation to re-wrap platform-managed L2 keys"
        )

    def _key_id(self, version: int) -> str:
        if not 1 <= version <= len(self._key_ids):
            raise KeyUnavailable(f"root key version {version} is not configured")
        return self._key_ids[version - 1]

    def _wrap(self, version: int, plaintext: bytes, context: Context) -> bytes:
        reply = self._kms.encrypt(KeyId=self._key_id(version), Plaintext=plaintext, EncryptionContext=dict(context))
        return reply["CiphertextBlob"]

    def _unwrap(self, version: int, ciphertext: bytes, context: Context) -> bytes:
        from botocore.exceptions import ClientError

        try:
            reply = self._kms.decrypt(
                KeyId=self._key_id(version), CiphertextBlob=ciphertext, EncryptionContext=dict(context)
            )
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in ("InvalidCiphertextException", "IncorrectKeyException"):
                raise IntegrityFailure() from exc
            raise KeyUnavailable(f"root key unavailable: {code}") from exc
        return reply["Plaintext"]
