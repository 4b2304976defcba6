"""Envelope AEAD and the versioned root key (local files and AWS KMS on moto)."""

from __future__ import annotations

import os
import stat

import boto3
import pytest

from openkcm.domain.envelope import binding, open_sealed, seal
from openkcm.domain.rootkey import AwsKmsRootKey, LocalRootKey, RootKeyProvider
from openkcm.errors import IntegrityFailure, InvalidRequest, KeyUnavailable

CTX = {"tenant_id": "tenant-a", "l2_version": "1", "purpose": "openkcm-l2"}


def test_seal_round_trip_and_unique_nonces():
    key = os.urandom(32)
    aad = binding("p", {"tenant": "a", "object": "1"})
    blobs = {seal(key, b"secret", aad) for _ in range(200)}
    assert len({b[1:13] for b in blobs}) == 200  # every envelope got its own nonce
    assert all(open_sealed(key, b, aad) == b"secret" for b in blobs)


@pytest.mark.parametrize(
    "other",
    [{"tenant": "b", "object": "1"}, {"tenant": "a", "object": "2"}, {"tenant": "a", "object": "1", "x": "y"}],
)
def test_sealed_blob_is_bound_to_its_aad(other):
    key = os.urandom(32)
    blob = seal(key, b"secret", binding("p", {"tenant": "a", "object": "1"}))
    with pytest.raises(IntegrityFailure):
        open_sealed(key, blob, binding("p", other))


def test_binding_is_unambiguous():
    assert binding("p", {"a": "b|c"}) != binding("p", {"a|b": "c"})
    assert binding("p", {"a": "1", "b": "2"}) == binding("p", {"b": "2", "a": "1"})


def test_tampered_or_short_blob_fails_opaquely():
    key = os.urandom(32)
    blob = bytearray(seal(key, b"secret", b"aad"))
    blob[-1] ^= 1
    for bad in (bytes(blob), b"", b"\x01" + b"\x00" * 10, b"\x02" + bytes(blob[1:])):
        with pytest.raises(IntegrityFailure):
            open_sealed(key, bad, b"aad")
    with pytest.raises(InvalidRequest):
        seal(b"short", b"x", b"")


def test_local_root_key_versions_and_file_permissions(tmp_path):
    root = LocalRootKey(tmp_path / "keys")
    old_blob = root.wrap(b"l2-material-one", CTX)
    assert RootKeyProvider.blob_version(old_blob) == 1
    assert root.rotate() == 2
    new_blob = root.wrap(b"l2-material-two", CTX)
    assert RootKeyProvider.blob_version(new_blob) == 2
    # old versions still unwrap after rotation, also in a fresh process view of the same directory
    reopened = LocalRootKey(tmp_path / "keys")
    assert reopened.unwrap(old_blob, CTX) == b"l2-material-one"
    assert reopened.unwrap(new_blob, CTX) == b"l2-material-two"
    for path in (tmp_path / "keys").iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    with pytest.raises(IntegrityFailure):
        reopened.unwrap(old_blob, {**CTX, "tenant_id": "tenant-b"})


def test_local_root_key_rotation_is_whole_or_absent_and_never_reuses_a_version(tmp_path, monkeypatch):
    root = LocalRootKey(tmp_path / "keys")
    synced = []
    monkeypatch.setattr("openkcm.domain.rootkey.fsync_dir", lambda path: synced.append(path))
    assert root.rotate() == 2 and synced == [tmp_path / "keys"]  # the new file outlives a machine crash
    assert sorted(p.name for p in (tmp_path / "keys").iterdir()) == ["root-key-v0001.bin", "root-key-v0002.bin"]
    # a crash in the middle of writing a version leaves only a temporary file, which nothing reads
    (tmp_path / "keys" / ".root-key-v0003.999.tmp").write_bytes(b"torn")
    assert LocalRootKey(tmp_path / "keys").current_version == 2
    # another process took version 3 meanwhile: this one does not overwrite it
    other = LocalRootKey(tmp_path / "keys")
    assert other.rotate() == 3
    with pytest.raises(FileExistsError):
        root._keys.pop(3, None)
        monkeypatch.setattr(root, "_load", lambda: None)
        root.rotate()
    assert (tmp_path / "keys" / "root-key-v0003.bin").read_bytes() == other._keys[3]  # still the other's key
    assert not list((tmp_path / "keys").glob(f".root-key-v0003.{os.getpid()}.tmp"))


def test_local_root_key_missing_version_fails_closed(tmp_path):
    root = LocalRootKey(tmp_path / "keys")
    blob = root.wrap(b"material", CTX)
    root.rotate()
    (tmp_path / "keys" / "root-key-v0001.bin").unlink()
    with pytest.raises(KeyUnavailable):
        LocalRootKey(tmp_path / "keys").unwrap(blob, CTX)


def test_aws_kms_root_key_two_versions_with_encryption_context(aws_endpoint):
    kms = boto3.client("kms")
    first = kms.create_key()["KeyMetadata"]["Arn"]
    second = kms.create_key()["KeyMetadata"]["Arn"]
    v1 = AwsKmsRootKey(kms, [first])
    blob1 = v1.wrap(b"material-1", CTX)
    v2 = AwsKmsRootKey(kms, [first, second])
    blob2 = v2.wrap(b"material-2", CTX)
    assert RootKeyProvider.blob_version(blob1) == 1 and RootKeyProvider.blob_version(blob2) == 2
    assert v2.unwrap(blob1, CTX) == b"material-1"
    assert v2.unwrap(blob2, CTX) == b"material-2"
    with pytest.raises(IntegrityFailure):
        v2.unwrap(blob2, {**CTX, "l2_version": "7"})
    with pytest.raises(KeyUnavailable):
        v1.unwrap(blob2, CTX)  # version 2 is not configured in this process
