"""Signed checkpoints: per tenant, a numbered chain of statements "writer W's chain had head (seq, hash)",
each signed with an asymmetric key the table's writers cannot use.

A checkpoint body lists only the writers whose head moved since the previous checkpoint (a delta), so
its size follows activity, not history; ``prev`` is the SHA-256 of the previous body, so checkpoints
form their own chain. The signature is ECDSA P-256 with SHA-256 over the 32-byte SHA-256 of the
canonical body (the same bytes for both signers, so a local key and ``kms:Sign`` with
``MessageType=RAW`` are interchangeable).

- :class:`LocalCheckpointSigner` (embedded default): a P-256 key, PEM, 0600, in ``<data_dir>/audit``
  (DECISIONS 6), its public half beside it.
- :class:`KmsCheckpointSigner` (AWS): a KMS ``ECC_NIST_P256`` / ``SIGN_VERIFY`` key; the signing role
  needs ``kms:Sign``, the verifying role ``kms:Verify`` only.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from openkcm.clock import SYSTEM_CLOCK, Clock
from openkcm.domain.audit.chain import (
    GENESIS,
    frame_problem,
    link_hash,
    load_writer_keys,
    mac_valid,
    query_links,
    read_checked_link,
    writer_key_context,
)
from openkcm.domain.audit.events import canonical, event_digest
from openkcm.domain.wrapping import WrappingKey
from openkcm.errors import IntegrityFailure, KeyUnavailable
from openkcm.storage import ConditionFailed
from openkcm.storage.audit_models import AuditCheckpointModel, bind_audit_models
from openkcm.storage.models import condition_guard

CHECKPOINT_PREFIX = "C#"
ALGORITHM = "ECDSA_P256_SHA256"


class CheckpointSigner(ABC):
    algorithm = ALGORITHM

    @property
    @abstractmethod
    def key_id(self) -> str: ...

    @abstractmethod
    def sign(self, digest: bytes) -> bytes: ...

    @abstractmethod
    def verify(self, digest: bytes, signature: bytes, key_id: str) -> bool: ...


class LocalCheckpointSigner(CheckpointSigner):
    KEY_FILE, PUBLIC_FILE = "checkpoint-signing.key", "checkpoint-signing.pub"

    def __init__(self, directory: Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        key_path = directory / self.KEY_FILE
        if not key_path.exists():
            key = ec.generate_private_key(ec.SECP256R1())
            pem = key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
            try:  # O_EXCL: two processes starting at once cannot both create a key
                fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                pass
            else:
                try:
                    os.write(fd, pem)
                    os.fsync(fd)
                finally:
                    os.close(fd)
                public = key.public_key().public_bytes(
                    serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
                )
                (directory / self.PUBLIC_FILE).write_bytes(public)
        loaded = serialization.load_pem_private_key(key_path.read_bytes(), None)
        if not isinstance(loaded, ec.EllipticCurvePrivateKey):
            raise KeyUnavailable("the audit checkpoint key is not an EC key")
        self._key = loaded
        der = loaded.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        self._key_id = "local:" + hashlib.sha256(der).hexdigest()[:16]

    @property
    def key_id(self) -> str:
        return self._key_id

    def sign(self, digest: bytes) -> bytes:
        return self._key.sign(digest, ec.ECDSA(hashes.SHA256()))

    def verify(self, digest: bytes, signature: bytes, key_id: str) -> bool:
        if key_id != self._key_id:
            return False
        try:
            self._key.public_key().verify(signature, digest, ec.ECDSA(hashes.SHA256()))
        except InvalidSignature:
            return False
        return True


class KmsCheckpointSigner(CheckpointSigner):
    def __init__(self, kms_client: Any, key_id: str) -> None:
        if not key_id:
            raise KeyUnavailable("no KMS key configured for audit checkpoints")
        self._kms = kms_client
        self._key_id = key_id
        self._public: dict[str, ec.EllipticCurvePublicKey] = {}

    @property
    def key_id(self) -> str:
        return self._key_id

    def sign(self, digest: bytes) -> bytes:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            reply = self._kms.sign(
                KeyId=self._key_id, Message=digest, MessageType="RAW", SigningAlgorithm="ECDSA_SHA_256"
            )
        except (ClientError, BotoCoreError) as exc:
            raise KeyUnavailable("the audit checkpoint key cannot sign right now") from exc
        return reply["Signature"]

    def _public_key(self, key_id: str) -> ec.EllipticCurvePublicKey | None:
        """kms:GetPublicKey once per key: verifying a year of checkpoints then costs no KMS calls."""
        if key_id not in self._public:
            try:
                der = self._kms.get_public_key(KeyId=key_id)["PublicKey"]
                key = serialization.load_der_public_key(der)
            except Exception:  # noqa: BLE001
                return None
            if not isinstance(key, ec.EllipticCurvePublicKey):
                return None
            self._public[key_id] = key
        return self._public[key_id]

    def verify(self, digest: bytes, signature: bytes, key_id: str) -> bool:
        from botocore.exceptions import ClientError

        public = self._public_key(key_id)
        if public is not None:
            try:
                public.verify(signature, digest, ec.ECDSA(hashes.SHA256()))
            except InvalidSignature:
                return False
            return True
        try:
            reply = self._kms.verify(
                KeyId=key_id,
                Message=digest,
                MessageType="RAW",
                Signature=signature,
                SigningAlgorithm="ECDSA_SHA_256",
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in (
                "KMSInvalidSignatureException",
                "NotFoundException",
                "ValidationException",
            ):
                return False
            raise KeyUnavailable("the audit checkpoint key cannot verify right now") from exc
        return bool(reply.get("SignatureValid"))


@dataclass
class Checkpoint:
    tenant_id: str
    seq: int
    body: dict[str, Any]
    signature: bytes
    key_id: str
    sk: str = ""

    @property
    def digest(self) -> bytes:
        return hashlib.sha256(canonical(self.body)).digest()

    @property
    def heads(self) -> dict[str, tuple[int, str]]:
        return {w: (int(h[0]), str(h[1])) for w, h in self.body.get("heads", {}).items()}

    def signature_valid(self, signer: CheckpointSigner) -> bool:
        return signer.verify(self.digest, self.signature, self.key_id)

    def to_archive(self) -> dict[str, Any]:
        return {
            "type": "checkpoint",
            "body": self.body,
            "signature": base64.b64encode(self.signature).decode(),
            "key_id": self.key_id,
        }

    @classmethod
    def from_archive(cls, data: dict[str, Any]) -> Checkpoint:
        body = data["body"]
        return cls(
            body["tenant_id"], int(body["seq"]), body, base64.b64decode(data["signature"]), data["key_id"]
        )


def checkpoint_sk(seq: int) -> str:
    return f"{CHECKPOINT_PREFIX}{seq:012d}"


def load_checkpoints(tenant_id: str) -> list[Checkpoint]:
    """Every stored checkpoint of a tenant, in key order. Unparseable items come back with an empty body."""
    bind_audit_models()
    found = []
    for item in AuditCheckpointModel.query(tenant_id, AuditCheckpointModel.sk.startswith(CHECKPOINT_PREFIX)):
        try:
            body = json.loads(item.body_json)
            signature = base64.b64decode(item.signature, validate=True)
            seq = int(body["seq"])
        except (ValueError, KeyError, TypeError):
            body, signature, seq = {}, b"", -1
        found.append(Checkpoint(tenant_id, seq, body, signature, item.key_id, item.sk))
    return found


def latest_checkpoint(tenant_id: str) -> Checkpoint | None:
    bind_audit_models()
    for item in AuditCheckpointModel.query(
        tenant_id, AuditCheckpointModel.sk.startswith(CHECKPOINT_PREFIX), scan_index_forward=False, limit=1
    ):
        try:
            body = json.loads(item.body_json)
            return Checkpoint(
                tenant_id, int(body["seq"]), body, base64.b64decode(item.signature), item.key_id, item.sk
            )
        except (ValueError, KeyError, TypeError):
            raise ChainBroken(
                "the latest audit checkpoint is unreadable; run `openkcm audit verify`"
            ) from None
    return None


def fold_heads(checkpoints: list[Checkpoint]) -> dict[str, tuple[int, str]]:
    heads: dict[str, tuple[int, str]] = {}
    for checkpoint in checkpoints:
        heads.update(checkpoint.heads)
    return heads


class ChainBroken(IntegrityFailure):
    """The audit chain does not verify; no checkpoint was signed over it."""

    code = "audit_chain_broken"


HEADS_SK = "H#HEADS"  # unsigned cache: the heads folded through checkpoint ``seq``


def _cached_heads(tenant_id: str, previous: Checkpoint | None) -> dict[str, tuple[int, str]] | None:
    """The folded heads as of ``previous``, if the cache item is current. It is only an optimisation:
    a tampered cache makes the checkpointer refuse (the chain no longer follows it) and never changes
    what :func:`openkcm.domain.audit.verify` checks, which folds the signed checkpoints itself."""
    if previous is None:
        return {}
    try:
        item = AuditCheckpointModel.get(tenant_id, HEADS_SK)
        body = json.loads(item.body_json)
    except (AuditCheckpointModel.DoesNotExist, ValueError):
        return None
    if body.get("seq") != previous.seq or body.get("digest") != previous.digest.hex():
        return None
    return {w: (int(h[0]), str(h[1])) for w, h in body.get("heads", {}).items()}


def _save_heads(tenant_id: str, checkpoint: Checkpoint, heads: dict[str, tuple[int, str]]) -> None:
    body = json.dumps(
        {
            "seq": checkpoint.seq,
            "digest": checkpoint.digest.hex(),
            "heads": {w: list(h) for w, h in heads.items()},
        },
        sort_keys=True,
    )
    if len(body) > 350_000:
        return  # too many writers for one item: the next checkpointer folds the checkpoints instead
    AuditCheckpointModel(
        tenant_id, HEADS_SK, body_json=body, signature="", key_id="", created=checkpoint.body["time"]
    ).save()


_UNWRAPPED: dict[tuple[str, bytes], bytes] = {}  # (writer, wrapped) -> writer key; bounded below


def writer_key(
    tenant_id: str, writer: str, authenticator: WrappingKey, items: dict[str, Any] | None = None
) -> bytes:
    """The writer's link-MAC key from its ``K#`` record (unwrapped once per process)."""
    item = (items if items is not None else load_writer_keys(tenant_id)).get(writer)
    if item is None:
        raise ChainBroken(f"audit writer {writer} has no key record; its links are not trusted")
    wrapped = bytes(item.wrapped)
    cached = _UNWRAPPED.get((writer, wrapped))
    if cached is None:
        try:
            cached = authenticator.unwrap(wrapped, writer_key_context(writer))
        except IntegrityFailure:
            raise ChainBroken(f"the key record of audit writer {writer} is forged") from None
        if len(_UNWRAPPED) > 4096:
            _UNWRAPPED.clear()
        _UNWRAPPED[(writer, wrapped)] = cached
    return cached


def make_checkpoint(
    tenant_id: str,
    signer: CheckpointSigner,
    clock: Clock = SYSTEM_CLOCK,
    *,
    force: bool = False,
    authenticator: WrappingKey | None = None,
) -> Checkpoint | None:
    """Sign the current heads of every writer chain of the tenant, after checking every link added since
    the previous checkpoint (digests, hash, continuity and, with ``authenticator``, the writer's MAC).
    Returns None when nothing moved (unless ``force``) or when a concurrent checkpointer won the race."""
    previous = latest_checkpoint(tenant_id)
    if previous is not None and not previous.signature_valid(signer):
        raise ChainBroken("the latest audit checkpoint does not verify; run `openkcm audit verify`")
    heads = _cached_heads(tenant_id, previous)
    if heads is None:
        heads = fold_heads(load_checkpoints(tenant_id))
    delta: dict[str, list[Any]] = {}
    new_links = new_events = 0
    writers = {
        item.writer for item in query_links(tenant_id, None, attributes=["sk", "writer"]) if item.writer
    }
    key_items = load_writer_keys(tenant_id) if authenticator is not None else {}
    for writer in sorted(writers):
        seq, prev = heads.get(writer, (0, GENESIS))
        moved = False
        key: bytes | None = None
        for item in query_links(tenant_id, writer, after_seq=seq):
            link, facts = read_checked_link(item)
            if link.seq != seq + 1:
                break  # a gap: that link is still being written (or lost; verification will say)
            misframed = frame_problem(
                item.first_time or "", item.last_time or "", list(item.kinds or []), facts
            )
            if misframed:
                raise ChainBroken(f"audit link {link.seq} of writer {writer}: {misframed}")
            if (
                link.prev_hash != prev
                or (link.events is not None and [event_digest(e) for e in link.events] != link.digests)
                or link_hash(prev, tenant_id, writer, link.seq, link.digests) != link.hash
            ):
                raise ChainBroken(f"audit chain of writer {writer} does not verify at seq {link.seq}")
            if authenticator is not None:
                key = key or writer_key(tenant_id, writer, authenticator, key_items)
                if not mac_valid(key, link):
                    raise ChainBroken(
                        f"audit link {link.seq} of writer {writer} does not carry the writer's MAC"
                    )
            seq, prev, moved = link.seq, link.hash, True
            new_links += 1
            new_events += link.count
        if moved:
            delta[writer] = [seq, prev]
    if not delta and not force:
        return None
    body = {
        "v": 1,
        "tenant_id": tenant_id,
        "seq": (previous.seq if previous else 0) + 1,
        "time": clock.now().isoformat(timespec="microseconds"),
        "prev": previous.digest.hex() if previous else GENESIS,
        "heads": delta,
        "links": int((previous.body.get("links", 0) if previous else 0) + new_links),
        "events": int((previous.body.get("events", 0) if previous else 0) + new_events),
        "key_id": signer.key_id,
        "alg": signer.algorithm,
    }
    checkpoint = Checkpoint(tenant_id, body["seq"], body, b"", signer.key_id)
    checkpoint.signature = signer.sign(checkpoint.digest)
    item = AuditCheckpointModel(
        tenant_id,
        checkpoint_sk(checkpoint.seq),
        body_json=json.dumps(body, sort_keys=True),
        signature=base64.b64encode(checkpoint.signature).decode(),
        key_id=signer.key_id,
        created=body["time"],
    )
    try:
        with condition_guard():
            item.save(condition=AuditCheckpointModel.sk.does_not_exist())
    except ConditionFailed:
        return None
    checkpoint.sk = item.sk
    _save_heads(tenant_id, checkpoint, {**heads, **{w: (int(h[0]), str(h[1])) for w, h in delta.items()}})
    return checkpoint
