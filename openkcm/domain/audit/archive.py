"""Retention: links leave DynamoDB only after they were archived, with the chain heads they continue
from and the signed checkpoint that covers them, so verification spans the archive.

A segment is ``<tenant>/segment-<n:06d>.jsonl.gz``: line 1 a header (tenant, segment number, the SHA-256 of
the previous segment file, per writer ``from_seq/from_prev`` and ``to_seq/to_hash``), line 2 the signed
checkpoint that covers every link in it, then one line per link (events, digests, hashes). Segments are
written once (local: O_EXCL then read-only; S3: the CDK stack's Object Lock bucket) and chained by hash.
Only after the segment and its manifest item are stored does ``expire_at`` get set on the links.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
from abc import ABC, abstractmethod
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from openkcm.clock import SYSTEM_CLOCK, Clock
from openkcm.domain.audit.chain import GENESIS, Link, link_sk, query_links
from openkcm.domain.audit.checkpoints import (
    ChainBroken,
    Checkpoint,
    CheckpointSigner,
    fold_heads,
    load_checkpoints,
)
from openkcm.domain.audit.events import event_digest
from openkcm.errors import AlreadyExists
from openkcm.storage import ConditionFailed
from openkcm.storage.audit_models import AuditArchiveModel, AuditLinkModel, bind_audit_models
from openkcm.storage.models import condition_guard

ARCHIVE_PREFIX = "A#"


class ArchiveStore(ABC):
    @abstractmethod
    def put(self, key: str, data: bytes) -> None:
        """Store once; refuse to overwrite."""

    @abstractmethod
    def get(self, key: str) -> bytes: ...

    @abstractmethod
    def list(self, prefix: str) -> list[str]: ...

    @property
    @abstractmethod
    def location(self) -> str: ...


class LocalArchiveStore(ArchiveStore):
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)

    @property
    def location(self) -> str:
        return str(self.root)

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if self.root.resolve() not in path.parents:
            raise ValueError("archive key escapes the archive folder")
        return path

    def put(self, key: str, data: bytes) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            raise AlreadyExists(f"archive segment {key} exists already") from None
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.chmod(path, 0o400)

    def get(self, key: str) -> bytes:
        return self._path(key).read_bytes()

    def list(self, prefix: str) -> list[str]:
        base = self._path(prefix) if prefix else self.root
        folder = base if base.is_dir() else base.parent
        if not folder.exists():
            return []
        keys = [str(p.relative_to(self.root)) for p in folder.rglob("*") if p.is_file()]
        return sorted(k for k in keys if k.startswith(prefix))


class S3ArchiveStore(ArchiveStore):
    """Objects in the CDK stack's Object Lock bucket (retention is the bucket's default, in COMPLIANCE
    mode in production, so not even the account root can shorten it)."""

    def __init__(self, s3_client: Any, bucket: str, prefix: str = "audit/") -> None:
        self._s3, self._bucket, self._prefix = s3_client, bucket, prefix

    @property
    def location(self) -> str:
        return f"s3://{self._bucket}/{self._prefix}"

    def put(self, key: str, data: bytes) -> None:
        """Write once: ``If-None-Match: *`` makes S3 refuse a second write of the key atomically (a check
        then a put was a race, and on the versioned bucket a second put becomes the version readers get
        while Object Lock keeps the first out of sight). The bucket policy refuses puts without it."""
        try:
            self._s3.put_object(
                Bucket=self._bucket,
                Key=self._prefix + key,
                Body=data,
                ContentType="application/gzip",
                ContentMD5=_md5_b64(data),
                IfNoneMatch="*",
            )
        except self._s3.exceptions.ClientError as exc:
            # 412: the key exists; 409: another put of it is under way (S3's conditional-write conflict)
            if exc.response.get("Error", {}).get("Code") in (
                "PreconditionFailed",
                "412",
                "ConditionalRequestConflict",
                "409",
            ):
                raise AlreadyExists(f"archive segment {key} exists already") from None
            raise

    def get(self, key: str) -> bytes:
        return self._s3.get_object(Bucket=self._bucket, Key=self._prefix + key)["Body"].read()

    def list(self, prefix: str) -> list[str]:
        keys: list[str] = []
        for page in self._s3.get_paginator("list_objects_v2").paginate(
            Bucket=self._bucket, Prefix=self._prefix + prefix
        ):
            keys.extend(obj["Key"][len(self._prefix) :] for obj in page.get("Contents", []))
        return sorted(keys)


def _md5_b64(data: bytes) -> str:
    import base64

    return base64.b64encode(hashlib.md5(data, usedforsecurity=False).digest()).decode()


def segment_key(tenant_id: str, number: int) -> str:
    return f"{tenant_id}/segment-{number:06d}.jsonl.gz"


def read_segment(data: bytes) -> tuple[dict[str, Any], Checkpoint | None, list[Link]]:
    lines = gzip.decompress(data).decode("utf-8").splitlines()
    header = json.loads(lines[0])
    checkpoint, links = None, []
    for line in lines[1:]:
        row = json.loads(line)
        if row.get("type") == "checkpoint":
            checkpoint = Checkpoint.from_archive(row)
        elif row.get("type") == "link":
            row.pop("type")
            links.append(Link(**row))
    return header, checkpoint, links


def archived_heads(tenant_id: str) -> tuple[int, str, dict[str, tuple[int, str]]]:
    """(last segment number, SHA-256 of its file, per-writer archived head) from the manifest items."""
    bind_audit_models()
    number, digest, heads = 0, GENESIS, {}
    for item in AuditArchiveModel.query(tenant_id, AuditArchiveModel.sk.startswith(ARCHIVE_PREFIX)):
        number, digest = int(item.sk[len(ARCHIVE_PREFIX) :]), item.sha256
        for writer, span in json.loads(item.writers_json).items():
            heads[writer] = (int(span["to_seq"]), span["to_hash"])
    return number, digest, heads


def archive_tenant(
    tenant_id: str,
    store: ArchiveStore,
    signer: CheckpointSigner,
    *,
    before: datetime,
    clock: Clock = SYSTEM_CLOCK,
    expire_after: timedelta = timedelta(0),
) -> dict[str, Any]:
    """Archive every checkpointed link of the tenant whose events all precede ``before``; then let
    DynamoDB expire them (``expire_at`` = now + ``expire_after``). Idempotent: a second run with nothing
    new returns ``{"archived_links": 0}``."""
    checkpoints = load_checkpoints(tenant_id)
    if not checkpoints:
        return {"tenant_id": tenant_id, "archived_links": 0, "reason": "no checkpoint yet"}
    covering = checkpoints[-1]
    if not covering.signature_valid(signer):
        raise ChainBroken("the latest audit checkpoint does not verify; nothing archived")
    confirmed = fold_heads(checkpoints)
    number, prev_digest, done = archived_heads(tenant_id)
    cutoff = before.isoformat(timespec="microseconds")
    spans: dict[str, dict[str, Any]] = {}
    links: list[Link] = []
    for writer, (head_seq, _) in sorted(confirmed.items()):
        seq, prev = done.get(writer, (0, GENESIS))
        first_seq, first_prev = seq + 1, prev
        for item in query_links(tenant_id, writer, after_seq=seq):
            link = Link.from_item(item)
            if link.seq > head_seq or link.seq != seq + 1 or item.last_time >= cutoff:
                break
            if (
                link.prev_hash != prev
                or [event_digest(e) for e in link.events] != link.digests
                or Link.build(tenant_id, writer, link.seq, prev, link.events).hash != link.hash
            ):
                raise ChainBroken(
                    f"audit chain of writer {writer} does not verify at seq {link.seq}; not archived"
                )
            links.append(link)
            seq, prev = link.seq, link.hash
        if seq >= first_seq:
            spans[writer] = {"from_seq": first_seq, "from_prev": first_prev, "to_seq": seq, "to_hash": prev}
    if not links:
        return {"tenant_id": tenant_id, "archived_links": 0}
    number += 1
    now = clock.now()
    header = {
        "type": "header",
        "v": 1,
        "tenant_id": tenant_id,
        "segment": number,
        "prev_segment": prev_digest,
        "created": now.isoformat(timespec="microseconds"),
        "writers": spans,
        "checkpoint_seq": covering.seq,
    }
    lines = [json.dumps(header, sort_keys=True), json.dumps(covering.to_archive(), sort_keys=True)]
    lines += [json.dumps(link.to_archive(), sort_keys=True, ensure_ascii=False) for link in links]
    data = gzip.compress(("\n".join(lines) + "\n").encode("utf-8"), mtime=0)
    key = segment_key(tenant_id, number)
    try:
        store.put(key, data)
    except AlreadyExists:
        # A run that crashed after writing the segment but before its manifest: adopt what it wrote.
        data = store.get(key)
        header, _, links = read_segment(data)
        if header.get("prev_segment") != prev_digest:
            raise
        spans = header["writers"]
    digest = hashlib.sha256(data).hexdigest()
    events = sum(len(link.events) for link in links)
    manifest = AuditArchiveModel(
        tenant_id,
        f"{ARCHIVE_PREFIX}{number:06d}",
        object_key=key,
        sha256=digest,
        writers_json=json.dumps(spans, sort_keys=True),
        links=len(links),
        events=events,
        created=header["created"],
    )
    try:
        with condition_guard():
            manifest.save(condition=AuditArchiveModel.sk.does_not_exist())
    except ConditionFailed:
        raise AlreadyExists("another archiver wrote this segment number first") from None
    expire = now + expire_after
    for link in links:  # only now may DynamoDB forget them
        try:
            with condition_guard():
                AuditLinkModel(tenant_id, link_sk(link.writer, link.seq)).update(
                    actions=[AuditLinkModel.expire_at.set(expire)], condition=AuditLinkModel.sk.exists()
                )
        except ConditionFailed:
            pass  # expired already
    return {
        "tenant_id": tenant_id,
        "archived_links": len(links),
        "archived_events": events,
        "segment": number,
        "location": f"{store.location}/{key}" if not store.location.endswith("/") else store.location + key,
        "sha256": digest,
    }
